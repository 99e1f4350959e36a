"""Deadline policies, step planning, idempotency tokens and extensions."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.domain.calendar import AlwaysOpen, WorkingCalendar
from bot.domain.deadlines import (
    DeadlinePolicies,
    DeadlinePolicy,
    Step,
    deadline_for,
    due_steps,
    extend,
    plan_steps,
    steps_for_deadline,
)

SH = ZoneInfo("Asia/Shanghai")
H = timedelta(hours=1)
M = timedelta(minutes=1)
CAL = WorkingCalendar(SH, frozenset(range(5)), time(8, 30), time(17, 30), frozenset())
POLICY = DeadlinePolicy(ack=4 * H, outcome=45 * H, reminders_before=(2 * H, 30 * M))


def sh(
    y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0
) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=SH)


# --- policies -----------------------------------------------------------------

def test_reminders_are_normalised_to_earliest_first() -> None:
    policy = DeadlinePolicy(ack=H, outcome=2 * H, reminders_before=(30 * M, 2 * H, 10 * M))
    assert policy.reminders_before == (2 * H, 30 * M, 10 * M)
    assert policy == DeadlinePolicy(ack=H, outcome=2 * H, reminders_before=(10 * M, 2 * H, 30 * M))


def test_policy_duration_by_kind() -> None:
    assert POLICY.duration("ack") == 4 * H
    assert POLICY.duration("outcome") == 45 * H
    with pytest.raises(ValueError, match="kind"):
        POLICY.duration("close")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ack": timedelta(0)}, "ack must be a positive"),
        ({"ack": -H}, "ack must be a positive"),
        ({"outcome": timedelta(0)}, "outcome must be a positive"),
        ({"reminders_before": (H, timedelta(0))}, "positive"),
        ({"reminders_before": (-H,)}, "positive"),
        ({"reminders_before": (H, 2 * H, H)}, "duplicate"),
    ],
)
def test_policy_validation(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"ack": H, "outcome": 2 * H, "reminders_before": ()}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        DeadlinePolicy(**args)  # type: ignore[arg-type]


def test_policy_for_category_override() -> None:
    urgent = DeadlinePolicy(ack=H, outcome=9 * H)
    source = {"bribery": urgent}
    policies = DeadlinePolicies(default=POLICY, per_category=source)
    assert policies.policy_for("bribery") is urgent
    assert policies.policy_for("attitude") is POLICY
    assert policies.policy_for(None) is POLICY
    # A later change to the caller's dict must not leak into the frozen set.
    source["attitude"] = urgent
    assert policies.policy_for("attitude") is POLICY
    with pytest.raises(TypeError):
        policies.per_category["x"] = urgent  # type: ignore[index]


def test_policies_default_has_no_overrides() -> None:
    assert DeadlinePolicies(POLICY).policy_for("bribery") is POLICY


# --- planning -----------------------------------------------------------------

def test_plan_ack_from_friday_evening() -> None:
    steps = plan_steps("ack", sh(2026, 11, 27, 17, 30), POLICY, CAL)
    assert [(s.kind, s.step, s.index, s.due_at) for s in steps] == [
        ("ack", "remind", 0, sh(2026, 11, 30, 10, 30)),
        ("ack", "remind", 1, sh(2026, 11, 30, 12, 0)),
        ("ack", "escalate", 0, sh(2026, 11, 30, 12, 30)),
    ]
    assert [s.token for s in steps] == [
        "ack:remind:0:2026-11-30T04:30:00+00:00",
        "ack:remind:1:2026-11-30T04:30:00+00:00",
        "ack:escalate:0:2026-11-30T04:30:00+00:00",
    ]


def test_plan_outcome_is_multi_day() -> None:
    steps = plan_steps("outcome", sh(2026, 11, 30, 8, 30), POLICY, CAL)
    token = "outcome:escalate:0:2026-12-04T09:30:00+00:00"
    assert steps[-1] == Step("outcome", "escalate", 0, sh(2026, 12, 4, 17, 30), token)
    assert [s.due_at for s in steps[:-1]] == [sh(2026, 12, 4, 15, 30), sh(2026, 12, 4, 17, 0)]


def test_deadline_for() -> None:
    assert deadline_for("ack", sh(2026, 11, 27, 17, 30), POLICY, CAL) == sh(2026, 11, 30, 12, 30)
    assert deadline_for("outcome", sh(2026, 11, 30, 8, 30), POLICY, CAL) == sh(2026, 12, 4, 17, 30)


def test_reminders_before_start_are_dropped_and_keep_their_index() -> None:
    policy = DeadlinePolicy(ack=H, outcome=2 * H, reminders_before=(2 * H, 30 * M))
    steps = plan_steps("ack", sh(2026, 11, 30, 10, 0), policy, CAL)
    assert [(s.step, s.index, s.due_at) for s in steps] == [
        ("remind", 1, sh(2026, 11, 30, 10, 30)),
        ("escalate", 0, sh(2026, 11, 30, 11, 0)),
    ]


def test_reminder_exactly_at_start_is_kept() -> None:
    policy = DeadlinePolicy(ack=2 * H, outcome=3 * H, reminders_before=(2 * H,))
    steps = plan_steps("ack", sh(2026, 11, 30, 10, 0), policy, CAL)
    assert [(s.step, s.due_at) for s in steps] == [
        ("remind", sh(2026, 11, 30, 10, 0)),
        ("escalate", sh(2026, 11, 30, 12, 0)),
    ]


def test_reminder_is_wall_time_before_deadline_even_outside_hours() -> None:
    # Friday 17:00 + 1 h working time = Monday 09:00; 2 h before is Monday
    # 07:00 (wall time, after the start, so kept); 3 days before is Friday
    # 09:00, before the start, so dropped.
    policy = DeadlinePolicy(ack=H, outcome=2 * H, reminders_before=(timedelta(days=3), 2 * H))
    steps = plan_steps("ack", sh(2026, 11, 27, 17, 0), policy, CAL)
    assert [(s.step, s.index, s.due_at) for s in steps] == [
        ("remind", 1, sh(2026, 11, 30, 7, 0)),
        ("escalate", 0, sh(2026, 11, 30, 9, 0)),
    ]


def test_no_reminders_gives_only_escalation() -> None:
    policy = DeadlinePolicy(ack=H, outcome=2 * H)
    steps = plan_steps("outcome", sh(2026, 11, 30, 9, 0), policy, CAL)
    assert [(s.step, s.due_at) for s in steps] == [("escalate", sh(2026, 11, 30, 11, 0))]


def test_steps_are_in_the_start_timezone() -> None:
    start = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)  # Friday 17:30 Shanghai
    steps = plan_steps("ack", start, POLICY, CAL)
    assert all(s.due_at.tzinfo is UTC for s in steps)
    assert steps[-1].due_at == datetime(2026, 11, 30, 4, 30, tzinfo=UTC)


def test_tokens_are_deterministic_and_timezone_independent() -> None:
    local = plan_steps("ack", sh(2026, 11, 27, 17, 30), POLICY, CAL)
    again = plan_steps("ack", sh(2026, 11, 27, 17, 30), POLICY, CAL)
    in_utc = plan_steps("ack", datetime(2026, 11, 27, 9, 30, tzinfo=UTC), POLICY, CAL)
    assert [s.token for s in local] == [s.token for s in again] == [s.token for s in in_utc]
    assert len({s.token for s in local}) == len(local)


def test_tokens_differ_between_kinds() -> None:
    start = sh(2026, 11, 30, 8, 30)
    policy = DeadlinePolicy(ack=4 * H, outcome=4 * H, reminders_before=(H,))
    ack = {s.token for s in plan_steps("ack", start, policy, CAL)}
    outcome = {s.token for s in plan_steps("outcome", start, policy, CAL)}
    assert ack.isdisjoint(outcome)


def test_invalid_kind_and_naive_start_rejected() -> None:
    with pytest.raises(ValueError, match="kind"):
        plan_steps("review", sh(2026, 11, 30, 9, 0), POLICY, CAL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_steps("ack", datetime(2026, 11, 30, 9, 0), POLICY, CAL)
    with pytest.raises(ValueError, match="timezone-aware"):
        steps_for_deadline("ack", datetime(2026, 11, 30, 9, 0), POLICY, sh(2026, 11, 30, 8, 0))


# --- due steps ----------------------------------------------------------------

STEPS = plan_steps("ack", sh(2026, 11, 27, 17, 30), POLICY, CAL)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (sh(2026, 11, 30, 10, 29, 59), []),
        (sh(2026, 11, 30, 10, 30), [("remind", 0)]),
        (sh(2026, 11, 30, 12, 29, 59), [("remind", 0), ("remind", 1)]),
        (sh(2026, 11, 30, 12, 30), [("remind", 0), ("remind", 1), ("escalate", 0)]),
        (datetime(2026, 12, 1, 0, 0, tzinfo=UTC), [("remind", 0), ("remind", 1), ("escalate", 0)]),
    ],
)
def test_due_steps(now: datetime, expected: list[tuple[str, int]]) -> None:
    assert [(s.step, s.index) for s in due_steps(STEPS, now)] == expected


def test_due_steps_sorts_input_and_breaks_ties_remind_first() -> None:
    at = sh(2026, 11, 30, 12, 0)
    escalate = Step("ack", "escalate", 0, at, "a")
    remind = Step("outcome", "remind", 0, at.astimezone(UTC), "b")
    early = Step("outcome", "remind", 1, sh(2026, 11, 30, 9, 0), "c")
    assert due_steps([escalate, remind, early], at) == [early, remind, escalate]


def test_due_steps_rejects_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        due_steps(STEPS, datetime(2026, 11, 30, 12, 0))


# --- extension ----------------------------------------------------------------

def test_extend_counts_working_time_from_old_deadline() -> None:
    assert extend(sh(2026, 11, 30, 12, 30), 4 * H, CAL) == sh(2026, 11, 30, 16, 30)
    assert extend(sh(2026, 11, 27, 17, 0), H, CAL) == sh(2026, 11, 30, 9, 0)
    assert extend(sh(2026, 11, 27, 17, 0), H, AlwaysOpen(SH)) == sh(2026, 11, 27, 18, 0)


@pytest.mark.parametrize("by", [timedelta(0), -H])
def test_extend_rejects_non_positive(by: timedelta) -> None:
    with pytest.raises(ValueError, match="positive"):
        extend(sh(2026, 11, 30, 12, 30), by, CAL)


def test_extend_rejects_naive_deadline() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        extend(datetime(2026, 11, 30, 12, 30), H, CAL)


def test_extended_deadline_gets_new_tokens_and_drops_past_reminders() -> None:
    old = plan_steps("ack", sh(2026, 11, 27, 17, 30), POLICY, CAL)
    old_deadline = old[-1].due_at
    now = sh(2026, 11, 30, 12, 15)  # extension granted shortly before the deadline
    new_deadline = extend(old_deadline, H, CAL)
    new = steps_for_deadline("ack", new_deadline, POLICY, not_before=now)
    assert new_deadline == sh(2026, 11, 30, 13, 30)
    # 2 h before (11:30) is already past at 12:15: dropped.
    assert [(s.step, s.index, s.due_at) for s in new] == [
        ("remind", 1, sh(2026, 11, 30, 13, 0)),
        ("escalate", 0, sh(2026, 11, 30, 13, 30)),
    ]
    assert {s.token for s in new}.isdisjoint({s.token for s in old})
    assert new[-1].token == "ack:escalate:0:2026-11-30T05:30:00+00:00"
