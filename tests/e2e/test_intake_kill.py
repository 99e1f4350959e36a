"""Fault test: the bot, in a child process, is killed (SIGKILL) at random moments while 50
citizens report tips, and restarted each time. Afterwards every stored tip belongs to
exactly one citizen, its receipt code reached that citizen (or the tip is marked
undelivered), the team has exactly one card per tip, and no citizen who was given a code
lost their tip. Drafts survive a kill (bot/conversations.py): a Submit pressed while the
process was down is handled by the next one, after its start and the backlog; a step
unanswered for long is started again by the citizen.

A card may be sent twice only where the bot never had Telegram's answer to the first
copy (the request timed out: it is tried again, since Telegram may or may not have
carried it out), or where a process was killed between the answer and the commit that
records it (the outbox's one crash window): for each such copy the test checks that its
row was still in flight in the database the kill left behind, and that the fake Bot API
answered it less than CRASH_WINDOW before that kill (the sender commits each outcome as
soon as it has the answer). Figures are printed (run with -s to see
them): submitted / stored / duplicates / codes delivered / cards / recovery seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from bot.app import build_deps
from bot.services.staff import create_invite, join
from storage.db import upgrade
from storage.models import OutboxMessage, PendingReceipt, Tip
from tests.conftest import ROOT
from tests.e2e.conftest import TOKEN, Harness, e2e_config, plain
from tests.e2e.test_officials_kill import _document
from tests.fakebot import FakeBotAPI

CITIZENS = 50
ROUNDS = 3  # kills
FIRST = 5_640_001
LEAD = 7_640_001
PROBE = 5_649_999
CODE = re.compile(r"\d{4} \d{4} \d{4} \d{4}")
STALE = ("已过期", "请用下面的按钮", "请点击上面消息中的按钮", "请重新开始")
STEP_TIMEOUT = 25.0  # a step unanswered this long: start again (a step lost with a process is answered "expired")
SUBMIT_TIMEOUT = 90.0  # a Submit is always answered, after a restart (and its backlog) if need be
DEADLINE = 150.0  # the whole run, at most
# Seconds at most between Telegram's answer to a card and the kill that kept it from being
# recorded: the commit follows the answer at once (bot/recorder.py); this bound leaves room
# for a loaded machine, not for outcomes waiting behind other work.
CRASH_WINDOW = 1.0


@dataclass
class Figures:
    submits: int = 0
    answered_start_again: int = 0  # the draft died with a process: nothing stored, citizen told
    unanswered_submits: int = 0
    restarts_of_flow: int = 0
    recovery: list[float] = field(default_factory=list)


class Child:
    def __init__(self, doc: Path, offset: float) -> None:
        self.doc, self.offset = doc, offset
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.e2e.child", str(self.doc), str(self.offset),
            cwd=str(ROOT), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()


async def _wait(srv: FakeBotAPI, uid: int, mark: int, expect: str, timeout: float, button: str = ""
                ) -> tuple[str, dict[str, Any] | None]:
    """("ok", message) once a message after `mark` contains `expect` (and a button labelled
    with `button`); ("stale", None) if the bot said the step is gone; ("timeout", None)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for record in srv.sent_to(uid)[mark:]:
            text = plain(record)
            if expect in text and button in str(record.get("reply_markup") or ""):
                return "ok", record
            if any(marker in text for marker in STALE):
                return "stale", None
        await asyncio.sleep(0.05)
    return "timeout", None


async def _citizen(srv: FakeBotAPI, i: int, figures: Figures, stop_at: float) -> None:
    user = srv.user(FIRST + i, f"Citizen {i}")
    uid = user["id"]
    while time.monotonic() < stop_at:
        async def step(act: Any, expect: str, button: str = "") -> dict[str, Any] | None:
            mark = len(srv.sent_to(uid))
            act()
            state, record = await _wait(srv, uid, mark, expect, STEP_TIMEOUT, button)
            return record if state == "ok" else None

        menu = await step(lambda: srv.push_message(user, "/start"), "查询码", "📝")
        cats = menu and await step(lambda: srv.press(user, menu, "📝"), "第 1 步")
        units = cats and await step(lambda: srv.press(user, cats, "迟到早退脱岗"), "第 2 步")
        place = units and await step(lambda: srv.press(user, units, "定昌镇"), "第 3 步")
        text = place and await step(lambda: srv.push_message(user, f"第{i}号：周一上午，便民大厅"), "第 4 步")
        evidence = text and await step(
            lambda: srv.push_message(user, f"第{i}号举报人：窗口工作人员九点半还没有到岗。"), "第 5 步")
        review = evidence and await step(lambda: srv.press(user, evidence, "跳过"), "核对", "提交")
        if review is None:
            figures.restarts_of_flow += 1
            continue
        mark = len(srv.sent_to(uid))
        srv.press(user, review, "提交")
        figures.submits += 1
        state, _ = await _wait(srv, uid, mark, "您的查询码", SUBMIT_TIMEOUT)
        if state == "ok":
            return
        if state == "stale":
            figures.answered_start_again += 1
            continue
        figures.unanswered_submits += 1
        return


