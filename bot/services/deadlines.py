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

from sqlalchemy import select, update
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


def _store(session: Session, steps: Iterable[Step], prefix: str, deadline: datetime, *,
           tip_id: int | None = None, action_id: int | None = None, kind: str) -> None:
    for step in steps:
        token = f"{prefix}:{step.token}"
        if session.scalar(select(DueStep.id).where(DueStep.token == token)) is not None:
            continue  # planned already (idempotent)
        session.add(DueStep(token=token, tip_id=tip_id, action_id=action_id, deadline_kind=kind, step=step.step,
                            idx=step.index, due_at=step.due_at, deadline=deadline))
    session.flush()


def start_clock(session: Session, config: Config, tip: Tip, kind: Kind, started_at: datetime) -> datetime:
    """Set the tip's `kind` deadline from `started_at` and plan its reminders and escalation."""
    policy = policy_for(config, tip.category, kind)
    deadline = deadline_for(kind, started_at, policy, calendar_for(config))
    plan(session, config, tip, kind, deadline, started_at)
    return deadline


def plan(session: Session, config: Config, tip: Tip, kind: Kind, deadline: datetime, not_before: datetime) -> None:
    if kind == "ack":
        tip.ack_due_at = deadline
    else:
        tip.outcome_due_at = deadline
    steps = steps_for_deadline(kind, deadline, policy_for(config, tip.category, kind), not_before)
    _store(session, steps, f"tip:{tip.id}", deadline, tip_id=tip.id, kind=kind)


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
    _store(session, steps, f"action:{action.id}", deadline, action_id=action.id, kind="action")
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
