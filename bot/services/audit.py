"""The audit trail: every staff view and action on a tip (who, what, when)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import AuditEntry


def record(session: Session, *, staff_id: int | None, tip_id: int | None, action: str, detail: str | None,
           at: datetime) -> None:
    session.add(AuditEntry(at=at, staff_id=staff_id, tip_id=tip_id, action=action,
                           detail=detail[:512] if detail else None))


def trail(session: Session, tip_id: int) -> list[AuditEntry]:
    return list(session.scalars(select(AuditEntry).where(AuditEntry.tip_id == tip_id).order_by(AuditEntry.id)))