async def test_kill_9_during_intake_loses_no_tip_no_code_and_sends_each_card_once(
    database_url: str, tmp_path: Path
) -> None:
    rng = random.Random(int(os.environ.get("TIPLINE_FAULT_SEED", "0")) or None)
    srv = FakeBotAPI(TOKEN, global_per_second=None, per_chat_per_second=None, group_per_minute=None)
    unanswered: set[tuple[str, int]] = set()  # messages made whose answer never reached the bot
    srv._handle = _answers_noted(srv._handle, unanswered)  # type: ignore[method-assign]
    async with srv:
        config = e2e_config(database_url, srv, scheduler={"enabled": False},
                            intake={"flood_messages_per_minute": 1000})
        h = Harness(srv, config)
        deps, engine = build_deps(config, h.clock)
        upgrade(engine)
        lead = srv.user(LEAD, "Lead")
        probe = srv.user(PROBE, "Probe")
        with deps.sessions.begin() as session:
            now = deps.clock.now()
            code = create_invite(session, deps.keyring, now, kind="person", role="lead", team_number=1)
            join(session, deps, code, LEAD, lead["first_name"], "zh-CN", now)
        engine.dispose()
        doc = tmp_path / "config.json"
        doc.write_text(json.dumps(_document(config)), encoding="utf-8")

        # At each kill, when, and which tips' cards were in flight in the database it left
        # (answered or not, not recorded): a card sent twice must be one of those.
        kills: list[tuple[float, set[int]]] = []

        child = Child(doc, h.clock.offset.total_seconds())
        figures = Figures()
        began = time.monotonic()
        stop_at = began + DEADLINE
        await child.start()
        citizens = [asyncio.create_task(_citizen(srv, i, figures, stop_at)) for i in range(CITIZENS)]
        try:
            # Kill while Submits are being handled: spread over the run (after about a fifth,
            # a half and four fifths of the citizens have their code), at a random moment.
            for share in (0.2, 0.5, 0.8):
                threshold = int(CITIZENS * share) + rng.randint(-3, 3)
                await _until(lambda t=threshold: sum(not task.done() for task in citizens) <= CITIZENS - t, stop_at)
                await asyncio.sleep(rng.uniform(0.0, 0.6))
                await child.kill()
                killed_at = time.monotonic()
                kills.append((killed_at, _cards_in_flight(deps)))
                await child.start()
                # recovery: from the kill until the restarted bot answers someone new
                mark = len(srv.sent_to(PROBE))
                srv.push_message(probe, "/help")
                await srv.wait_for(lambda m=mark: len(srv.sent_to(PROBE)) > m, timeout=60)
                figures.recovery.append(time.monotonic() - killed_at)
            await asyncio.wait_for(asyncio.gather(*citizens), timeout=DEADLINE + SUBMIT_TIMEOUT)
        finally:
            for task in citizens:
                task.cancel()
            # The last process is killed too (cards may still be on their way): a kill like the others.
            await child.kill()
            kills.append((time.monotonic(), _cards_in_flight(deps)))

        # Finish in this process, past the sender's lease: what a dead process left in
        # flight (cards, receipts) goes out now.
        h.clock.offset += timedelta(minutes=11)
        await h.start()
        try:
            try:
                await srv.wait_for(lambda: _left(h) == (0, 0), timeout=30)
            except AssertionError:
                with h.deps.sessions.begin() as session:
                    states = session.execute(select(OutboxMessage.status, OutboxMessage.purpose, func.count())
                                             .group_by(OutboxMessage.status, OutboxMessage.purpose)).all()
                    receipts_left = [(r.tip_id, r.attempts, r.claimed_until, r.next_attempt_at)
                                     for r in session.scalars(select(PendingReceipt))]
                raise AssertionError(f"left over: outbox {states}, receipts {receipts_left}, "
                                     f"now {h.deps.clock.now()}") from None
            with h.deps.sessions.begin() as session:
                tips = [(t.id, h.deps.keyring.decrypt(t.text_enc), t.receipt_hash, t.receipt_undelivered)
                        for t in session.scalars(select(Tip).order_by(Tip.id))]
        finally:
            await h.stop()

        owner = {tip_id: int(re.search(r"第(\d+)号举报人", text).group(1)) for tip_id, text, _, _ in tips}  # type: ignore[union-attr]
        per_citizen = Counter(owner.values())
        codes: dict[int, set[str]] = {}
        for i in range(CITIZENS):
            for record in srv.sent_to(FIRST + i):
                found = CODE.search(plain(record))
                if found and "您的查询码" in plain(record):
                    codes.setdefault(i, set()).add(found.group(0).replace(" ", ""))
        delivered = 0
        for tip_id, _, receipt_hash, undelivered in tips:
            mine = codes.get(owner[tip_id], set())
            if any(deps.keyring.receipt_hash(c) == receipt_hash for c in mine):
                delivered += 1
            else:
                assert undelivered, f"tip #{tip_id}: its code reached nobody and the tip is not marked"
        copies: dict[int, list[tuple[float, bool]]] = {}
        for r in srv.sent_to(LEAD):  # "time": when the fake Bot API made the message and answered
            if (m := re.search(r"举报 #(\d+)", plain(r))) and "📥" in plain(r):
                lost = (str(LEAD), int(r["message_id"])) in unanswered
                copies.setdefault(int(m.group(1)), []).append((r["time"], lost))
        cards = Counter({tip_id: len(times) for tip_id, times in copies.items()})
        # A copy may be followed by another only if it was answered in the moment before a
        # kill that left its row in flight (the process died before recording it), or if
        # its answer never reached the bot (the request timed out: tried again, as a
        # request Telegram may or may not have carried out must be).
        windows: dict[int, list[float]] = {}
        timed_out = 0
        for tip_id, times in copies.items():
            for answered, lost in sorted(times)[:-1]:
                if lost:
                    timed_out += 1
                    continue
                after = [k - answered for k, flying in kills if tip_id in flying and k >= answered]
                windows.setdefault(tip_id, []).append(min(after, default=float("inf")))
        in_window = [tip_id for tip_id, gaps in windows.items() if all(gap <= CRASH_WINDOW for gap in gaps)]
        duplicates = sum(n - 1 for n in per_citizen.values() if n > 1)
        print(f"\nkill -9 during intake: {len(kills)} kills, {CITIZENS} citizens, {time.monotonic() - began:.0f} s: "
              f"submitted {figures.submits} (answered 'start again' {figures.answered_start_again}, "
              f"unanswered {figures.unanswered_submits}), flows restarted {figures.restarts_of_flow}; "
              f"stored {len(tips)}, duplicates {duplicates}, codes delivered {delivered}, "
              f"marked undelivered {sum(1 for t in tips if t[3])}, cards {sum(cards.values())} "
              f"for {len(cards)} tips ({len(in_window)} sent twice across a kill, answered s before it: "
              f"{', '.join(f'{g:.2f}' for gaps in windows.values() for g in gaps) or '-'}; "
              f"{timed_out} sent again after an answer that never reached the bot), recovery s {', '.join(f'{r:.1f}' for r in figures.recovery)}")

        assert figures.unanswered_submits == 0
        assert duplicates == 0, per_citizen
        assert set(per_citizen) == set(codes), "a citizen was given a code without a tip, or the reverse"
        assert all(len(c) == 1 for c in codes.values()), "a citizen got two different codes"
        assert len(tips) == len(codes) == CITIZENS
        assert set(cards) == {tip_id for tip_id, *_ in tips}, "a tip without a card"
        assert all(n == 1 or tip_id in in_window or tip_id not in windows for tip_id, n in cards.items()), (
            cards, windows)


async def _until(predicate: Any, deadline: float) -> None:
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def _answers_noted(handle: Any, unanswered: set[tuple[str, int]]) -> Any:
    """The fake Bot API's handler, noting each message whose answer could not be written
    (the bot had given up waiting: its read timeout, or it was killed)."""
    async def answer(request: web.Request) -> web.StreamResponse:
        response = await handle(request)
        try:
            await response.prepare(request)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            body = getattr(response, "body", None)
            result = json.loads(body).get("result") if isinstance(body, bytes) else None
            if isinstance(result, dict) and "message_id" in result:
                unanswered.add((str(result["chat"]["id"]), int(result["message_id"])))
            raise
        return response
    return answer


def _cards_in_flight(deps: Any) -> set[int]:
    """Tips whose card the killed process had leased and not recorded as sent."""
    with deps.sessions.begin() as session:
        return set(session.scalars(select(OutboxMessage.tip_id).where(
            OutboxMessage.purpose == "card", OutboxMessage.status == "sending")))


def _left(h: Harness) -> tuple[int, int]:
    with h.deps.sessions.begin() as session:
        unsent = session.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status != "sent"))
        pending = session.scalar(select(func.count()).select_from(PendingReceipt))
        return int(unsent or 0), int(pending or 0)
