"""A tipster back with a receipt code: the tip's public timeline, and more information."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.clock import to_minute
from bot.deps import Deps
from bot.domain.lifecycle import is_closed
from bot.drafts import EvidenceItem
from bot.services import delivery, outbox
from bot.services.views import EvidenceView, add_event
from bot.security import Keyring
from storage.models import Evidence, Question, Tip, TipAddition


def find_tip(session: Session, receipt_hash: str) -> Tip | None:
    return session.scalar(select(Tip).where(Tip.receipt_hash == receipt_hash))


PUBLIC_DETAIL = {"closed"}  # events whose detail the tipster may read (the outcome)


def public_timeline(tip: Tip, keyring: Keyring) -> list[tuple[datetime, str, int | None, str | None]]:
    """What the tipster may see: public events only, never a staff member's name; the
    detail only of events whose detail is public (how the case closed)."""
    return [
        (e.at, e.kind, e.team_number, keyring.decrypt_opt(e.detail_enc) if e.kind in PUBLIC_DETAIL else None)
        for e in tip.events
        if e.public
    ]


def open_questions(session: Session, keyring: Keyring, tip_id: int) -> list[tuple[int, str]]:
    """Every question to the tipster not answered yet, oldest first: (id, text)."""
    questions = session.scalars(
        select(Question).where(Question.tip_id == tip_id, Question.answered_at.is_(None)).order_by(Question.id)
    )
    return [(q.id, keyring.decrypt(q.text_enc)) for q in questions]


def add_information(
    session: Session,
    deps: Deps,
    tip_id: int,
    texts: Sequence[str],
    evidence: Sequence[EvidenceItem],
    now: datetime,
    question_id: int | None = None,
) -> bool:
    """Attach what the tipster added (maybe an answer to the team's question) and send it
    to the team. False if the case is closed. Stamped to the minute (bot.clock.to_minute)."""
    now = to_minute(now)
    tip = session.get(Tip, tip_id)
    if tip is None or is_closed(tip.state):
        return False
    k = deps.keyring
    text = "\n\n".join(t for t in texts if t.strip()) or None
    question = session.get(Question, question_id) if question_id is not None else None
    if question is not None and (question.tip_id != tip.id or question.answered_at is not None):
        question = None
    if question is not None:
        question.answered_at = now
    addition = TipAddition(tip_id=tip.id, text_enc=k.encrypt_opt(text), added_at=now,
                           question_id=question.id if question else None)
    session.add(addition)
    session.flush()
    items = []
    for item in evidence:
        row = Evidence(tip_id=tip.id, addition_id=addition.id, kind=item.kind, file_ref_enc=k.encrypt(item.file_id),
                       caption_enc=k.encrypt_opt(item.caption), added_at=now)
        session.add(row)
        session.flush()
        items.append(EvidenceView(row.id, item.kind, item.file_id, item.caption))
    add_event(session, k, tip, now, "answered" if question else "info_added", team_number=tip.team_number)
    asked = k.decrypt(question.text_enc) if question else None
    for target in delivery.team_targets(session, deps, tip.team_number):
        card = delivery.latest_card_row(session, tip.id, target.chat_id)
        key = f"tip:{tip.id}:addition:{addition.id}:chat:{target.chat_id}"
        notice = deps.texts.render(target.lang, "addition", tip_id=tip.id, text=text, evidence_count=len(items),
                                   question=asked)
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
