"""The audit trail: every staff view of and action on a tip, who did it and when.

`record` adds a row to the caller's transaction (it never commits), so an action and its
audit entry are stored together or not at all. Staff are not anonymous; tipsters never
appear here (there is nothing about them to record). `staff_id` is None for what the
office does from the shell (`detail` then starts with "cli"). `detail` never holds
content; free text an action quotes (a reassign or extension reason, where a case was
transferred to) is `quote`, stored encrypted with the data key.

Actions in use: acknowledged, joined, bound, entered, viewed_audit, exported (and the
workflow's ask, reassign, outcome, extend, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from bot.security import Keyring
from storage.db import is_postgres
from storage.models import AuditEntry, Staff

ACTION_MAX = 32
DETAIL_MAX = 512


@dataclass(frozen=True, slots=True)
class TrailEntry:
    at: datetime
    staff_id: int | None
    staff_name: str | None  # None: the CLI (or a person no longer registered)
    staff_role: str | None
    action: str
    detail: str | None
    quote: str | None = None

    @property
    def who(self) -> str:
        if self.staff_id is None:
            return "cli" if (self.detail or "").startswith("cli") else "not registered"
        return f"{self.staff_name or '?'} ({self.staff_role or '?'})"


def _checked(action: str, detail: str | None, at: datetime) -> str | None:
    """Refuse a bad action or a naive time; return the detail, shortened to fit its column."""
    if not action or len(action) > ACTION_MAX:
        raise ValueError(f"an audit action is 1 to {ACTION_MAX} characters: {action!r}")
    if at.tzinfo is None:
        raise ValueError("audit times are timezone-aware")
    if detail is not None and len(detail) > DETAIL_MAX:
        return detail[: DETAIL_MAX - 1] + "…"
    return detail


def record(
    session: Session,
    *,
    staff_id: int | None,
    tip_id: int | None,
    action: str,
    detail: str | None,
    at: datetime,
    quote: str | None = None,
    keyring: Keyring | None = None,
) -> None:
    """Add one audit entry to the session's transaction (the caller commits)."""
    detail = _checked(action, detail, at)
    if quote is not None and keyring is None:
        raise ValueError("an audit entry that quotes content needs the keyring to encrypt it")
    quote_enc = keyring.encrypt(quote) if quote is not None and keyring is not None else None
    session.add(AuditEntry(at=at, staff_id=staff_id, tip_id=tip_id, action=action, detail=detail,
                           quote_enc=quote_enc))


def record_many(session: Session, *, staff_id: int | None, tip_ids: list[int], action: str, detail: str | None,
                at: datetime) -> None:
    """The same entry for many tips, in one INSERT that the session does not keep (an
    export with content of a million tips writes a million entries, batch by batch)."""
    if not tip_ids:
        return
    detail = _checked(action, detail, at)
    if is_postgres(session):
        # The ids as one array, unnested by the server: 100,000 entries as rows of five
        # parameters each took 2.2-2.9 s, as arrays of 500 ids 0.9-1.3 s.
        c = AuditEntry.__table__.c
        rows = select(bindparam("at", at, type_=c.at.type), bindparam("staff_id", staff_id, type_=c.staff_id.type),
                      func.unnest(bindparam("tip_ids", list(tip_ids), type_=ARRAY(c.tip_id.type))),
                      bindparam("action", action, type_=c.action.type),
                      bindparam("detail", detail, type_=c.detail.type))
        session.execute(insert(AuditEntry).from_select(["at", "staff_id", "tip_id", "action", "detail"], rows))
        return
    session.execute(insert(AuditEntry), [{"at": at, "staff_id": staff_id, "tip_id": t, "action": action,
                                          "detail": detail} for t in tip_ids])


def trail(session: Session, tip_id: int, keyring: Keyring | None = None) -> list[TrailEntry]:
    """The tip's audit entries, oldest first, with the staff member's name and role."""
    rows = session.execute(
        select(AuditEntry, Staff.display_name, Staff.role)
        .outerjoin(Staff, Staff.id == AuditEntry.staff_id)
        .where(AuditEntry.tip_id == tip_id)
        .order_by(AuditEntry.at, AuditEntry.id)
    ).all()
    return [TrailEntry(e.at, e.staff_id, name, role, e.action, e.detail,
                       keyring.decrypt_opt(e.quote_enc) if keyring is not None else None)
            for e, name, role in rows]
