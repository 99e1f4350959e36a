"""Work done on a timer (PTB's JobQueue): due reminders and escalations, news for tipsters
who opted in, forgetting idle drafts. Due work lives in tables, so nothing here depends on
an in-memory timer surviving a restart: the first sweep after a start catches up.

Each due step is handled in its own transaction and error boundary: a step that fails is
counted (`due_steps.attempts`) and the sweep goes on with the next one; the failing step
is tried again at the next sweep (steps are always taken in due order) and given up after
`MAX_STEP_ATTEMPTS` (cancelled, its error kept, logged). A database that cannot be reached
fails no step: the sweep stops and the tick waits with back-off (`TickGuard`), saying so
once a minute. Every tick runs its blocking database work in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from bot import liveness
from bot.deps import Deps
from bot.services import deadlines, delivery, notify, outbox
from bot.services.office import office_targets
from bot.services.outbox import Button
from bot.services.views import add_event
from bot.supervise import Backoff, ThrottledLog
from storage.db import is_postgres
from storage.models import Breach, DueStep, RequiredAction, Tip

log = logging.getLogger(__name__)
BATCH = 200
MAX_STEP_ATTEMPTS = 5


def is_connection_error(exc: BaseException) -> bool:
    """The database itself is away (a dropped connection, a locked file): not the step's fault."""
    if isinstance(exc, OSError):
        return True
    return isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or type(exc.orig).__name__ in ("OperationalError", "InterfaceError"))


def sweep_due_steps(deps: Deps, now: datetime | None = None) -> int:
    """Handle every due step, each in its own transaction with the messages it queues.

    A step that raises is counted and skipped for the rest of this sweep, so it never
    holds up the steps behind it; at `MAX_STEP_ATTEMPTS` it is given up and logged.
    """
    handled = 0
    failed: list[int] = []
    for _ in range(BATCH):
        when = now or deps.clock.now()
        step_id: int | None = None
        try:
            with deps.sessions.begin() as session:
                step = deadlines.claim_one(session, when, exclude=failed)
                if step is None:
                    break
                step_id = step.id
                _handle(session, deps, step, when)
                step.done_at = when
            handled += 1
        except Exception as exc:  # noqa: BLE001 - one step's failure must not stop the others
            if step_id is None or is_connection_error(exc):
                raise
            failed.append(step_id)
            _step_failed(deps, step_id, when, exc)
    return handled


def _step_failed(deps: Deps, step_id: int, now: datetime, exc: BaseException) -> None:
    error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    with deps.sessions.begin() as session:
        step = session.get(DueStep, step_id)
        if step is None:
            return
        step.attempts += 1
        step.last_error = error[:256]
        if step.attempts >= MAX_STEP_ATTEMPTS:
            step.cancelled_at = now
            step.last_error = f"gave up: {error}"[:256]
            log.error("due step %s (%s) given up after %d attempts: %s", step.id, step.token, step.attempts, error)
        else:
            log.warning("due step %s (%s) failed (attempt %d of %d): %s", step.id, step.token, step.attempts,
                        MAX_STEP_ATTEMPTS, error)


def _handle(session: Session, deps: Deps, step: DueStep, now: datetime) -> None:
    if step.tip_id is not None:
        tip = session.get(Tip, step.tip_id)
        if tip is None or not _still_open(tip, step.deadline_kind):
            return  # acknowledged or closed meanwhile: nothing to say
        if step.step == "remind":
            _remind_team(session, deps, tip, step, now)
        else:
            _escalate_tip(session, deps, tip, step, now)
    elif step.action_id is not None:
        action = session.get(RequiredAction, step.action_id)
        if action is None or action.received_at is not None:
            return
        _action_notice(session, deps, action, step, now)


def _still_open(tip: Tip, kind: str) -> bool:
    if tip.closed_at is not None or tip.state.startswith("closed"):
        return False
    return not (kind == "ack" and tip.state != "routed")


def _remind_team(session: Session, deps: Deps, tip: Tip, step: DueStep, now: datetime) -> None:
    for target in delivery.team_targets(session, deps, tip.team_number):
        text = deps.texts.render(target.lang, "reminder", tip_id=tip.id, kind=step.deadline_kind,
                                 deadline=step.deadline)
        outbox.enqueue(session, deps.keyring, now, dedupe_key=f"step:{step.token}:chat:{target.chat_id}",
                       chat_id=target.chat_id, method="send_message",
                       payload={"text": text,
                                "reply_to_outbox": delivery.latest_card_row(session, tip.id, target.chat_id)},
                       purpose="reminder", tip_id=tip.id)
    add_event(session, deps.keyring, tip, now, "reminded", team_number=tip.team_number, public=False,
              detail=f"{step.deadline_kind} due {step.deadline.isoformat()}")


