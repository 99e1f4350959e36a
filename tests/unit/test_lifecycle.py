"""Case state machine: every (state, action) pair, legal or not."""

from __future__ import annotations

import itertools

import pytest

from bot.domain.lifecycle import (
    CLOSED_STATES,
    PUBLIC_STATES,
    CaseAction,
    CaseState,
    IllegalTransition,
    Outcome,
    allowed_actions,
    is_closed,
    outcome_of,
    public_state,
    transition,
)

S = CaseState
A = CaseAction

# Written out independently of the implementation's table on purpose.
LEGAL: dict[tuple[CaseState, CaseAction], CaseState] = {
    (S.RECEIVED, A.ROUTE): S.ROUTED,
    (S.RECEIVED, A.ADD_INFO): S.RECEIVED,
    (S.ROUTED, A.ACKNOWLEDGE): S.ACKNOWLEDGED,
    (S.ROUTED, A.REASSIGN): S.ROUTED,
    (S.ROUTED, A.EXTEND): S.ROUTED,
    (S.ROUTED, A.ADD_INFO): S.ROUTED,
    (S.ACKNOWLEDGED, A.ASK): S.INVESTIGATING,
    (S.ACKNOWLEDGED, A.REASSIGN): S.ROUTED,
    (S.ACKNOWLEDGED, A.EXTEND): S.ACKNOWLEDGED,
    (S.ACKNOWLEDGED, A.ADD_INFO): S.ACKNOWLEDGED,
    (S.INVESTIGATING, A.ASK): S.INVESTIGATING,
    (S.INVESTIGATING, A.REASSIGN): S.ROUTED,
    (S.INVESTIGATING, A.EXTEND): S.INVESTIGATING,
    (S.INVESTIGATING, A.ADD_INFO): S.INVESTIGATING,
}
OUTCOME_STATES = {
    Outcome.VERIFIED: S.CLOSED_VERIFIED,
    Outcome.UNFOUNDED: S.CLOSED_UNFOUNDED,
    Outcome.TRANSFERRED: S.CLOSED_TRANSFERRED,
}
CAN_RECORD_OUTCOME = {S.ACKNOWLEDGED, S.INVESTIGATING}

ALL_PAIRS = list(itertools.product(CaseState, CaseAction))
ILLEGAL = [
    (s, a)
    for s, a in ALL_PAIRS
    if (s, a) not in LEGAL and not (a is A.RECORD_OUTCOME and s in CAN_RECORD_OUTCOME)
]


def test_enum_values_are_the_stored_strings() -> None:
    assert [s.value for s in CaseState] == [
        "received",
        "routed",
        "acknowledged",
        "investigating",
        "closed_verified",
        "closed_unfounded",
        "closed_transferred",
    ]
    assert {a.value for a in CaseAction} == {
        "route",
        "acknowledge",
        "ask",
        "reassign",
        "record_outcome",
        "extend",
        "add_info",
    }
    assert {o.value for o in Outcome} == {"verified", "unfounded", "transferred"}


@pytest.mark.parametrize(("state", "action"), list(LEGAL), ids=lambda v: str(v))
def test_legal_transition(state: CaseState, action: CaseAction) -> None:
    assert transition(state, action) is LEGAL[(state, action)]


@pytest.mark.parametrize("state", sorted(CAN_RECORD_OUTCOME))
@pytest.mark.parametrize("outcome", list(Outcome))
def test_record_outcome_closes_per_outcome(state: CaseState, outcome: Outcome) -> None:
    result = transition(state, A.RECORD_OUTCOME, outcome)
    assert result is OUTCOME_STATES[outcome]
    assert is_closed(result)


@pytest.mark.parametrize(("state", "action"), ILLEGAL, ids=lambda v: str(v))
def test_illegal_transition(state: CaseState, action: CaseAction) -> None:
    outcome = Outcome.VERIFIED if action is A.RECORD_OUTCOME else None
    with pytest.raises(IllegalTransition) as info:
        transition(state, action, outcome)
    assert info.value.state is state
    assert info.value.action is action
    assert isinstance(info.value, ValueError)
    assert state.value in str(info.value) and action.value in str(info.value)


def test_illegal_count_matches_table() -> None:
    # 7 states x 7 actions = 49; 14 plain legal + 2 record_outcome states.
    assert len(ALL_PAIRS) == 49
    assert len(ILLEGAL) == 49 - 14 - 2


@pytest.mark.parametrize("state", sorted(CLOSED_STATES))
@pytest.mark.parametrize("action", list(CaseAction))
def test_closed_cases_are_final(state: CaseState, action: CaseAction) -> None:
    with pytest.raises(IllegalTransition, match="closed"):
        transition(state, action, Outcome.VERIFIED if action is A.RECORD_OUTCOME else None)


