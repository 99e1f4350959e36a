"""Decrypted, read-only views of a tip for rendering (never stored)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.security import Keyring
from storage.models import Evidence, Staff, Tip, TipEvent


@dataclass(frozen=True, slots=True)
class EvidenceView:
    id: int
    kind: str
    file_id: str
    caption: str | None


@dataclass(frozen=True, slots=True)
class EventView:
    at: datetime
    kind: str
    team_number: int | None
    staff_name: str | None
    public: bool
    detail: str | None


@dataclass(frozen=True, slots=True)
class TipView:
    id: int
    channel: str
    category: str
    unit_key: str
    unit_other: str | None
    place: str
    text: str
    state: str
    team_number: int
    route_rule: str
    route_reason: str
    created_at: datetime
    ack_due_at: datetime
    outcome_due_at: datetime | None
    closed_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    evidence: tuple[EvidenceView, ...]
    events: tuple[EventView, ...]


def tip_view(session: Session, keyring: Keyring, tip: Tip) -> TipView:
    staff_ids = {e.staff_id for e in tip.events if e.staff_id} | ({tip.acknowledged_by} if tip.acknowledged_by else set())
    # A new tip names nobody yet: no read (its card is rendered in the Submit's transaction).
    staff_names = dict(session.execute(select(Staff.id, Staff.display_name).where(Staff.id.in_(staff_ids))).all()
                       ) if staff_ids else {}
    return TipView(
        id=tip.id,
        channel=tip.channel,
        category=tip.category,
        unit_key=tip.unit_key,
        unit_other=keyring.decrypt_opt(tip.unit_other_enc),
        place=keyring.decrypt(tip.place_enc),
        text=keyring.decrypt(tip.text_enc),
        state=tip.state,
        team_number=tip.team_number,
        route_rule=tip.route_rule,
        route_reason=tip.route_reason,
        created_at=tip.created_at,
        ack_due_at=tip.ack_due_at,
        outcome_due_at=tip.outcome_due_at,
        closed_at=tip.closed_at,
        acknowledged_at=tip.acknowledged_at,
        acknowledged_by=staff_names.get(tip.acknowledged_by) if tip.acknowledged_by else None,
        evidence=tuple(evidence_view(keyring, e) for e in tip.evidence if e.addition_id is None),
        events=tuple(
            EventView(e.at, e.kind, e.team_number, staff_names.get(e.staff_id), e.public, keyring.decrypt_opt(e.detail_enc))
            for e in tip.events
        ),
    )


def evidence_view(keyring: Keyring, e: Evidence) -> EvidenceView:
    return EvidenceView(e.id, e.kind, keyring.decrypt(e.file_ref_enc), keyring.decrypt_opt(e.caption_enc))


def add_event(
    session: Session,
    keyring: Keyring,
    tip: Tip,
    at: datetime,
    kind: str,
    *,
    team_number: int | None = None,
    staff_id: int | None = None,
    public: bool = True,
    detail: str | None = None,
) -> TipEvent:
    event = TipEvent(
        tip_id=tip.id,
        at=at,
        kind=kind,
        team_number=team_number,
        staff_id=staff_id,
        public=public,
        detail_enc=keyring.encrypt_opt(detail),
    )
    session.add(event)
    return event
