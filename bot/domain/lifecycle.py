"""Case state machine: which action is allowed in which state.

Kept as one explicit table so that the buttons a card shows
(``allowed_actions``) and the checks done when a button is pressed
(``transition``) can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

__all__ = [
    "CLOSED_STATES",
    "PUBLIC_STATES",
    "CaseAction",
    "CaseState",
    "IllegalTransition",
    "Outcome",
    "allowed_actions",
    "is_closed",
    "outcome_of",
    "public_state",
    "transition",
]


class CaseState(StrEnum):
    """Where a case stands; the values are stored in the database."""

    RECEIVED = "received"
    ROUTED = "routed"
    ACKNOWLEDGED = "acknowledged"
    INVESTIGATING = "investigating"
    CLOSED_VERIFIED = "closed_verified"
    CLOSED_UNFOUNDED = "closed_unfounded"
    CLOSED_TRANSFERRED = "closed_transferred"


class CaseAction(StrEnum):
    """Something a team (or the tipster, for ``add_info``) does to a case."""

    ROUTE = "route"
    ACKNOWLEDGE = "acknowledge"
    ASK = "ask"
    REASSIGN = "reassign"
    RECORD_OUTCOME = "record_outcome"
    EXTEND = "extend"
    ADD_INFO = "add_info"


class Outcome(StrEnum):
    """The result an inspection team records when it closes a case."""

    VERIFIED = "verified"
    UNFOUNDED = "unfounded"
    TRANSFERRED = "transferred"


class IllegalTransition(ValueError):
    """Raised when an action is not allowed in a state.

    A ValueError subclass so callers that validate input generically still
    catch it; ``state`` and ``action`` are kept for logging and messages.
    """

    def __init__(self, state: CaseState, action: CaseAction) -> None:
        self.state = state
        self.action = action
        if state in CLOSED_STATES:
            detail = "the case is closed and final"
        else:
            allowed = ", ".join(sorted(allowed_actions(state))) or "none"
            detail = f"allowed actions: {allowed}"
        super().__init__(f"cannot {action.value} a case in state {state.value} ({detail})")


CLOSED_STATES: Final[frozenset[CaseState]] = frozenset(
    {CaseState.CLOSED_VERIFIED, CaseState.CLOSED_UNFOUNDED, CaseState.CLOSED_TRANSFERRED}
)

_OUTCOME_STATE: Final[Mapping[Outcome, CaseState]] = MappingProxyType(
    {
        Outcome.VERIFIED: CaseState.CLOSED_VERIFIED,
        Outcome.UNFOUNDED: CaseState.CLOSED_UNFOUNDED,
        Outcome.TRANSFERRED: CaseState.CLOSED_TRANSFERRED,
    }
)

# None as a target means "depends on the outcome" (record_outcome only).
_R, _RT, _A, _I = (
    CaseState.RECEIVED,
    CaseState.ROUTED,
    CaseState.ACKNOWLEDGED,
    CaseState.INVESTIGATING,
)
_TABLE: Final[Mapping[CaseState, Mapping[CaseAction, CaseState | None]]] = MappingProxyType(
    {
        _R: {CaseAction.ROUTE: _RT, CaseAction.ADD_INFO: _R},
        _RT: {
            CaseAction.ACKNOWLEDGE: _A,
            CaseAction.REASSIGN: _RT,
            CaseAction.EXTEND: _RT,
            CaseAction.ADD_INFO: _RT,
        },
        _A: {
            CaseAction.ASK: _I,
            CaseAction.RECORD_OUTCOME: None,
            CaseAction.REASSIGN: _RT,
            CaseAction.EXTEND: _A,
            CaseAction.ADD_INFO: _A,
        },
        _I: {
            CaseAction.ASK: _I,
            CaseAction.RECORD_OUTCOME: None,
            CaseAction.REASSIGN: _RT,
            CaseAction.EXTEND: _I,
            CaseAction.ADD_INFO: _I,
        },
        CaseState.CLOSED_VERIFIED: {},
        CaseState.CLOSED_UNFOUNDED: {},
        CaseState.CLOSED_TRANSFERRED: {},
    }
)

PUBLIC_STATES: Final[Mapping[CaseState, str]] = MappingProxyType(
    {
        CaseState.RECEIVED: "received",
        CaseState.ROUTED: "routed",
        CaseState.ACKNOWLEDGED: "acknowledged",
        CaseState.INVESTIGATING: "investigating",
        CaseState.CLOSED_VERIFIED: "verified",
        CaseState.CLOSED_UNFOUNDED: "unfounded",
        CaseState.CLOSED_TRANSFERRED: "transferred",
    }
)
"""State -> key of the short status text a tipster may see (template key)."""


def transition(
    state: CaseState | str, action: CaseAction | str, outcome: Outcome | str | None = None
) -> CaseState:
    """Return the state after ``action``; raise IllegalTransition if not allowed.

    Accepts plain strings too, since states come back from the database as
    text. ``outcome`` is required for ``record_outcome`` and refused for any
    other action (a plain ValueError: that is a programming error, not a
    user pressing a stale button).
    """
    state = CaseState(state)
    action = CaseAction(action)
    targets = _TABLE[state]
    if action not in targets:
        raise IllegalTransition(state, action)
    target = targets[action]
    if target is None:
        if outcome is None:
            raise ValueError("record_outcome needs an outcome")
        return _OUTCOME_STATE[Outcome(outcome)]
    if outcome is not None:
        raise ValueError(f"{action.value} does not take an outcome")
    return target


def allowed_actions(state: CaseState | str) -> frozenset[CaseAction]:
    """Actions allowed in ``state`` (decides which buttons a card shows)."""
    return frozenset(_TABLE[CaseState(state)])


def is_closed(state: CaseState | str) -> bool:
    """True for the closed states; a closed case is final."""
    return CaseState(state) in CLOSED_STATES


def outcome_of(state: CaseState | str) -> Outcome | None:
    """The outcome a closed state records, None for an open case."""
    state = CaseState(state)
    for outcome, closed in _OUTCOME_STATE.items():
        if closed is state:
            return outcome
    return None


def public_state(state: CaseState | str) -> str:
    """The public status key for ``state`` (see PUBLIC_STATES)."""
    return PUBLIC_STATES[CaseState(state)]
