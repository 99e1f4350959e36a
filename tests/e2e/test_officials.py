"""Officials end to end: joining and choosing subscriptions with buttons, four days of
summaries and bulletins with the clock moved forward, a missed run after downtime, a
blocked official, and two processes on one PostgreSQL database."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.app import Runtime
from bot.config import Config
from storage.models import OutboxMessage, Staff
from storage.models_officials import Bulletin, ScheduledRun, Subscription
from tests.e2e.conftest import Harness, e2e_config, plain
from tests.fakebot import FakeBotAPI
from tests.fakebot.server import button
from tests.officials_data import local, verified_case

OFFICIAL_ZH = 6_600_001
OFFICIAL_EN = 6_600_002
OFFICE = 6_600_100
STRANGER = 6_600_900

FAST_SCHEDULE = {"tick_seconds": 0.1, "catch_up_hours": 1.0}


def officials_config(database_url: str, server: FakeBotAPI, **officials: Any) -> Config:
    return e2e_config(database_url, server, scheduler=FAST_SCHEDULE,
                      officials={"progress_seconds": 0.3, **officials})


def travel_to(h: Harness, when: datetime) -> None:
    """Move the harness's clock so that it reads `when` now."""
    h.clock.offset += when - h.clock.now()


def all_sent(h: Harness) -> bool:
    with h.deps.sessions.begin() as session:
        return not session.scalar(select(func.count()).select_from(OutboxMessage)
                                  .where(OutboxMessage.status.in_(("pending", "sending"))))


async def settled(h: Harness, timeout: float = 15.0) -> None:
    """The runs due now have run and their messages are out."""
    runs = _runs(h)
    await h.server.wait_for(lambda: _runs(h) >= runs and all_sent(h), timeout=timeout)
    await asyncio.sleep(0.3)  # a tick or two: nothing more becomes due
    await h.server.wait_for(lambda: all_sent(h), timeout=timeout)


def _runs(h: Harness) -> int:
    with h.deps.sessions.begin() as session:
        return int(session.scalar(select(func.count()).select_from(ScheduledRun)) or 0)


async def join_official(h: Harness, user: dict[str, Any]) -> None:
    code = h.invite(role="official")
    en = user.get("language_code") == "en"  # joins in their app's language
    await h.say(user, f"/join {code}", expect="registered as an official" if en else "领导干部")
    await h.expect_button(user["id"], "Daily summary" if en else "每日汇总")


async def test_officials_join_choose_subscriptions_and_language(database_url: str, server: FakeBotAPI) -> None:
    h = Harness(server, officials_config(database_url, server))
    await h.start()
    try:
        srv = server
        zh = srv.user(OFFICIAL_ZH, "Official Zh")
        await join_official(h, zh)
        menu = await h.expect_button(OFFICIAL_ZH, "每日汇总")
        assert [b["text"] for row in menu["reply_markup"]["inline_keyboard"] for b in row][:3] == [
            "✅ 每日汇总", "✅ 通报", "⬜ 逾期升级摘要"]
        srv.press(zh, menu, "逾期升级摘要")  # on
        await srv.wait_for(lambda: any("✅ 接收" in (e.get("text") or "") and "逾期升级摘要：✅" in e["text"]
                                       for e in srv.edits))
        srv.press(zh, srv.message(OFFICIAL_ZH, menu["message_id"]), "每日汇总")  # off
        await srv.wait_for(lambda: any("每日汇总：⬜" in (e.get("text") or "") for e in srv.edits))
        srv.press(zh, srv.message(OFFICIAL_ZH, menu["message_id"]), "English")
        await srv.wait_for(lambda: any("Language: English" in (e.get("text") or "") for e in srv.edits))
        with h.deps.sessions.begin() as session:
            staff = session.scalar(select(Staff).where(Staff.telegram_user_id == OFFICIAL_ZH))
            sub = session.get(Subscription, staff.id)
            assert (staff.role, staff.language) == ("official", "en")
            assert (sub.daily_summary, sub.bulletins, sub.escalations) == (False, True, True)

        await h.say(zh, "/unsubscribe", expect="Unsubscribed from everything")
        await h.say(zh, "/settings", expect="Your subscriptions")
        last = srv.sent_to(OFFICIAL_ZH)[-1]
        assert "Daily summary: ⬜ off" in plain(last) and "Bulletins: ⬜ off" in plain(last)
        await h.say(zh, "/bulletins", expect="No bulletin has been published yet")

        # A forged button and a stranger are refused.
        before = len(srv.callback_answers)
        srv.push_callback(zh, last, "of:t:bulletins~AAAAAAAAAA")
        assert "not valid" in (await h.alert_for(before))["text"]  # in the official's language
        stranger = srv.user(STRANGER, "Stranger")
        await h.say(stranger, "/settings", expect="领导干部使用")
        before = len(srv.callback_answers)
        srv.push_callback(stranger, last, button(last, "Bulletins")["callback_data"])
        assert "领导干部" in (await h.alert_for(before))["text"]
        with h.deps.sessions.begin() as session:
            assert session.get(Subscription, staff.id).bulletins is False
    finally:
        await h.stop()


