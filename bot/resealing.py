"""Tokens that outlive their key's period move to the current key before the old key goes.

A rotating key (bot/sealing.py) opens every token sealed in its period: the live rows,
and the erased ones whose old images linger in SQLite's -wal and free pages, PostgreSQL's
dead tuples, WAL segments, archives and backups. If one entry still waiting for a retry
kept that key alive, a copy of the data directory would open the whole period's traffic.
So every still-needed token under an expired key (an update not yet handled or waiting
for its retry, a receipt waiting for delivery) is re-sealed under the current key, in one
transaction, and only after that transaction has committed are the old keys destroyed.

Crash safety: the current key's file is written and synced before it seals anything, so
the committed rows always name a key on disk; a crash before the commit leaves the old
tokens and their still-present keys; a crash after it leaves an old key that nothing
needs, destroyed by the next run.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot import chatorder
from bot.conversations import ConversationStore
from bot.minimal import chat_of
from bot.sealing import EphemeralKeys, KeyGone, SealError, key_id_of
from storage.db import is_postgres
from storage.models import Conversation, PendingReceipt, UpdateJournal

log = logging.getLogger(__name__)


def reseal_expired(session: Session, keys: EphemeralKeys, now: datetime) -> int:
    """Re-seal, under the current key, every stored token whose key's time is over; returns
    how many. The caller commits, then destroys the keys nothing needs any more."""
    expired = keys.expired(now)
    if not expired:
        return 0
    postgres = is_postgres(session)
    # A write first: SQLite's write lock for the whole transaction (no stale read to upgrade);
    # on PostgreSQL it waits for a claimer holding one of these rows, and then holds them.
    session.execute(update(UpdateJournal)
                    .where(UpdateJournal.key_id.in_(expired), UpdateJournal.payload_enc.is_not(None))
                    .values(key_id=UpdateJournal.key_id))
    moved = 0
    rows = session.scalars(select(UpdateJournal)
                           .where(UpdateJournal.key_id.in_(expired), UpdateJournal.payload_enc.is_not(None))).all()
    for row in rows:
        token = _reseal(keys, row.payload_enc or "", now)
        if token is not None:
            row.payload_enc, row.key_id = token, key_id_of(token)
            moved += 1
    moved += _retag_chats(session, keys, expired, now)
    receipts = select(PendingReceipt)
    if postgres:
        receipts = receipts.with_for_update()
    for receipt in session.scalars(receipts).all():
        try:
            if key_id_of(receipt.sealed) not in expired:
                continue
        except SealError:
            continue  # sealed under the contact or data key (no rotating keys then)
        token = _reseal(keys, receipt.sealed, now)
        if token is not None:
            receipt.sealed = token
            moved += 1
    # Conversations in progress (bot/conversations.py) re-seal themselves every minute; a
    # clock that jumped, or a job not yet run, must not leave them holding an old key.
    moved += ConversationStore.reseal_rows(session, keys, now, Conversation.key_id.in_(expired))
    if moved:
        log.info("re-sealed %d stored tokens under the current journal key", moved)
    return moved


def _retag_chats(session: Session, keys: EphemeralKeys, expired: list[str], now: datetime) -> int:
    """A chat's unprocessed rows share a tag under the key of its oldest row (bot/chatorder.py):
    a tag under an expired key would keep that key alive, so the chat takes its current tag."""
    stale: dict[str, str] = {}
    for tag, payload in session.execute(
            select(UpdateJournal.chat_key, UpdateJournal.payload_enc)
            .where(UpdateJournal.processed_at.is_(None), UpdateJournal.chat_key.is_not(None),
                   UpdateJournal.payload_enc.is_not(None))):
        if tag in stale or chatorder.key_id_of_tag(tag) not in expired:
            continue
        try:
            chat = chat_of(json.loads(keys.open(payload)))
        except (SealError, ValueError, KeyError, TypeError):
            continue
        stale[tag] = chatorder.current_tag(keys, chat, now)
    if not stale:
        return 0
    chatorder.lock(session, [*stale, *stale.values()])
    retagged = 0
    for old, new in stale.items():
        result = session.execute(update(UpdateJournal).where(UpdateJournal.chat_key == old,
                                                              UpdateJournal.processed_at.is_(None))
                                 .values(chat_key=new))
        retagged += result.rowcount or 0
    return retagged


def _reseal(keys: EphemeralKeys, token: str, now: datetime) -> str | None:
    try:
        plain = keys.open(token)
    except KeyGone:
        return None  # already gone: whoever reads it gives it up
    except SealError:
        log.warning("a stored token does not open with its key: left as it is")
        return None
    return keys.seal(plain, now)
