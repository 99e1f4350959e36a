"""Deadlines kept in the database: due steps are rows, swept by a JobQueue job.

Each step (a reminder before a deadline, the escalation at it) is a `due_steps` row with
a unique token. The sweeper handles a due step and marks it done in one transaction with
the messages it queues, so each step happens once: across restarts, with the bot down at
the moment it fell due (it goes out when the bot is back), and with two processes on
PostgreSQL (rows are locked with SKIP LOCKED).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, time, timedelta
from typing import Literal

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from bot.config import Config
from bot.domain.calendar import AlwaysOpen, Calendar, WorkingCalendar
from bot.domain.deadlines import DeadlinePolicy, Step, deadline_for, steps_for_deadline
from bot.domain.deadlines import extend as extend_deadline
from storage.db import is_postgres
from storage.models import DueStep, RequiredAction, Tip

Kind = Literal["ack", "outcome"]


def calendar_for(config: Config) -> Calendar:
    wh = config.working_hours
    tz = config.campaign.tz
    if not wh.enabled:
        return AlwaysOpen(tz)
    return WorkingCalendar(
        tz=tz,
        weekdays=frozenset(d - 1 for d in wh.weekdays),
        start=time.fromisoformat(wh.start),
        end=time.fromisoformat(wh.end),
        holidays=frozenset(wh.holidays),
        workdays=frozenset(wh.workdays),
    )


def policy_for(config: Config, category: str, kind: Kind) -> DeadlinePolicy:
    d = config.deadlines
    override = next((o for o in d.overrides if o.category == category), None)
    ack = (override.ack_hours if override and override.ack_hours else d.ack_hours)
    outcome = (override.outcome_hours if override and override.outcome_hours else d.outcome_hours)
    minutes = d.ack_reminder_minutes_before if kind == "ack" else d.outcome_reminder_minutes_before
    return DeadlinePolicy(
        ack=timedelta(hours=ack),
        outcome=timedelta(hours=outcome),
        reminders_before=tuple(timedelta(minutes=m) for m in minutes),
    )


def _store(session: Session, steps: Iterable[tuple[Step, datetime]], prefix: str, *,
           tip_id: int | None = None, action_id: int | None = None, kind: str | None = None) -> None:
    """Each (step, its deadline) not planned yet (a token already there was planned before:
    idempotent). One read and one insert for them all: a new tip plans several steps in the
    Submit's transaction, where a read, an ORM object and a flush per step cost more CPU
    than the tip's other rows together."""
    rows = {f"{prefix}:{step.token}": (step, deadline) for step, deadline in steps}
    if not rows:
        return
    planned = set(session.scalars(select(DueStep.token).where(DueStep.token.in_(rows))))
    new = [dict(token=token, tip_id=tip_id, action_id=action_id, deadline_kind=kind or step.kind, step=step.step,
                idx=step.index, due_at=step.due_at, deadline=deadline, attempts=0)
           for token, (step, deadline) in rows.items() if token not in planned]
    if new:
        session.execute(insert(DueStep.__table__), new)


def clocks(config: Config, category: str, started_at: datetime) -> tuple[datetime, datetime]:
    """A tip's (acknowledgement, outcome) deadlines for clocks started at `started_at`:
    known before the tip is inserted, so it is inserted with them."""
    calendar = calendar_for(config)
    return (deadline_for("ack", started_at, policy_for(config, category, "ack"), calendar),
            deadline_for("outcome", started_at, policy_for(config, category, "outcome"), calendar))


def plan_clocks(session: Session, config: Config, tip: Tip, not_before: datetime) -> None:
    """Plan the reminders and escalations of the tip's two deadlines, as they stand."""
    steps = [(step, deadline)
             for kind, deadline in (("ack", tip.ack_due_at), ("outcome", tip.outcome_due_at))
             if deadline is not None
             for step in steps_for_deadline(kind, deadline, policy_for(config, tip.category, kind), not_before)]
    _store(session, steps, f"tip:{tip.id}", tip_id=tip.id)


def start_clocks(session: Session, config: Config, tip: Tip, started_at: datetime) -> None:
    """Both deadlines from `started_at` (a tip routed anew), and their plans."""
    tip.ack_due_at, tip.outcome_due_at = clocks(config, tip.category, started_at)
    plan_clocks(session, config, tip, started_at)


def plan(session: Session, config: Config, tip: Tip, kind: Kind, deadline: datetime, not_before: datetime) -> None:
    if kind == "ack":
        tip.ack_due_at = deadline
    else:
        tip.outcome_due_at = deadline
    steps = steps_for_deadline(kind, deadline, policy_for(config, tip.category, kind), not_before)
    _store(session, [(step, deadline) for step in steps], f"tip:{tip.id}", tip_id=tip.id)


def cancel(session: Session, now: datetime, *, tip_id: int | None = None, action_id: int | None = None,
           kind: str | None = None) -> int:
    """Open steps that no longer apply (acknowledged, closed, extended, reassigned)."""
    query = update(DueStep).where(DueStep.done_at.is_(None), DueStep.cancelled_at.is_(None))
    if tip_id is not None:
        query = query.where(DueStep.tip_id == tip_id)
    if action_id is not None:
        query = query.where(DueStep.action_id == action_id)
    if kind is not None:
        query = query.where(DueStep.deadline_kind == kind)
    return session.execute(query.values(cancelled_at=now)).rowcount or 0


def extend(session: Session, config: Config, tip: Tip, kind: Kind, by: timedelta, now: datetime) -> datetime:
    """Move a deadline later (working time); the old plan is cancelled, a new one made."""
    current = tip.ack_due_at if kind == "ack" else tip.outcome_due_at
    base = max(current, now) if current is not None else now
    deadline = extend_deadline(base, by, calendar_for(config))
    cancel(session, now, tip_id=tip.id, kind=kind)
    plan(session, config, tip, kind, deadline, now)
    return deadline


def plan_action(session: Session, config: Config, action: RequiredAction, now: datetime) -> datetime:
    """A self-criticism or rectification report falls due `action_days` after the breach."""
    d = config.deadlines
    deadline = now + timedelta(days=d.action_days)
    action.due_at = deadline
    policy = DeadlinePolicy(ack=timedelta(days=d.action_days), outcome=timedelta(days=d.action_days),
                            reminders_before=tuple(timedelta(minutes=m) for m in d.action_reminder_minutes_before))
    steps = steps_for_deadline("outcome", deadline, policy, now)  # same shape: reminders, then escalation
    _store(session, [(step, deadline) for step in steps], f"action:{action.id}", action_id=action.id, kind="action")
    return deadline


def claim_one(session: Session, now: datetime, exclude: Iterable[int] = ()) -> DueStep | None:
    """The earliest open step that is due (but those in `exclude`: failed in this sweep),
    locked for this transaction."""
    query = (
        select(DueStep)
        .where(DueStep.done_at.is_(None), DueStep.cancelled_at.is_(None), DueStep.due_at <= now)
        .order_by(DueStep.due_at, DueStep.id)
        .limit(1)
    )
    exclude = list(exclude)
    if exclude:
        query = query.where(DueStep.id.not_in(exclude))
    if is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    return session.scalar(query)
