"""Telegram's limits hold with the real figures: 1 msg/s a private chat, 20/min a group,
long texts split to 4096, RetryAfter obeyed."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from telegram.ext import ExtBot
from telegram.request import HTTPXRequest

from bot.ratelimit import PacingRateLimiter

from storage.models import OutboxMessage
from tests.e2e.conftest import Harness, e2e_config, plain
from tests.fakebot import FakeBotAPI

CITIZEN = 5_580_001
LEAD = 7_400_001

REAL = {"global_per_second": 30.0, "per_chat_per_second": 1.0, "group_per_minute": 20.0}


async def test_real_limits_are_respected_for_cards_evidence_and_replies(database_url: str) -> None:
    async with FakeBotAPI("123456:TEST-TOKEN", global_per_second=30, per_chat_per_second=1,
                          group_per_minute=20) as srv:
        # The citizen's flow runs with fast limits; then tipline restarts with the real ones.
        fast = Harness(srv, e2e_config(database_url, srv))
        srv.per_chat_per_second = None
        await fast.start()
        citizen = srv.user(CITIZEN, "C")
        await fast.report(citizen, evidence=3)
        await fast.stop()

        srv.per_chat_per_second = 1
        srv.reset_limits()
        real = Harness(srv, e2e_config(database_url, srv, telegram=REAL))
        await real.start()
        try:
            lead = srv.user(LEAD, "Lead")
            real.add_staff(lead, "lead", 1)  # the waiting card and its 3 photos go out now
            real.deps.nudge_sender()
            for _ in range(3):
                srv.push_message(citizen, "/help")  # three quick replies in one private chat
            await srv.wait_for(lambda: len(srv.sent_to(LEAD)) >= 4, timeout=20)
            await srv.wait_for(lambda: sum("怎么用" in plain(r) for r in srv.sent_to(CITIZEN)) >= 3, timeout=20)
            assert srv.rate_violations == []
            times = [r["time"] for r in srv.sent_to(LEAD)]
            assert all(b - a >= 0.95 for a, b in zip(times, times[1:])), times
        finally:
            await real.stop()


def _unsent(h: Harness) -> int:
    with h.deps.sessions.begin() as session:
        return int(session.scalar(select(func.count()).select_from(OutboxMessage)
                                  .where(OutboxMessage.status != "sent")) or 0)


async def test_a_card_longer_than_one_message_is_split(database_url: str, server: FakeBotAPI) -> None:
    h = Harness(server, e2e_config(database_url, server, intake={"text_max_chars": 4000, "place_max_chars": 1000}))
    await h.start()
    try:
        lead = server.user(LEAD + 1, "Lead")
        h.add_staff(lead, "lead", 1)
        citizen = server.user(CITIZEN + 1, "Long")
        long_text = ("事情经过" * 10 + "\n") * 95  # ~3900 characters
        await h.report(citizen, text=long_text.strip(), place="地" * 900)
        card = await h.expect(LEAD + 1, "举报 #1 · 事情经过")
        assert card is not None
        whole = await h.expect(LEAD + 1, "见上一条消息")
        assert whole["reply_markup"]["inline_keyboard"]  # the button sits on the short card
        await server.wait_for(lambda: _unsent(h) == 0)
        texts = [r for r in server.sent_to(LEAD + 1) if "举报 #1" in plain(r)]
        assert [("事情经过" in plain(t) and "见上一条消息" not in plain(t)) for t in texts] == [True, False]
    finally:
        await h.stop()


async def test_one_chat_at_its_limit_does_not_hold_up_another(database_url: str) -> None:
    async with FakeBotAPI("123456:TEST-TOKEN", global_per_second=30, per_chat_per_second=1,
                          group_per_minute=20) as srv:
        h = Harness(srv, e2e_config(database_url, srv, telegram=REAL))
        await h.start()
        try:
            busy, other = srv.user(CITIZEN + 5, "Busy"), srv.user(CITIZEN + 6, "Other")
            for _ in range(4):
                srv.push_message(busy, "/help")  # four replies: paced one a second
            await srv.wait_for(lambda: srv.sent_to(CITIZEN + 5))
            srv.push_message(other, "/help")
            await srv.wait_for(lambda: srv.sent_to(CITIZEN + 6), timeout=3)
            # the other chat was answered while the busy one still waited for its turn
            assert len(srv.sent_to(CITIZEN + 5)) < 4
            await srv.wait_for(lambda: len(srv.sent_to(CITIZEN + 5)) == 4, timeout=10)
            assert srv.rate_violations == []
            texts = [plain(r) for r in srv.sent_to(CITIZEN + 5)]
            assert all("怎么用" in t for t in texts)
        finally:
            await h.stop()


def _paced_bot(srv: FakeBotAPI, max_retries: int = 3) -> ExtBot[None]:
    return ExtBot("123456:TEST-TOKEN", base_url=srv.base_url, base_file_url=srv.base_file_url,
                  request=HTTPXRequest(connection_pool_size=64),
                  rate_limiter=PacingRateLimiter(global_per_second=30.0, per_chat_per_second=1.0,
                                                 group_per_minute=20.0, max_retries=max_retries))


async def test_arrivals_that_jitter_never_exceed_the_overall_limit() -> None:
    # Each request reaches the fake up to 150 ms late, at random: spacing by departures
    # alone (however evenly) lets 31 of them arrive within one second now and then.
    async with FakeBotAPI("123456:TEST-TOKEN", global_per_second=30, per_chat_per_second=1, group_per_minute=20,
                          arrival_jitter=0.15, seed=3) as srv:
        async with _paced_bot(srv) as bot:
            chats = [CITIZEN + 100 + i for i in range(120)]
            await asyncio.gather(*(bot.send_message(chat, "通报") for chat in chats))
        assert srv.rate_violations == []
        assert sorted(int(r["chat_id"]) for r in srv.sent) == chats


async def test_a_retry_after_pauses_every_chat() -> None:
    async with FakeBotAPI("123456:TEST-TOKEN", global_per_second=30, per_chat_per_second=1,
                          group_per_minute=20) as srv:
        async with _paced_bot(srv) as bot:
            srv.force_retry_after(2, count=1)
            first = asyncio.create_task(bot.send_message(CITIZEN + 300, "one"))
            await srv.wait_for(lambda: srv.count_429 >= 1 or None, timeout=10)
            await asyncio.sleep(0.2)  # the 429 has reached the limiter: a request to another chat now
            await bot.send_message(CITIZEN + 301, "two")
            await first
        (violation,) = srv.rate_violations
        # Both (the refused one retried, the other chat's) waited the 2 s Telegram asked for.
        assert [int(r["chat_id"]) for r in srv.sent] in ([CITIZEN + 300, CITIZEN + 301], [CITIZEN + 301, CITIZEN + 300])
        assert all(r["time"] >= violation["time"] + 2.0 for r in srv.sent), (violation, srv.sent)
