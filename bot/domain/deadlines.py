"""Deadline policies and the reminder/escalation steps they produce.

Two deadlines exist per case: ``ack`` (a team must acknowledge a routed
tip) and ``outcome`` (it must record a result). Each deadline yields a
plan of steps: reminders before the deadline, then an escalation at it.
The planner is pure; a scheduler stores the steps and fires those due.

Idempotency: every step carries a ``token``
``"{kind}:{step}:{index}:{deadline in UTC, ISO 8601}"``. Storing steps
under a unique index on (case id, token) lets the same plan be inserted
any number of times (retries, restarts) while creating each step once.
Extending a deadline changes the deadline part of the token, so the new
plan gets new rows and the old ones can be cancelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Final, Literal, get_args

from bot.domain.calendar import Calendar, require_aware

__all__ = [
    "DeadlineKind",
    "DeadlinePolicies",
    "DeadlinePolicy",
    "Step",
    "StepKind",
    "deadline_for",
    "due_steps",
    "extend",
    "plan_steps",
    "steps_for_deadline",
]

DeadlineKind = Literal["ack", "outcome"]
StepKind = Literal["remind", "escalate"]

_KINDS: Final = frozenset(get_args(DeadlineKind))
_STEP_ORDER: Final = {"remind": 0, "escalate": 1}
_ZERO: Final = timedelta(0)


@dataclass(frozen=True)
class DeadlinePolicy:
    """How long a team has, in working time, and when to remind it.

    ``reminders_before`` are offsets before each deadline (the same offsets
    are used for the ack and the outcome deadline). They are normalised to
    descending order (earliest reminder first), so a reminder's index is
    stable whatever order the config lists them in.
    """

    ack: timedelta
    outcome: timedelta
    reminders_before: tuple[timedelta, ...] = ()

    def __post_init__(self) -> None:
        for name in ("ack", "outcome"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value <= _ZERO:
                raise ValueError(f"{name} must be a positive timedelta, got {value!r}")
        offsets = tuple(self.reminders_before)
        for offset in offsets:
            if not isinstance(offset, timedelta) or offset <= _ZERO:
                raise ValueError(f"reminder offsets must be positive timedeltas, got {offset!r}")
        if len(set(offsets)) != len(offsets):
            raise ValueError(f"duplicate reminder offsets: {offsets}")
        object.__setattr__(self, "reminders_before", tuple(sorted(offsets, reverse=True)))

    def duration(self, kind: DeadlineKind) -> timedelta:
        """Working time allowed for ``kind``."""
        _require_kind(kind)
        return self.ack if kind == "ack" else self.outcome


@dataclass(frozen=True)
class DeadlinePolicies:
    """A default policy plus overrides per breach category key."""

    default: DeadlinePolicy
    per_category: Mapping[str, DeadlinePolicy] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Copy into a read-only view so a caller mutating its dict later
        # cannot change a frozen policy set.
        object.__setattr__(self, "per_category", MappingProxyType(dict(self.per_category)))

    def policy_for(self, category_key: str | None) -> DeadlinePolicy:
        """The category's override, else the default."""
        if category_key is None:
            return self.default
        return self.per_category.get(category_key, self.default)


@dataclass(frozen=True)
class Step:
    """One scheduled action: remind the team, or escalate at the deadline."""

    kind: DeadlineKind
    step: StepKind
    index: int
    due_at: datetime
    token: str


def _require_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise ValueError(f"deadline kind must be one of {sorted(_KINDS)}, got {kind!r}")


def _token(kind: str, step: str, index: int, deadline: datetime) -> str:
    # UTC so the same instant gives the same token whatever tz the caller used.
    return f"{kind}:{step}:{index}:{deadline.astimezone(UTC).isoformat()}"


def deadline_for(
    kind: DeadlineKind, started_at: datetime, policy: DeadlinePolicy, calendar: Calendar
) -> datetime:
    """The deadline: ``started_at`` plus the policy's working time for ``kind``."""
    require_aware(started_at, "started_at")
    return calendar.add_working_time(started_at, policy.duration(kind))


def steps_for_deadline(
    kind: DeadlineKind, deadline: datetime, policy: DeadlinePolicy, not_before: datetime
) -> list[Step]:
    """Steps for a known deadline, dropping reminders before ``not_before``.

    A reminder is due at the wall time ``deadline - offset`` (elapsed time,
    not working time: a reminder may fire outside office hours, which is
    when a team most needs it). ``not_before`` is the start of the clock,
    or the moment of an extension when re-planning.
    """
    _require_kind(kind)
    require_aware(deadline, "deadline")
    require_aware(not_before, "not_before")
    out_tz = deadline.tzinfo
    deadline_utc = deadline.astimezone(UTC)
    floor = not_before.astimezone(UTC)
    steps: list[Step] = []
    for index, offset in enumerate(policy.reminders_before):
        due = deadline_utc - offset
        if due < floor:
            continue
        token = _token(kind, "remind", index, deadline)
        steps.append(Step(kind, "remind", index, due.astimezone(out_tz), token))
    steps.append(Step(kind, "escalate", 0, deadline, _token(kind, "escalate", 0, deadline)))
    return steps


def plan_steps(
    kind: DeadlineKind, started_at: datetime, policy: DeadlinePolicy, calendar: Calendar
) -> list[Step]:
    """Reminders then the escalation for a clock starting at ``started_at``.

    Returned in due order, in the time zone of ``started_at``.
    """
    deadline = deadline_for(kind, started_at, policy, calendar)
    return steps_for_deadline(kind, deadline, policy, started_at)


def due_steps(steps: Iterable[Step], now: datetime) -> list[Step]:
    """Steps with ``due_at <= now``, earliest first (a remind before an escalate on ties)."""
    require_aware(now, "now")
    due = [s for s in steps if s.due_at <= now]
    return sorted(due, key=lambda s: (s.due_at.astimezone(UTC), _STEP_ORDER[s.step], s.index))


def extend(deadline: datetime, by: timedelta, calendar: Calendar) -> datetime:
    """A deadline moved later by ``by`` of working time (counted from the old deadline)."""
    require_aware(deadline, "deadline")
    if not isinstance(by, timedelta) or by <= _ZERO:
        raise ValueError(f"extension must be a positive timedelta, got {by!r}")
    return calendar.add_working_time(deadline, by)