def _escalate_tip(session: Session, deps: Deps, tip: Tip, step: DueStep, now: datetime) -> None:
    targets = office_targets(session, deps)
    for target in targets:
        lang = target.lang
        text = deps.texts.render(lang, "escalation", tip_id=tip.id, kind=step.deadline_kind, team=tip.team_number,
                                 deadline=step.deadline, category=tip.category, unit_key=tip.unit_key)
        buttons = [[Button(deps.texts.button(lang, "reassign"), deps.keyring.sign(f"rea:{tip.id}")),
                    Button(deps.texts.button(lang, "extend"), deps.keyring.sign(f"ext:{tip.id}:{step.deadline_kind}"))]]
        outbox.enqueue(session, deps.keyring, now, dedupe_key=f"step:{step.token}:chat:{target.chat_id}",
                       chat_id=target.chat_id, method="send_message",
                       payload={"text": text, "buttons": outbox.keyboard_payload(buttons)},
                       purpose="escalation", tip_id=tip.id)
    if not targets:
        log.warning("tip %s escalated, but the office has no chat and no member to tell", tip.id)
    add_event(session, deps.keyring, tip, now, "escalated", team_number=tip.team_number, public=False,
              detail=f"{step.deadline_kind} deadline {step.deadline.isoformat()} passed")


def _action_notice(session: Session, deps: Deps, action: RequiredAction, step: DueStep, now: datetime) -> None:
    breach = session.get(Breach, action.breach_id)
    if breach is None:
        return
    for target in office_targets(session, deps):
        lang = target.lang
        text = deps.texts.render(lang, "action_due", action=action, breach=breach, overdue=step.step == "escalate",
                                 deadline=step.deadline)
        buttons = [[Button(deps.texts.button(lang, "mark_received", kind=action.kind),
                           deps.keyring.sign(f"rcv:{action.id}"))]]
        outbox.enqueue(session, deps.keyring, now, dedupe_key=f"step:{step.token}:chat:{target.chat_id}",
                       chat_id=target.chat_id, method="send_message",
                       payload={"text": text, "buttons": outbox.keyboard_payload(buttons)},
                       purpose="action_due", tip_id=breach.tip_id)


class TickGuard:
    """One tick's error boundary: an error is logged once a minute (not per tick) and the
    tick's next runs are skipped with back-off until it succeeds again."""

    def __init__(self, name: str, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.backoff = Backoff(base=1.0, cap=60.0)
        self.log = ThrottledLog(log, monotonic=monotonic)
        self.monotonic = monotonic
        self.not_before = 0.0
        self.failures = 0

    async def run(self, work: Callable[[], Awaitable[object]]) -> object | None:
        if self.monotonic() < self.not_before:
            return None
        try:
            result = await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a tick never dies
            self.failures += 1
            self.not_before = self.monotonic() + self.backoff.next_delay()
            kind = "database unavailable" if isinstance(exc, SQLAlchemyError | OSError) else "failed"
            self.log("error", logging.ERROR, "%s: %s (%s: %s); retrying with back-off", self.name, kind,
                     type(exc).__name__, _first_line(exc))
            return None
        if self.backoff.attempts:
            self.backoff.reset()
            self.log.recovered("error", "%s: working again", self.name)
        return result


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0][:200] if text else ""


EXCLUSIVE_NAMESPACE = 7_384_300  # PostgreSQL advisory locks held by one process's job run
NEWS_LOCK = 1


async def _news_once(deps: Deps, bot) -> int:  # type: ignore[no-untyped-def]
    """Several processes on one database (webhook mode): one of them tells the tipsters at a
    time, so nobody hears the same news twice (the due steps and scheduled runs have their own
    guards: SKIP LOCKED claims and `scheduled_runs`)."""
    engine = deps.sessions.kw.get("bind")
    if engine is None or not is_postgres(engine):
        return await notify.deliver(deps, bot)
    conn = await asyncio.to_thread(engine.connect)
    try:
        mine = await asyncio.to_thread(lambda: bool(conn.scalar(
            select(func.pg_try_advisory_lock(EXCLUSIVE_NAMESPACE, NEWS_LOCK)))))
        if not mine:
            return 0  # another process is at it
        try:
            return await notify.deliver(deps, bot)
        finally:
            try:
                await asyncio.to_thread(lambda: conn.scalar(
                    select(func.pg_advisory_unlock(EXCLUSIVE_NAMESPACE, NEWS_LOCK))))
            except Exception:  # noqa: BLE001 - a connection that may still hold the lock never goes back
                conn.invalidate()
                raise
    finally:
        await asyncio.to_thread(conn.close)


def guard(context, name: str) -> TickGuard:  # type: ignore[no-untyped-def]
    guards = context.bot_data.setdefault("tick_guards", {})
    if name not in guards:
        guards[name] = TickGuard(name)
    return guards[name]


async def tick(context) -> None:  # type: ignore[no-untyped-def]
    """The JobQueue callback: sweep due steps, deliver tipsters' news, wake the sender.
    The sweep and the news are separate error boundaries: one failing does not stop the other."""
    deps: Deps = context.bot_data["deps"]
    liveness.beat("scheduler")
    handled = await guard(context, "due-step sweep").run(lambda: asyncio.to_thread(sweep_due_steps, deps))
    told = await guard(context, "news for tipsters").run(lambda: _news_once(deps, context.bot))
    if handled:
        deps.nudge_sender()
    if handled or told:
        log.info("sweep: %d due steps handled, %d tipsters told of news", handled or 0, told or 0)
