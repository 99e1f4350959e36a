"""A tipster back with a receipt code: the tip's public timeline, and more information."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.deps import Deps
from bot.domain.lifecycle import is_closed
from bot.drafts import EvidenceItem
from bot.services import delivery, outbox
from bot.services.views import EvidenceView, add_event
from storage.models import Evidence, Tip, TipAddition


def find_tip(session: Session, receipt_hash: str) -> Tip | None:
    return session.scalar(select(Tip).where(Tip.receipt_hash == receipt_hash))


def public_timeline(tip: Tip) -> list[tuple[datetime, str, int | None]]:
    """What the tipster may see: public events only, never a staff member's name."""
    return [(e.at, e.kind, e.team_number) for e in tip.events if e.public]


def add_information(
    session: Session,
    deps: Deps,
    tip_id: int,
    texts: Sequence[str],
    evidence: Sequence[EvidenceItem],
    now: datetime,
) -> bool:
    """Attach what the tipster added and send it to the team. False if the case is closed."""
    tip = session.get(Tip, tip_id)
    if tip is None or is_closed(tip.state):
        return False
    k = deps.keyring
    text = "\n\n".join(t for t in texts if t.strip()) or None
    addition = TipAddition(tip_id=tip.id, text_enc=k.encrypt_opt(text), added_at=now)
    session.add(addition)
    session.flush()
    items = []
    for item in evidence:
        row = Evidence(tip_id=tip.id, addition_id=addition.id, kind=item.kind, file_ref_enc=k.encrypt(item.file_id),
                       caption_enc=k.encrypt_opt(item.caption), added_at=now)
        session.add(row)
        session.flush()
        items.append(EvidenceView(row.id, item.kind, item.file_id, item.caption))
    add_event(session, k, tip, now, "info_added", team_number=tip.team_number)
    for target in delivery.team_targets(session, deps, tip.team_number):
        card = delivery.latest_card_row(session, tip.id, target.chat_id)
        key = f"tip:{tip.id}:addition:{addition.id}:chat:{target.chat_id}"
        notice = deps.texts.render(target.lang, "addition", tip_id=tip.id, text=text, evidence_count=len(items))
        parts = delivery.split_html(notice)
        first = None
        for i, part in enumerate(parts):
            row = outbox.enqueue(
                session, k, now, dedupe_key=f"{key}:text:{i}", chat_id=target.chat_id, method="send_message",
                payload={"text": part, "reply_to_outbox": card}, purpose="addition", tip_id=tip.id,
            )
            first = first or row.id
        delivery.enqueue_evidence(session, deps, tip.id, tuple(items), now, target, key, first)
    return True
