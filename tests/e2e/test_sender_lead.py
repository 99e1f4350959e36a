"""Two tipline senders (processes of their own) on one database and one bot token, against a
fake Bot API that enforces Telegram's real limits and records every message: one of them
sends at a time (bot/services/sendlead.py), so together they stay within 30 messages a
second, 1 a second per private chat and 20 a minute per group, and nothing goes out twice;
when the one that sends is killed (SIGKILL), the other takes over and delivers the rest.
Counts and limits are asserted, never timings; the failover time is printed. A sender that
takes the lead of a new database (nobody ever sent) holds nothing back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from pathlib import Path
from collections.abc import AsyncIterator
from typing import Any

from bot.app import Runtime, build_deps
from bot.deps import Deps
from bot.ratelimit import PacingRateLimiter
from bot.services import outbox, sendlead
from storage.db import upgrade
from tests.e2e.children import ChildProcess
from tests.e2e.conftest import TOKEN, Harness, e2e_config
from tests.e2e.test_officials_kill import _document
from tests.fakebot import FakeBotAPI

REAL = {"global_per_second": 30.0, "per_chat_per_second": 1.0, "group_per_minute": 20.0}
PRIVATE = [6_300_001 + i for i in range(120)]
GROUPS = [-6_300_001, -6_300_002, -6_300_003]


class Child(ChildProcess):
    def __init__(self, doc: Path, release: bool) -> None:
        self.doc, self.release = doc, release
        self.holder = ""

    async def start(self) -> None:
        line = await self.spawn("tests.e2e.sender_child", str(self.doc), "1" if self.release else "0")
        assert line[:1] == ["started"], line
        self.holder = line[1]


def _setup(database_url: str, srv: FakeBotAPI, tmp_path: Path, lease: float = 6.0) -> tuple[Deps, Any, Path]:
    # A 3 s lead and a 6 s row lease: the failover is quick; scheduled jobs stay out.
    config = e2e_config(database_url, srv, telegram={**REAL, "sender_lead_seconds": 3.0, "send_lease_seconds": lease},
                        scheduler={"enabled": False})
    deps, engine = build_deps(config)
    upgrade(engine)
    doc = tmp_path / "config.json"
    doc.write_text(json.dumps(_document(config)), encoding="utf-8")
    return deps, engine, doc


def _queue(deps: Deps) -> list[str]:
    texts = []
    with deps.sessions.begin() as session:
        for chats, per_chat in ((PRIVATE, 2), (GROUPS, 4)):
            for i in range(per_chat):
                for chat in chats:
                    t = f"L{chat}:{i}"
                    outbox.enqueue(session, deps.keyring, deps.clock.now(), dedupe_key=t, chat_id=chat,
                                   method="send_message", payload={"text": t}, purpose="card")
                    texts.append(t)
    return texts


def _texts(srv: FakeBotAPI) -> list[str]:
    return [r.get("text") or "" for r in srv.sent]


def _busiest_second(srv: FakeBotAPI) -> int:
    """The most messages Telegram received within any one second."""
    times = sorted(r["time"] for r in srv.sent)
    most, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def _holder(deps: Deps) -> str | None:
    with deps.sessions.begin() as session:
        s = sendlead.status(session)
    return s.holder if s.held else None


def _check_limits(srv: FakeBotAPI, texts: list[str]) -> None:
    got = _texts(srv)
    for chat in {t.split(":")[0] for t in texts}:  # each chat's messages in order
        mine = [t for t in got if t.split(":")[0] == chat]
        assert mine == sorted(mine, key=lambda t: int(t.split(":")[1])), chat
    assert srv.rate_violations == [], srv.rate_violations[:3]
    assert srv.count_429 == 0
    assert _busiest_second(srv) <= 30


@contextlib.asynccontextmanager
async def _first_sends(deps: Deps, engine: Any, srv: FakeBotAPI, doc: Path,
                       sent: int) -> AsyncIterator[tuple[Child, Child, list[str]]]:
    """Two senders: the first holds the lead, the second waits; the queue is filled and
    `sent` messages have gone out. Both stop (the first resumed if paused) afterwards."""
    first, second = Child(doc, release=True), Child(doc, release=False)
    try:
        await first.start()
        await srv.wait_for(lambda: _holder(deps) == first.holder or None, timeout=20,
                           message="the first process sends")
        await second.start()
        texts = _queue(deps)
        await srv.wait_for(lambda: len(srv.sent) >= sent or None, timeout=30, message=f"{sent} messages sent")
        yield first, second, texts
    finally:
        if first.proc is not None and first.proc.returncode is None:
            first.pause(resume=True)
        await first.stop()
        await second.stop()
        engine.dispose()


async def test_two_senders_together_stay_within_telegrams_limits(database_url: str, tmp_path: Path) -> None:
    async with FakeBotAPI(TOKEN, **{k: int(v) for k, v in REAL.items()}) as srv:
        deps, engine, doc = _setup(database_url, srv, tmp_path)
        children = [Child(doc, release=True), Child(doc, release=False)]
        try:
            for child in children:
                await child.start()
            texts = _queue(deps)
            started = time.monotonic()
            await srv.wait_for(lambda: set(texts) <= set(_texts(srv)) or None, timeout=120,
                               message="every message delivered")
            took = time.monotonic() - started
            await asyncio.sleep(1.0)  # a second copy would come now
            holder = _holder(deps)
            counts = Counter(_texts(srv))
            print(f"\ntwo senders: {len(texts)} messages in {took:.1f} s ({len(texts) / took:.1f} msg/s), "
                  f"busiest second {_busiest_second(srv)}, 429s {srv.count_429}, "
                  f"duplicates {sum(n - 1 for n in counts.values())}, sending: {holder}")
            assert counts == Counter(texts)  # each once
            _check_limits(srv, texts)
            assert holder in {c.holder for c in children}
        finally:
            for child in children:
                await child.stop()
            engine.dispose()


async def test_the_other_sender_takes_over_when_the_one_sending_is_killed(database_url: str,
                                                                        tmp_path: Path) -> None:
    async with FakeBotAPI(TOKEN, **{k: int(v) for k, v in REAL.items()}) as srv:
        deps, engine, doc = _setup(database_url, srv, tmp_path)
        async with _first_sends(deps, engine, srv, doc, sent=60) as (first, second, texts):
            await first.kill()
            killed = time.monotonic()
            before = {(r.get("text"), r["time"]) for r in srv.sent}
            await srv.wait_for(lambda: _holder(deps) == second.holder or None, timeout=20,
                               message="the second process took over")
            taken = time.monotonic() - killed
            await srv.wait_for(lambda: set(texts) <= set(_texts(srv)) or None, timeout=120,
                               message="every message delivered after the kill")
            await asyncio.sleep(1.0)
            after = [r["time"] for r in srv.sent if (r.get("text"), r["time"]) not in before]
            counts = Counter(_texts(srv))
            twice = {t for t, n in counts.items() if n > 1}
            # The one window for a copy: answered by Telegram, killed before the commit.
            last_before = {t: at for t, at in before}
            print(f"\nkill -9 of the sending process after {len(before)} of {len(texts)}: lead taken "
                  f"{taken:.1f} s after the kill, first message {min(after) - killed:.1f} s after it, "
                  f"busiest second {_busiest_second(srv)}, 429s {srv.count_429}, sent twice {len(twice)}")
            assert set(counts) == set(texts)
            assert all(n <= 2 for n in counts.values())
            assert all(killed - last_before[t] < 1.0 for t in twice), twice
            assert min(after) > killed
            _check_limits(srv, texts)


async def test_a_sending_process_that_stalls_is_taken_over_and_sends_nothing_more(database_url: str,
                                                                                 tmp_path: Path) -> None:
    """The sending process is stopped (SIGSTOP) for 5 s with messages waiting in its pacer:
    the other takes over; when the stalled one wakes, what it had not sent yet waits again
    for the new sender instead of leaving alongside it. Row leases (30 s) outlast the stall,
    so only the lead stands between the two."""
    async with FakeBotAPI(TOKEN, **{k: int(v) for k, v in REAL.items()}) as srv:
        deps, engine, doc = _setup(database_url, srv, tmp_path, lease=30.0)
        postgres = engine.dialect.name == "postgresql"
        async with _first_sends(deps, engine, srv, doc, sent=45) as (first, second, texts):
            first.pause()
            stalled = time.monotonic()
            taken: float | None = None
            while time.monotonic() - stalled < 5.0:
                if taken is None and await asyncio.to_thread(_holder, deps) == second.holder:
                    taken = time.monotonic() - stalled
                await asyncio.sleep(0.1)
            first.pause(resume=True)
            if postgres:
                assert taken is not None  # (on SQLite a process stopped inside a write stops everyone)
            await srv.wait_for(lambda: set(texts) <= set(_texts(srv)) or None, timeout=120,
                               message="every message delivered after the stall")
            await asyncio.sleep(1.0)
            counts = Counter(_texts(srv))
            print(f"\nSIGSTOP of the sending process for 5 s: lead taken "
                  f"{'never (stopped inside a write)' if taken is None else f'{taken:.1f} s after the stall'}, "
                  f"busiest second {_busiest_second(srv)}, 429s {srv.count_429}, "
                  f"sent twice {sum(n - 1 for n in counts.values())}")
            assert counts == Counter(texts)  # a stall is no crash: each once
            _check_limits(srv, texts)


async def test_on_a_fresh_database_the_first_messages_are_not_held_back(database_url: str,
                                                                        server: FakeBotAPI) -> None:
    """Nobody ever held the lead of a new database, so nobody sent: taking it holds nothing,
    and a group's first message leaves at once, not a group interval (3 s) later."""
    config = e2e_config(database_url, server, telegram=REAL)
    h = Harness(server, config)
    h.runtime = runtime = Runtime(config, clock=h.clock)
    group, private = GROUPS[0], PRIVATE[0]
    with runtime.deps.sessions.begin() as session:  # queued before the bot starts
        for chat in (group, private):
            outbox.enqueue(session, runtime.deps.keyring, runtime.deps.clock.now(), dedupe_key=f"first:{chat}",
                           chat_id=chat, method="send_message", payload={"text": f"first {chat}"}, purpose="card")
    taken: list[float] = []
    held = runtime.sender._lead_held

    def lead_held(*args: Any) -> None:
        taken.append(time.monotonic())  # the fake API's timestamps are on this clock
        held(*args)

    runtime.sender._lead_held = lead_held  # type: ignore[method-assign]
    try:
        await runtime.start()
        first = {chat: await h.expect(chat, f"first {chat}") for chat in (group, private)}
        limiter = runtime.app.bot.rate_limiter
        assert isinstance(limiter, PacingRateLimiter)
        print(f"\nfresh database: a group's first message {first[group]['time'] - taken[0]:.3f} s, "
              f"a private chat's {first[private]['time'] - taken[0]:.3f} s after the lead was taken")
        assert runtime.sender.lead_taken == 1
        # The pacer never held anything back: no pause, no floor for new chats or groups.
        assert (limiter._paused_until, limiter._chat_floor, limiter._group_floor) == (0.0, 0.0, 0.0)
        assert first[group]["time"] - taken[0] < limiter._group_interval  # held, it would be 3.05 s at least
    finally:
        await h.stop()
