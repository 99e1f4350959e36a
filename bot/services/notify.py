"""Telling tipsters who opted in that there is news (and nothing more).

Only a tipster who opted in at submission has a row here (see ContactBox). News sets
`news_at` in the same transaction as the event; the sweeper sends "there is news: come
back with your receipt code" straight to the chat (never through the outbox, whose chat
ids are in clear), then clears the flag; when the case closes the row is deleted after
that last message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from telegram import Bot
from telegram.error import BadRequest, Forbidden, NetworkError

from bot.clock import to_minute
from bot.deps import Deps
from bot.security import ContactBox, DecryptionError
from storage.models import NotifyContact

log = logging.getLogger(__name__)


def box(deps: Deps) -> ContactBox | None:
    key = deps.config.security.contact_key.get_secret_value()
    return ContactBox(key) if key else None


def opt_in(session: Session, deps: Deps, tip_id: int, chat_id: int, now: datetime) -> bool:
    contacts = box(deps)
    if contacts is None:
        return False
    session.add(NotifyContact(token=contacts.token(tip_id), chat_enc=contacts.seal(chat_id), created_at=to_minute(now),
                              final=False))
    return True


def news(session: Session, deps: Deps, tip_id: int, now: datetime, *, final: bool = False) -> None:
    contacts = box(deps)
    if contacts is None:
        return
    row = session.get(NotifyContact, contacts.token(tip_id))
    if row is not None:
        row.news_at = now
        row.final = row.final or final


MAX_NEWS_ATTEMPTS = 10


async def deliver(deps: Deps, bot: Bot, limit: int = 50) -> int:
    """Send pending news, oldest first; returns how many chats were told. News that keeps
    failing is given up after `MAX_NEWS_ATTEMPTS` tries (logged), never retried forever.
    The database work runs in a worker thread."""
    contacts = box(deps)
    if contacts is None:
        return 0

    def load() -> list[tuple[str, str, bool]]:
        with deps.sessions.begin() as session:
            return [(r.token, r.chat_enc, r.final) for r in session.scalars(
                select(NotifyContact).where(NotifyContact.news_at.is_not(None))
                .order_by(NotifyContact.news_at, NotifyContact.token).limit(limit))]

    def done(token: str, final: bool, gone: bool) -> None:
        with deps.sessions.begin() as session:
            if final or gone:
                session.execute(delete(NotifyContact).where(NotifyContact.token == token))
            else:
                row = session.get(NotifyContact, token)
                if row is not None:
                    row.news_at = None
                    row.attempts = 0

    def failed(token: str, final: bool, error: str) -> None:
        with deps.sessions.begin() as session:
            row = session.get(NotifyContact, token)
            if row is None:
                return
            row.attempts += 1
            if row.attempts >= MAX_NEWS_ATTEMPTS:
                log.error("news for a tipster given up after %d attempts (%s)", row.attempts, error)
                if final:
                    session.delete(row)
                else:
                    row.news_at = None
                    row.attempts = 0

    pending = await asyncio.to_thread(load)
    told = 0
    lang = deps.config.campaign.default_language
    for token, sealed, final in pending:
        gone = False
        try:
            chat_id = contacts.open(sealed)
            await bot.send_message(chat_id, deps.texts.msg(lang, "news_for_tipster"))
            told += 1
        except (Forbidden, DecryptionError):
            gone = True  # blocked, or a key that no longer opens it: nothing more can be done
        except (BadRequest, NetworkError) as exc:
            log.warning("news for a tipster not delivered (%s): will try again", type(exc).__name__)
            await asyncio.to_thread(failed, token, final, type(exc).__name__)
            continue
        await asyncio.to_thread(done, token, final, gone)
    return told


def has_contact(session: Session, deps: Deps, tip_id: int) -> bool:
    contacts = box(deps)
    with contextlib.suppress(Exception):
        if contacts is not None:
            return session.get(NotifyContact, contacts.token(tip_id)) is not None
    return False