def _messages(server: FakeBotAPI, chat: int, contains: str) -> list[dict[str, Any]]:
    return [r for r in server.sent_to(chat) if contains in plain(r)]


async def test_four_days_bring_four_summaries_and_bulletins_1_and_2_to_each_subscriber(
    database_url: str, server: FakeBotAPI
) -> None:
    h = Harness(server, officials_config(database_url, server))
    travel_to(h, local(2026, 12, 1, 8))  # a bulletin day (every 2 days from 2026-11-01)
    await h.start()
    srv = server
    try:
        zh, en = srv.user(OFFICIAL_ZH, "Zh"), srv.user(OFFICIAL_EN, "En", language_code="en")
        office = srv.user(OFFICE, "Office")
        await join_official(h, zh)
        await join_official(h, en)
        # an official whose Telegram app is in English joins in English
        assert "Language: English" in plain(await h.expect_button(OFFICIAL_EN, "Daily summary"))
        h.add_staff(office, "office", None)
        with h.deps.sessions.begin() as session:
            office_id = session.scalar(select(Staff.id).where(Staff.telegram_user_id == OFFICE))
            verified_case(session, h.deps, office_id, at=local(2026, 11, 30, 10), name="张某某", post="科长")

        for d in range(4):
            if d in (0, 2):  # bulletin days: the draft goes to the office, which publishes it
                if d == 2:
                    with h.deps.sessions.begin() as session:
                        verified_case(session, h.deps, office_id, at=local(2026, 12, 2, 15), name="李某某",
                                      post="副所长", unit="dingchang", category="absence", team=1)
                travel_to(h, local(2026, 12, 1 + d, 9, 1))
                draft = await h.expect(OFFICE, f"第{d // 2 + 1}期")
                assert "草稿" in plain(draft)
                srv.press(office, draft, "发布")
                await h.expect(OFFICIAL_ZH, f"第{d // 2 + 1}期")
                await settled(h)
            travel_to(h, local(2026, 12, 1 + d, 18, 1))
            await h.expect(OFFICIAL_ZH, f"每日汇总 2026-12-0{1 + d}")
            await settled(h)

        for chat, word in ((OFFICIAL_ZH, "每日汇总 "), (OFFICIAL_EN, "Daily summary ")):
            summaries = Counter(plain(r).split(word)[1][:10] for r in _messages(srv, chat, word))
            assert summaries == Counter({"2026-12-01": 1, "2026-12-02": 1, "2026-12-03": 1, "2026-12-04": 1})
            assert len([r for r in srv.sent_to(chat) if r["method"] == "sendPhoto"]) == 4
        for chat, (one, two) in ((OFFICIAL_ZH, ("第1期", "第2期")), (OFFICIAL_EN, ("Bulletin No. 1\n", "Bulletin No. 2\n"))):
            texts = [r for r in srv.sent_to(chat) if r["method"] == "sendMessage" and (one in plain(r) or two in plain(r))]
            assert len(texts) == 2 and all(r["protect_content"] for r in texts)
            assert one in plain(texts[0]) and two in plain(texts[1])
            docs = [r for r in srv.sent_to(chat) if r["method"] == "sendDocument"]
            assert len(docs) == 2 and all(r["protect_content"] for r in docs)
        assert "张某某" in plain(_messages(srv, OFFICIAL_ZH, "第1期")[0])
        second = _messages(srv, OFFICIAL_EN, "Bulletin No. 2")[0]
        assert "李某某" in plain(second) and "张某某" not in plain(second)
        with h.deps.sessions.begin() as session:
            assert session.scalars(select(Bulletin.number).order_by(Bulletin.number)).all() == [1, 2]
        # The office saw the progress of each broadcast in one edited message.
        await srv.wait_for(lambda: any("已送达 2 / 2，失败 0（完成）" in (e.get("text") or "") for e in srv.edits))
        # /bulletins lists both and opens one again.
        await h.say(en, "/bulletins", expect="Past bulletins")
        listing = srv.sent_to(OFFICIAL_EN)[-1]
        srv.press(en, listing, "Bulletin No. 1")
        await h.expect(OFFICIAL_EN, "Bulletin No. 1\n")
        await srv.wait_for(lambda: len([r for r in srv.sent_to(OFFICIAL_EN) if r["method"] == "sendDocument"]) == 3)
    finally:
        await h.stop()


