"""The poller under faults, end to end against the fake Bot API: a second poller on the
token, one chat flooding, the database away (SQLite locked, PostgreSQL connections killed),
handlers failing. Counts and order are asserted, never timings; figures are printed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bot.app import Runtime
from handlers import citizen
from tests.e2e.conftest import Harness, e2e_config, plain
from tests.fakebot import FakeBotAPI

HELP = "怎么用"  # in the answer to /help (zh-CN)
HELP_EN = "How"


def helps(srv: FakeBotAPI, chat_id: int) -> int:
    return sum(1 for r in srv.sent_to(chat_id) if HELP in plain(r))


async def all_helped(srv: FakeBotAPI, users: list[int], timeout: float) -> None:
    await srv.wait_for(lambda: all(helps(srv, u) >= 1 for u in users), timeout=timeout,
                       message="an answer to every /help")


@pytest.fixture
async def fresh(database_url: str, server: FakeBotAPI) -> AsyncIterator[Harness]:
    """A harness not started yet (tests patch handlers first)."""
    h = Harness(server, e2e_config(database_url, server))
    try:
        yield h
    finally:
        await h.stop()
        assert not server.internal_errors, server.internal_errors


async def test_a_redelivered_update_is_answered_once(harness: Harness) -> None:
    h, srv = harness, harness.server
    user = srv.user(5_580_001, "Twice")
    first = srv.push_message(user, "/help")
    await h.expect(5_580_001, HELP)
    srv.push_duplicate(first)  # Telegram sends the same update_id again
    srv.push_message(user, "/cancel")  # a later update: the duplicate was looked at before it
    await h.expect(5_580_001, "取消")
    await asyncio.sleep(0.3)
    assert helps(srv, 5_580_001) == 1


async def test_failures_are_told_in_the_persons_language_and_retried_on_a_timer(
        fresh: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h, srv = fresh, fresh.server
    failures = {"help": 1, "button": 1}
    real_help, real_button = citizen.help_command, citizen.on_button

    async def flaky_help(update, context):  # type: ignore[no-untyped-def]
        if failures["help"] > 0:
            failures["help"] -= 1
            raise RuntimeError("database went away")
        await real_help(update, context)

    async def flaky_button(update, context):  # type: ignore[no-untyped-def]
        if failures["button"] > 0:
            failures["button"] -= 1
            raise RuntimeError("database went away")
        await real_button(update, context)

    monkeypatch.setattr(citizen, "help_command", flaky_help)
    monkeypatch.setattr(citizen, "on_button", flaky_button)
    await h.start()
    user = srv.user(5_580_101, "Eng", language_code="en-US")
    srv.push_message(user, "/help")
    apology = await h.expect(5_580_101, "went wrong")
    assert "Sorry" in plain(apology)
    # retried on a timer: no further message from the person is needed
    await h.expect(5_580_101, HELP_EN)
    menu = await h.say(user, "/start", expect="receipt code")
    before = len(srv.callback_answers)
    srv.press(user, menu, "📝")
    alert = await h.alert_for(before)
    assert alert["show_alert"] and "went wrong with that button" in alert["text"]
    await h.expect(5_580_101, "1")  # the retry shows the categories
    assert failures == {"help": 0, "button": 0}
    everything = " ".join(plain(r) for r in srv.sent_to(5_580_101))
    assert "update_id" not in everything and "Eng" not in everything


async def test_a_second_poller_on_the_token_loses_nothing_and_says_so_once(
        fresh: Harness, caplog: pytest.LogCaptureFixture) -> None:
    h, srv = fresh, fresh.server
    await h.start()
    second = Runtime(h.config, clock=h.clock)
    users = list(range(5_581_000, 5_581_060))
    with caplog.at_level(logging.ERROR, logger="bot.polling"):
        await second.start()  # a deploy overlapping the running process, for a bounded time
        started = time.monotonic()
        for n, uid in enumerate(users):
            srv.push_message(srv.user(uid, f"C{n}"), "/help")
            await asyncio.sleep(0.1)
        await all_helped(srv, users, timeout=40)
        await second.stop()
        second.engine.dispose()
        window = time.monotonic() - started
    handled = h.runtime.poller.processed + second.poller.processed  # type: ignore[union-attr]
    conflicts = h.runtime.poller.conflicts + second.poller.conflicts  # type: ignore[union-attr]
    lines = [r for r in caplog.records if "409 Conflict" in r.getMessage()]
    answers = Counter(helps(srv, u) for u in users)
    print(f"\nsecond poller: {len(users)} sent, {handled} handled, duplicates {answers}, "
          f"{conflicts} x 409, {len(lines)} log lines in {window:.1f} s")
    assert answers == Counter({1: len(users)})  # none lost, none twice
    assert conflicts >= 1  # the two pollers did meet
    assert len(lines) <= 2 * (1 + int(window // 60))  # one line a minute per poller at most


async def test_one_chat_flooding_does_not_hold_up_the_others(database_url: str, server: FakeBotAPI) -> None:
    srv = server
    h = Harness(srv, e2e_config(database_url, srv, journal={"concurrency": 4}))
    await h.start()
    poller = h.runtime.poller  # type: ignore[union-attr]
    done: list[int] = []  # chats in the order their updates were handled
    real_handle = poller._handle

    async def recording(entry):  # type: ignore[no-untyped-def]
        failed = await real_handle(entry)
        done.append(entry.chat[1])
        return failed

    poller._handle = recording  # type: ignore[method-assign]
    try:
        flooder = srv.user(5_582_000, "Flood")
        flood = [srv.push_message(flooder, "/help")["update_id"] for _ in range(100)]
        others = list(range(5_582_100, 5_582_150))
        for n, uid in enumerate(others):
            srv.push_message(srv.user(uid, f"O{n}"), "/help")
        await all_helped(srv, others, timeout=60)
        await srv.wait_for(lambda: len(done) == 150, timeout=60)  # the flood is handled too
        last_other = max(i for i, chat in enumerate(done) if chat != 5_582_000)
        flood_before = done[:last_other].count(5_582_000)
        print(f"\nflood: the 50 others were all handled while the flooding chat had {flood_before} of "
              f"{len(flood)} handled ({helps(srv, 5_582_000)} /help answers so far)")
        # Four slots: the flood holds one at most while the others share the other three.
        assert flood_before < 50
    finally:
        await h.stop()


async def test_polling_survives_a_locked_sqlite_file_and_killed_connections(database_url: str,
                                                                           server: FakeBotAPI) -> None:
    srv = server
    url = make_url(database_url)
    name = f"tipline_fault_{secrets.token_hex(4)}"  # only this test's connections are killed
    if url.get_backend_name() == "postgresql":
        url = url.update_query_dict({"application_name": name})
    # Retries spaced beyond the fault (a handler that fails against a dead connection is tried
    # again; its reply may then come twice: at least once is the promise under such faults).
    h = Harness(srv, e2e_config(url.render_as_string(hide_password=False), srv, journal={"retry_seconds": 2.0}))
    await h.start()
    try:
        await _survive(h, srv, url, name)
    finally:
        await h.stop()


async def _survive(h: Harness, srv: FakeBotAPI, url, name: str) -> None:  # type: ignore[no-untyped-def]
    users = list(range(5_583_000, 5_583_030))
    stop = threading.Event()
    kills = [0]

    def locker() -> None:  # another program holds the file's write lock for a while
        conn = sqlite3.connect(str(url.database), timeout=30)
        conn.execute("BEGIN EXCLUSIVE")
        stop.wait(4.0)
        conn.rollback()
        conn.close()

    def killer() -> None:  # the server drops tipline's connections again and again
        admin = create_engine(url.set(query={}).render_as_string(hide_password=False),
                              isolation_level="AUTOCOMMIT")
        with contextlib.closing(admin.connect()) as conn:
            end = time.monotonic() + 4.0
            while time.monotonic() < end and not stop.is_set():
                kills[0] += conn.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND application_name = :name"), {"name": name}).scalar_one()
                time.sleep(0.2)
        admin.dispose()

    postgres = url.get_backend_name() == "postgresql"
    fault = threading.Thread(target=killer if postgres else locker, daemon=True)
    started = time.monotonic()
    fault.start()
    for n, uid in enumerate(users):
        srv.push_message(srv.user(uid, f"L{n}"), "/help")
        await asyncio.sleep(0.1)
    try:
        await all_helped(srv, users, timeout=60)
    finally:
        stop.set()
        fault.join()
    recovered = time.monotonic() - started
    answers = Counter(helps(srv, u) for u in users)
    poller = h.runtime.poller  # type: ignore[union-attr]
    print(f"\ndatabase fault ({'connections killed: ' + str(kills[0]) if postgres else 'file locked 4 s'}): "
          f"{len(users)} sent, {poller.processed} handled, answers per chat {dict(answers)}, "
          f"{poller.given_up} given up, all answered after {recovered:.1f} s")
    assert min(helps(srv, u) for u in users) >= 1 and sum(answers.values()) == len(users)  # nothing lost
    assert poller.given_up == 0
    # and it keeps going afterwards
    srv.push_message(srv.user(5_583_999, "After"), "/help")
    await h.expect(5_583_999, HELP, timeout=20)
