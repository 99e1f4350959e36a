"""Who on a team receives a tip, and the outbox rows that carry it there."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.deps import Deps
from bot.services import outbox
from bot.services.outbox import Button
from bot.services.views import TipView
from bot.splitting import TELEGRAM_CAPTION_LIMIT, TELEGRAM_TEXT_LIMIT, split_html, visible_length
from storage.models import OutboxMessage, Staff, TeamChat

MEDIA_METHOD = {
    "photo": "send_photo",
    "document": "send_document",
    "video": "send_video",
    "voice": "send_voice",
    "audio": "send_audio",
}


@dataclass(frozen=True, slots=True)
class Target:
    chat_id: int
    lang: str


def team_targets(session: Session, deps: Deps, team_number: int) -> list[Target]:
    """The team's bound groups (delivery = "group"), else its leads' private chats."""
    team = deps.config.team(team_number)
    lang = deps.config.campaign.default_language
    if team is not None and team.delivery == "group":
        groups = session.scalars(
            select(TeamChat).where(TeamChat.team_number == team_number, TeamChat.active.is_(True)).order_by(TeamChat.id)
        ).all()
        if groups:
            return [Target(g.chat_id, lang) for g in groups]
    leads = session.scalars(
        select(Staff)
        .where(Staff.team_number == team_number, Staff.role == "lead", Staff.active.is_(True))
        .order_by(Staff.id)
    ).all()
    return [Target(s.telegram_user_id, s.language) for s in leads]


def card_buttons(deps: Deps, lang: str, view: TipView) -> list[list[Button]] | None:
    """The buttons that apply in the tip's state (none once it is closed)."""
    def button(name: str, action: str) -> Button:
        return Button(deps.texts.button(lang, name), deps.keyring.sign(f"{action}:{view.id}"))

    if view.state == "routed":
        return [[button("acknowledge", "ack")], [button("reassign", "rea")]]
    if view.state in ("acknowledged", "investigating"):
        return [[button("ask_tipster", "ask"), button("reassign", "rea")], [button("record_outcome", "out")]]
    return None


def render_card(deps: Deps, lang: str, view: TipView) -> tuple[list[str], str]:
    """(text parts sent before the card, the card). A tip too long for one message
    sends its text first and a card that refers to it, so the card can be edited."""
    card = deps.texts.render(lang, "card", tip=view, text_above=False)
    if visible_length(card) <= TELEGRAM_TEXT_LIMIT:
        return [], card
    body = deps.texts.render(lang, "card_text", tip=view)
    return split_html(body), deps.texts.render(lang, "card", tip=view, text_above=True)


def enqueue_tip_card(session: Session, deps: Deps, view: TipView, now: datetime, targets: list[Target],
                     key_suffix: str = "") -> int:
    """Queue the card and its evidence for each target; returns the number of rows."""
    rows = 0
    for target in targets:
        key = f"tip:{view.id}:chat:{target.chat_id}{key_suffix}"
        before, card = render_card(deps, target.lang, view)
        for i, part in enumerate(before):
            outbox.enqueue(
                session, deps.keyring, now, dedupe_key=f"{key}:text:{i}", chat_id=target.chat_id,
                method="send_message", payload={"text": part}, purpose="card_text", tip_id=view.id,
            )
            rows += 1
        card_row = outbox.enqueue(
            session, deps.keyring, now, dedupe_key=f"{key}:card", chat_id=target.chat_id,
            method="send_message",
            payload={"text": card, "buttons": outbox.keyboard_payload(card_buttons(deps, target.lang, view))},
            purpose="card", tip_id=view.id,
        )
        rows += 1
        rows += enqueue_evidence(session, deps, view.id, view.evidence, now, target, key, card_row.id)
    return rows


def enqueue_evidence(
    session: Session, deps: Deps, tip_id: int, evidence: tuple, now: datetime, target: Target, key: str,
    reply_to: int | None,
) -> int:
    rows = 0
    total = len(evidence)
    for i, item in enumerate(evidence, start=1):
        caption = deps.texts.msg(target.lang, "evidence_caption", tip_id=tip_id, index=i, total=total,
                                 caption=item.caption or "")
        long_caption = visible_length(caption) > TELEGRAM_CAPTION_LIMIT
        payload = {
            "file_id": item.file_id,
            "caption": deps.texts.msg(target.lang, "evidence_caption", tip_id=tip_id, index=i, total=total, caption="")
            if long_caption else caption,
            "reply_to_outbox": reply_to,
        }
        outbox.enqueue(
            session, deps.keyring, now, dedupe_key=f"{key}:evidence:{item.id}", chat_id=target.chat_id,
            method=MEDIA_METHOD[item.kind], payload=payload, purpose="evidence", tip_id=tip_id,
        )
        rows += 1
        if long_caption:  # the tipster's words are never cut: they follow as text
            for j, part in enumerate(split_html(caption)):
                outbox.enqueue(
                    session, deps.keyring, now, dedupe_key=f"{key}:evidence:{item.id}:caption:{j}",
                    chat_id=target.chat_id, method="send_message", payload={"text": part},
                    purpose="evidence", tip_id=tip_id,
                )
                rows += 1
    return rows


def enqueue_card_edits(session: Session, deps: Deps, view: TipView, now: datetime, reason: str) -> int:
    """Re-render every copy of the tip's card (e.g. after an acknowledgement)."""
    cards = session.scalars(
        select(OutboxMessage).where(OutboxMessage.tip_id == view.id, OutboxMessage.purpose == "card")
    ).all()
    langs = {t.chat_id: t.lang for t in team_targets(session, deps, view.team_number)}
    rows = 0
    for card in cards:
        current = card.chat_id in langs  # a team the tip was reassigned away from gets no buttons
        lang = langs.get(card.chat_id, deps.config.campaign.default_language)
        _, text = render_card(deps, lang, view)
        buttons = card_buttons(deps, lang, view) if current else None
        outbox.enqueue(
            session, deps.keyring, now, dedupe_key=f"edit:{card.id}:{reason}", chat_id=card.chat_id,
            method="edit_message_text",
            payload={"text": text, "edit_outbox": card.id, "buttons": outbox.keyboard_payload(buttons)},
            purpose="card_edit", tip_id=view.id,
        )
        rows += 1
    return rows


def latest_card_row(session: Session, tip_id: int, chat_id: int) -> int | None:
    return session.scalar(
        select(OutboxMessage.id)
        .where(OutboxMessage.tip_id == tip_id, OutboxMessage.chat_id == chat_id, OutboxMessage.purpose == "card")
        .order_by(OutboxMessage.id.desc())
        .limit(1)
    )
