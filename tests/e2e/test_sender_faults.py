"""The outbox sender under faults, against the fake Bot API over real HTTP.

(b) Telegram failing (5xx, a stall past the client's timeouts, a stream of 429s): the
    sender stays up, everything queued arrives once and in order, the log stays quiet.
(c) The database failing under the sender (PostgreSQL connections killed again and
    again; the SQLite file locked for 10 s): nothing lost, nothing twice.
(d) RetryAfter longer than the lease, with a second sender waiting for expired leases:
    one copy of each message.
The crash window: a sender killed between Telegram's answer and the commit sends that row
again after the restart (the only duplicate there is); killed anywhere else, it does not.
ChatMigrated moves the binding and the queue; a permanent refusal fails at once and the
office hears of it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url
from telegram.ext import ExtBot
from telegram.request import HTTPXRequest

from bot.app import build_deps
from bot.clock import SystemClock
from bot.deps import Deps
from bot.ratelimit import PacingRateLimiter
from bot.sender import OutboxSender
from bot.services import broadcast, outbox
from storage.db import make_engine, upgrade
from storage.models import OutboxMessage, Staff, TeamChat
from tests.fakebot import ApiError, FakeBotAPI

from tests.e2e.conftest import TOKEN, e2e_config

# A 3 s lease (requests get 2 s of it), renewed every 0.3 s: a crashed sender's rows come back soon.
SHORT = {"lease": timedelta(seconds=3), "renew_every": 0.3}


def plain_texts(server: FakeBotAPI) -> list[str]:
    return [r.get("text") or r.get("caption") or "" for r in server.sent]


class Rig:
    def __init__(self, server: FakeBotAPI, database_url: str) -> None:
        self.server = server
        self.url = database_url
        self.deps, self.engine = build_deps(e2e_config(database_url, server), SystemClock())
        upgrade(self.engine)
        self.bots: list[ExtBot[Any]] = []

    async def sender(self, deps: Deps | None = None, per_second: float = 1000.0, **kw: Any) -> OutboxSender:
        bot = ExtBot(TOKEN, base_url=self.server.base_url, base_file_url=self.server.base_file_url,
                     request=HTTPXRequest(connection_pool_size=32),
                     rate_limiter=PacingRateLimiter(global_per_second=per_second, per_chat_per_second=100.0,
                                                    group_per_minute=6000.0))
        await bot.initialize()
        self.bots.append(bot)
        return OutboxSender(bot, deps or self.deps, **kw)

    def queue(self, chats: list[int], per_chat: int, prefix: str = "m") -> list[str]:
        texts = []
        with self.deps.sessions.begin() as session:
            for i in range(per_chat):
                for chat in chats:
                    t = f"{prefix}{chat}-{i}"
                    outbox.enqueue(session, self.deps.keyring, self.deps.clock.now(), dedupe_key=t, chat_id=chat,
                                   method="send_message", payload={"text": t}, purpose="card")
                    texts.append(t)
        return texts

    async def delivered(self, texts: list[str], timeout: float = 60.0) -> None:
        want = set(texts)
        await self.server.wait_for(lambda: want <= set(plain_texts(self.server)) or None, timeout,
                                   message=f"{len(want)} messages delivered")

    def check_once_in_order(self, texts: list[str]) -> int:
        got = plain_texts(self.server)
        counts = Counter(got)
        duplicates = sum(n - 1 for t, n in counts.items() if t in set(texts) and n > 1)
        for chat in {t.split("-")[0] for t in texts}:
            mine = [t for t in got if t.split("-")[0] == chat]
            assert mine == sorted(set(mine), key=lambda t: int(t.split("-")[1])), f"order broken in {chat}"
        return duplicates

    def statuses(self) -> Counter[str]:
        with self.deps.sessions.begin() as session:
            return Counter(session.scalars(select(OutboxMessage.status)))

    async def close(self) -> None:
        for bot in self.bots:
            await bot.shutdown()
        self.engine.dispose()


@pytest.fixture
async def rig(server: FakeBotAPI, database_url: str) -> AsyncIterator[Rig]:
    r = Rig(server, database_url)
    try:
        yield r
    finally:
        await r.close()


def loud_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.levelno >= logging.WARNING and not r.name.startswith("tests.")]


async def test_b_telegram_failing_every_way(rig: Rig, server: FakeBotAPI, caplog: pytest.LogCaptureFixture) -> None:
    """5xx, a stall longer than the client's read timeout (6 s against 5 s: a 60 s stall
    behaves the same, each request timing out and tried again), then a stream of 429s."""
    caplog.set_level(logging.WARNING)
    texts = rig.queue([7001 + i for i in range(10)], 3)
    sender = await rig.sender(lease=timedelta(seconds=30))  # production's: a 5 s read timeout
    server.delay = 6.0  # the stall
    sender.start()
    await asyncio.sleep(6.0)
    server.delay = 0.0
    server.fail_next(None, 502, count=10)
    server.force_retry_after(1, count=8)
    stall_over = time.monotonic()
    await rig.delivered(texts, timeout=60)
    recovery = time.monotonic() - stall_over
    assert sender._task is not None and not sender._task.done()  # still up
    await sender.stop()
    duplicates = rig.check_once_in_order(texts)
    lines = loud_lines(caplog)
    print(f"\n(b) queued {len(texts)}, delivered {len(set(texts) & set(plain_texts(server)))}, duplicates "
          f"{duplicates}, recovered {recovery:.1f} s after the stall, 5xx {server.count_5xx}, 429 "
          f"{server.count_429}, log lines {len(lines)}")
    assert duplicates == 0
    assert rig.statuses() == Counter({"sent": len(texts)})
    assert server.count_429 >= 8 and server.count_5xx >= 10
    assert len(lines) <= 8, lines  # a line a minute per kind of trouble, not one per attempt


def pg_only(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL connections are killed; SQLite's file is locked in the next test")


async def test_c_postgresql_connections_killed_again_and_again(server: FakeBotAPI, database_url: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL connections are killed; SQLite's file is locked in the next test")
    caplog.set_level(logging.WARNING)
    app = f"tipline_fault_{secrets.token_hex(4)}"
    url = make_url(database_url).update_query_dict({"application_name": app}).render_as_string(hide_password=False)
    rig = Rig(server, url)
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        texts = rig.queue([7101 + i for i in range(20)], 5)
        sender = await rig.sender(per_second=25.0, **SHORT)
        sender.start()
        kills = 0
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            with admin.connect() as conn:
                kills += len(conn.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :app"),
                    {"app": app}).all())
        killed_at = time.monotonic()
        await rig.delivered(texts, timeout=60)
        recovery = time.monotonic() - killed_at
        assert sender._task is not None and not sender._task.done()
        # A killed connection is the database's trouble, waited out inside the loop (the
        # claim's driver errors included): the loop itself never died and restarted.
        assert sender.restart_backoff.attempts == 0
        await sender.stop()
        duplicates = rig.check_once_in_order(texts)
        print(f"\n(c) PostgreSQL: {kills} connections killed; queued {len(texts)}, delivered "
              f"{len(set(texts) & set(plain_texts(server)))}, duplicates {duplicates}, done {recovery:.1f} s after "
              f"the last kill, log lines {len(loud_lines(caplog))}")
        assert kills >= 5
        assert duplicates == 0
        assert rig.statuses() == Counter({"sent": len(texts)})
    finally:
        await rig.close()
        admin.dispose()


async def test_c_sqlite_file_locked_for_ten_seconds(rig: Rig, server: FakeBotAPI, database_url: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only")
    caplog.set_level(logging.WARNING)
    texts = rig.queue([7201 + i for i in range(20)], 5)
    sender = await rig.sender(per_second=25.0)
    sender.start()
    await asyncio.sleep(0.5)
    path = make_url(database_url).database
    locked = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, timeout=30)
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(10)
        conn.rollback()
        conn.close()

    holder = threading.Thread(target=hold)
    holder.start()
    await asyncio.to_thread(locked.wait)
    lags: list[float] = []
    loop = asyncio.get_running_loop()
    while holder.is_alive():
        t0 = loop.time()
        await asyncio.sleep(0.05)
        lags.append(loop.time() - t0 - 0.05)
    released = time.monotonic()
    await rig.delivered(texts, timeout=60)
    recovery = time.monotonic() - released
    assert sender._task is not None and not sender._task.done()
    await sender.stop()
    duplicates = rig.check_once_in_order(texts)
    print(f"\n(c) SQLite locked 10 s: queued {len(texts)}, delivered {len(set(texts) & set(plain_texts(server)))}, "
          f"duplicates {duplicates}, done {recovery:.1f} s after the lock, event loop max lag "
          f"{1000 * max(lags):.0f} ms meanwhile, log lines {len(loud_lines(caplog))}")
    assert duplicates == 0
    assert rig.statuses() == Counter({"sent": len(texts)})


async def test_d_retry_after_longer_than_the_lease_sends_one_copy(rig: Rig, server: FakeBotAPI) -> None:
    """Sender A is told to wait 4 s (its limiter pauses every request) while two more rows
    wait in its limiter longer than their 3 s lease; sender B takes every lease that runs
    out. Renewed leases (and the check before a request leaves) keep one copy each."""
    texts = rig.queue([7301, 7302, 7303], 1)
    server.force_retry_after(4, count=1)
    a = await rig.sender(per_second=2.0, **SHORT)
    a.start()
    await server.wait_for(lambda: server.count_429 >= 1 or None, 10, message="the 429")
    b = await rig.sender(**SHORT)
    b._released = True  # a second process alongside (PostgreSQL's case): it does not release A's rows at start
    b.start()
    await rig.delivered(texts, timeout=30)
    await asyncio.sleep(1.0)  # a late copy would come now
    await a.stop()
    await b.stop()
    assert Counter(plain_texts(server)) == Counter(texts)
    assert rig.statuses() == Counter({"sent": 3})


@pytest.mark.parametrize(("crash_at", "copies"), [("before_send", 1), ("after_answer", 2), ("after_commit", 1)])
async def test_only_a_crash_between_the_answer_and_the_commit_sends_twice(
        rig: Rig, server: FakeBotAPI, crash_at: str, copies: int) -> None:
    texts = rig.queue([7401], 2)
    first, second = texts
    a = await rig.sender(**SHORT)
    dead = asyncio.Event()

    def die() -> None:
        a.kill()
        dead.set()
        raise asyncio.CancelledError

    if crash_at == "before_send":
        a._guard = lambda item: die  # type: ignore[method-assign]
    elif crash_at == "after_answer":
        attempt = a._attempt

        async def answered_then_die(item: Any) -> Any:
            await attempt(item)
            die()

        a._attempt = answered_then_die  # type: ignore[method-assign]
    else:
        record = a._record

        async def recorded_then_die(item: Any) -> None:
            await record(item)
            die()

        a._record = recorded_then_die  # type: ignore[method-assign]
    a.start()
    await asyncio.wait_for(dead.wait(), 10)
    # The crash happened where it says: before the request left, after Telegram's answer
    # (the row still in flight in the database), or after the commit that records it.
    with rig.deps.sessions.begin() as session:
        status = session.scalar(select(OutboxMessage.status).where(OutboxMessage.dedupe_key == first))
    answered = Counter(plain_texts(server))[first]
    assert (status, answered) == {"before_send": ("sending", 0), "after_answer": ("sending", 1),
                                  "after_commit": ("sent", 1)}[crash_at]
    rig.engine.dispose()
    # The process is gone; a new one starts (on PostgreSQL it waits for the 3 s lease).
    deps, engine = build_deps(rig.deps.config, SystemClock())
    try:
        b = await rig.sender(deps=deps)
        b.start()
        await rig.delivered(texts, timeout=20)
        await asyncio.sleep(0.5)
        await b.stop()
    finally:
        engine.dispose()
    assert Counter(plain_texts(server)) == Counter({first: copies, second: 1})


async def test_a_group_that_became_a_supergroup_keeps_its_binding_and_queue(rig: Rig, server: FakeBotAPI) -> None:
    old, new = -4001, -1_004_001
    with rig.deps.sessions.begin() as session:
        session.add(TeamChat(team_number=3, chat_id=old, title="team 3", bound_at=rig.deps.clock.now()))
    texts = rig.queue([old], 3, prefix="g")
    name, send = server._methods["sendmessage"]

    def migrated(params: dict[str, Any], files: Any) -> Any:
        if int(params["chat_id"]) == old:
            raise ApiError(400, "Bad Request: group chat was upgraded to a supergroup chat",
                           {"migrate_to_chat_id": new})
        return send(params, files)

    server.register_method(name, migrated)
    sender = await rig.sender()
    sender.start()
    await rig.delivered(texts, timeout=20)
    await sender.stop()
    assert [r.get("text") for r in server.sent_to(new)] == texts
    assert server.sent_to(old) == []
    with rig.deps.sessions.begin() as session:
        assert session.scalars(select(TeamChat.chat_id)).all() == [new]
        rows = session.scalars(select(OutboxMessage)).all()
        assert {(r.chat_id, r.status, r.attempts) for r in rows} == {(new, "sent", 1)}


async def test_a_permanent_refusal_fails_at_once_and_the_office_hears(rig: Rig, server: FakeBotAPI) -> None:
    """A part the Bot API server cannot send (no such method) and a text Telegram refuses:
    failed at the first try, counted in the broadcast's figures, told to the office once;
    a blank text is never sent; the chat's next message still goes."""
    deps = rig.deps
    now = deps.clock.now()
    office, official = 7501, 7502
    with deps.sessions.begin() as session:
        session.add_all([
            Staff(telegram_user_id=office, display_name="Office", role="office", team_number=None,
                  language="en", active=True, joined_at=now),
            Staff(telegram_user_id=official, display_name="Official", role="official", team_number=None,
                  language="en", active=True, joined_at=now)])
        session.flush()
        staff_id = session.scalar(select(Staff.id).where(Staff.telegram_user_id == official))
        from bot.services.officials import Recipient
        b = broadcast.send(session, deps, now, kind="bulletin", ref="1", recipients=[Recipient(staff_id, official, "en")],
                           parts_for={"en": [("send_video", {"file_id": "BAACAgIAAxkBAAvideo"}),
                                             ("send_message", {"text": "<b>unclosed"}),
                                             ("send_message", {"text": " \n\u200b"}),
                                             ("send_message", {"text": "after"})]}, report=False)
        assert b is not None
        broadcast_id = b.id

    def no_such_method(params: dict[str, Any], files: Any) -> Any:
        raise ApiError(404, "Not Found: method not found")

    server.register_method("sendVideo", no_such_method)
    sender = await rig.sender()
    sender.start()
    await server.wait_for(lambda: "after" in plain_texts(server) or None, 20, message="the last part")
    await server.wait_for(lambda: server.sent_to(office) or None, 20, message="the office told")
    await asyncio.sleep(0.3)
    await sender.stop()
    with deps.sessions.begin() as session:
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.broadcast_id == broadcast_id)
                               .order_by(OutboxMessage.id)).all()
        assert [(r.status, r.attempts) for r in rows] == [("failed", 1), ("failed", 1), ("failed", 1), ("sent", 1)]
        assert broadcast.progress(session, broadcast_id).failed == 1
        reasons = dict(broadcast.failure_reasons(session, broadcast_id))
        assert sorted(reasons.values()) == [1, 1, 1]
        assert any("method not found" in r for r in reasons) and any("empty" in r for r in reasons)
    assert not [c for c in server.calls_for("sendMessage") if "\u200b" in str(c["params"].get("text"))]
    told = [r.get("text") or "" for r in server.sent_to(office)]
    assert len(told) == 1 and "broadcast #" in told[0] and "could not be delivered" in told[0]


async def test_a_sender_that_keeps_dying_stops_the_process(harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Restarted a few times, then given up: the bot stops (and `tipline run` exits 1) so
    that its supervisor starts it again, rather than accepting tips nobody is told of."""
    from bot.supervise import Backoff

    await harness.stop()
    runs = 0

    async def broken(self: OutboxSender) -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("a bug in the sender")

    monkeypatch.setattr(OutboxSender, "run", broken)
    from bot.app import Runtime

    runtime = Runtime(harness.config, clock=harness.clock)
    runtime.sender.restart_backoff = Backoff(base=0.01, cap=0.01)
    await runtime.start()
    await asyncio.wait_for(runtime.wait(), 10)  # the poller stops by itself
    await runtime.stop()
    runtime.engine.dispose()
    assert isinstance(runtime.failure, RuntimeError)
    assert runs == 6  # the first run and 5 restarts