def test_closed_state_message_is_readable() -> None:
    with pytest.raises(IllegalTransition) as info:
        transition(S.CLOSED_VERIFIED, A.ADD_INFO)
    assert str(info.value) == (
        "cannot add_info a case in state closed_verified (the case is closed and final)"
    )


def test_open_state_message_lists_allowed_actions() -> None:
    with pytest.raises(IllegalTransition) as info:
        transition(S.RECEIVED, A.ACKNOWLEDGE)
    assert "allowed actions: add_info, route" in str(info.value)


def test_record_outcome_requires_outcome() -> None:
    with pytest.raises(ValueError, match="needs an outcome") as info:
        transition(S.ACKNOWLEDGED, A.RECORD_OUTCOME)
    assert not isinstance(info.value, IllegalTransition)


def test_record_outcome_on_closed_case_is_illegal_even_without_outcome() -> None:
    with pytest.raises(IllegalTransition):
        transition(S.CLOSED_UNFOUNDED, A.RECORD_OUTCOME)


def test_outcome_refused_for_other_actions() -> None:
    with pytest.raises(ValueError, match="does not take an outcome"):
        transition(S.ROUTED, A.ACKNOWLEDGE, Outcome.VERIFIED)


def test_accepts_database_strings() -> None:
    assert transition("acknowledged", "record_outcome", "unfounded") is S.CLOSED_UNFOUNDED
    assert transition("received", "route") is S.ROUTED
    with pytest.raises(ValueError):
        transition("archived", "route")
    with pytest.raises(ValueError):
        transition("received", "delete")


def test_reassign_requires_new_acknowledgement() -> None:
    state = transition(S.INVESTIGATING, A.REASSIGN)
    assert state is S.ROUTED
    assert A.ACKNOWLEDGE in allowed_actions(state)
    assert A.ASK not in allowed_actions(state)
    assert A.RECORD_OUTCOME not in allowed_actions(state)


def test_full_happy_path() -> None:
    state = S.RECEIVED
    for action in (A.ROUTE, A.ACKNOWLEDGE, A.ASK, A.ADD_INFO, A.ASK, A.EXTEND):
        state = transition(state, action)
    assert state is S.INVESTIGATING
    assert transition(state, A.RECORD_OUTCOME, Outcome.TRANSFERRED) is S.CLOSED_TRANSFERRED


@pytest.mark.parametrize("state", list(CaseState))
def test_allowed_actions_agree_with_transition(state: CaseState) -> None:
    expected = {a for (s, a) in LEGAL if s is state}
    if state in CAN_RECORD_OUTCOME:
        expected.add(A.RECORD_OUTCOME)
    assert allowed_actions(state) == frozenset(expected)
    assert isinstance(allowed_actions(state), frozenset)


def test_allowed_actions_spot_checks() -> None:
    assert allowed_actions(S.RECEIVED) == {A.ROUTE, A.ADD_INFO}
    assert allowed_actions(S.CLOSED_TRANSFERRED) == frozenset()
    assert allowed_actions("routed") == {A.ACKNOWLEDGE, A.REASSIGN, A.EXTEND, A.ADD_INFO}


def test_is_closed() -> None:
    assert {s for s in CaseState if is_closed(s)} == {
        S.CLOSED_VERIFIED,
        S.CLOSED_UNFOUNDED,
        S.CLOSED_TRANSFERRED,
    }
    assert is_closed("closed_verified")
    assert not is_closed("investigating")


def test_outcome_of() -> None:
    assert outcome_of(S.CLOSED_VERIFIED) is Outcome.VERIFIED
    assert outcome_of(S.CLOSED_UNFOUNDED) is Outcome.UNFOUNDED
    assert outcome_of(S.CLOSED_TRANSFERRED) is Outcome.TRANSFERRED
    assert outcome_of(S.INVESTIGATING) is None


def test_public_states_cover_every_state_with_distinct_keys() -> None:
    assert set(PUBLIC_STATES) == set(CaseState)
    assert len(set(PUBLIC_STATES.values())) == len(CaseState)
    assert PUBLIC_STATES[S.ROUTED] == "routed"
    assert public_state("closed_verified") == "verified"
    assert all(key and key.isascii() and key.islower() for key in PUBLIC_STATES.values())


def test_public_states_is_read_only() -> None:
    with pytest.raises(TypeError):
        PUBLIC_STATES[S.ROUTED] = "x"  # type: ignore[index]