async def test_a_run_missed_during_downtime_goes_out_once(database_url: str, server: FakeBotAPI) -> None:
    h = Harness(server, officials_config(database_url, server))
    travel_to(h, local(2026, 12, 1, 17))
    await h.start()
    srv = server
    try:
        zh = srv.user(OFFICIAL_ZH, "Zh")
        await join_official(h, zh)
        await h.stop()  # down over 18:00
        travel_to(h, local(2026, 12, 1, 18, 40))
        await h.start()
        await h.expect(OFFICIAL_ZH, "每日汇总 2026-12-01")
        await settled(h)
        await h.restart()
        await asyncio.sleep(0.5)
        await settled(h)
        assert len(_messages(srv, OFFICIAL_ZH, "每日汇总 2026-12-01")) == 1
    finally:
        await h.stop()


async def test_an_official_who_blocked_the_bot_is_marked_inactive(database_url: str, server: FakeBotAPI) -> None:
    h = Harness(server, officials_config(database_url, server))
    travel_to(h, local(2026, 12, 1, 17))
    await h.start()
    srv = server
    try:
        zh, en = srv.user(OFFICIAL_ZH, "Zh"), srv.user(OFFICIAL_EN, "En", language_code="en")
        await join_official(h, zh)
        await join_official(h, en)
        h.add_staff(srv.user(OFFICE, "Office"), "office", None)
        srv.block_chat(OFFICIAL_EN)
        travel_to(h, local(2026, 12, 1, 18, 1))
        await h.expect(OFFICIAL_ZH, "每日汇总 2026-12-01")
        await settled(h)
        await srv.wait_for(lambda: any("已送达 1 / 2，失败 1（完成）" in (e.get("text") or "") for e in srv.edits))
        with h.deps.sessions.begin() as session:
            assert session.scalar(select(Staff.active).where(Staff.telegram_user_id == OFFICIAL_EN)) is False
        forbidden = [c for c in srv.calls if c["status"] == 403]
        assert len(forbidden) == 1  # not retried
        travel_to(h, local(2026, 12, 2, 18, 1))
        await h.expect(OFFICIAL_ZH, "每日汇总 2026-12-02")
        await settled(h)
        assert len([c for c in srv.calls if c["status"] == 403]) == 1  # nothing queued for the blocked chat
    finally:
        await h.stop()


async def test_two_processes_on_postgresql_send_each_summary_once(database_url: str, server: FakeBotAPI) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite is single-process by design; two processes need PostgreSQL")
    config = officials_config(database_url, server)
    first = Harness(server, config)
    travel_to(first, local(2026, 12, 1, 17))
    await first.start()
    second = Runtime(config, clock=first.clock)  # a second process on the same database
    second.poller.stop()  # one poller per token (Telegram refuses two); both schedule and send
    await second.start()
    srv = server
    try:
        users = [srv.user(OFFICIAL_ZH + i, f"O{i}") for i in range(5)]
        for u in users:
            await join_official(first, u)
        for day in (1, 2):
            travel_to(first, local(2026, 12, day, 18, 1))
            for u in users:
                await first.expect(u["id"], f"每日汇总 2026-12-0{day}")
            await settled(first)
            await asyncio.sleep(0.5)  # both processes tick several times
        for u in users:
            assert len(_messages(srv, u["id"], "每日汇总 2026-12-0")) == 2
            assert len([r for r in srv.sent_to(u["id"]) if r["method"] == "sendPhoto"]) == 2
        with first.deps.sessions.begin() as session:
            assert session.scalar(select(func.count()).select_from(ScheduledRun)
                                  .where(ScheduledRun.job == "summary")) == 2
        assert second.sender.delivered > 0 or first.runtime.sender.delivered > 0  # type: ignore[union-attr]
    finally:
        await second.stop()
        second.engine.dispose()
        await first.stop()

