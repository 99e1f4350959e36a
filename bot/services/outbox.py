"""The durable outbox: messages to staff are rows first, Telegram calls later.

A row is written in the same transaction as the decision to send it (a tip, an
acknowledgement), so a crash can lose neither. `dedupe_key` makes enqueueing idempotent.
Payloads are encrypted: a card carries tip content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.orm import Session

from bot.security import Keyring
from storage.models import OutboxMessage

SEND_METHODS = frozenset(
    {"send_message", "send_photo", "send_document", "send_video", "send_voice", "send_audio", "edit_message_text"}
)


@dataclass(frozen=True, slots=True)
class Button:
    text: str
    data: str


def keyboard_payload(rows: list[list[Button]] | None) -> list[list[dict[str, str]]] | None:
    if rows is None:
        return None
    return [[{"text": b.text, "data": b.data} for b in row] for row in rows]


def enqueue(
    session: Session,
    keyring: Keyring,
    now: datetime,
    *,
    dedupe_key: str,
    chat_id: int,
    method: str,
    payload: dict[str, Any],
    purpose: str,
    tip_id: int | None = None,
    broadcast_id: int | None = None,
) -> OutboxMessage:
    if method not in SEND_METHODS:
        raise ValueError(f"unknown outbox method {method!r}")
    existing = session.scalar(select(OutboxMessage).where(OutboxMessage.dedupe_key == dedupe_key))
    if existing is not None:
        return existing
    if tip_id is not None and method != "edit_message_text":
        # Whatever is about a tip (its card, evidence, the team's notes) cannot be
        # forwarded or saved by whoever is in the chat (an edit keeps the original's).
        payload = {**payload, "protect": True}
    row = OutboxMessage(
        dedupe_key=dedupe_key,
        chat_id=chat_id,
        method=method,
        payload_enc=keyring.encrypt(json.dumps(payload, ensure_ascii=False)),
        purpose=purpose,
        tip_id=tip_id,
        broadcast_id=broadcast_id,
        status="pending",
        attempts=0,
        created_at=now,
        next_attempt_at=now,
    )
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True, slots=True)
class Row:
    dedupe_key: str
    chat_id: int
    method: str
    payload: dict[str, Any]


def enqueue_many(
    session: Session, keyring: Keyring, now: datetime, rows: list[Row], *, purpose: str,
    broadcast_id: int | None = None,
) -> int:
    """Queue many new rows in one statement (a broadcast to thousands of chats).

    The caller guarantees the rows are new (a broadcast is made once, under its
    scheduled-run key); a repeated `dedupe_key` still fails on the unique index rather
    than sending twice. Rows keep the order given (ids increase), so a chat's messages
    arrive in that order.
    """
    for row in rows:
        if row.method not in SEND_METHODS:
            raise ValueError(f"unknown outbox method {row.method!r}")
    values = [
        {
            "dedupe_key": r.dedupe_key, "chat_id": r.chat_id, "method": r.method,
            "payload_enc": keyring.encrypt(json.dumps(r.payload, ensure_ascii=False)), "purpose": purpose,
            "tip_id": None, "broadcast_id": broadcast_id, "status": "pending", "attempts": 0,
            "created_at": now, "next_attempt_at": now,
        }
        for r in rows
    ]
    for start in range(0, len(values), 1000):
        session.execute(insert(OutboxMessage), values[start : start + 1000])
    return len(values)


def payload_of(row: OutboxMessage, keyring: Keyring) -> dict[str, Any]:
    return json.loads(keyring.decrypt(row.payload_enc))


def claim_due(session: Session, now: datetime, limit: int, lease: timedelta) -> list[OutboxMessage]:
    """Rows due now, oldest first, leased to this sender.

    Only the oldest undelivered row of each chat is eligible, so one chat's messages
    arrive in order (a card before its evidence). A `sending` row whose lease ran out
    belonged to a sender that died: it is taken again. On PostgreSQL `SKIP LOCKED`
    lets two processes share the work without sending a row twice.
    """
    heads = (
        select(func.min(OutboxMessage.id))
        .where(OutboxMessage.status.in_(("pending", "sending")))
        .group_by(OutboxMessage.chat_id)
    )
    due = (
        select(OutboxMessage)
        .where(
            OutboxMessage.id.in_(heads),
            or_(
                (OutboxMessage.status == "pending") & (OutboxMessage.next_attempt_at <= now),
                (OutboxMessage.status == "sending") & (OutboxMessage.lease_until <= now),
            ),
        )
        .order_by(OutboxMessage.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    rows = list(session.scalars(due))
    for row in rows:
        row.status = "sending"
        row.lease_until = now + lease
        row.attempts += 1
    session.flush()
    return rows


def _claimed(row_id: int, attempts: int):  # type: ignore[no-untyped-def]
    """Only the sender that holds the lease may record the outcome: a sender whose lease
    ran out (a very long RetryAfter) must not overwrite what its successor recorded."""
    return update(OutboxMessage).where(
        OutboxMessage.id == row_id, OutboxMessage.status == "sending", OutboxMessage.attempts == attempts
    )


def mark_sent(session: Session, row_id: int, attempts: int, now: datetime, message_id: int | None) -> bool:
    result = session.execute(
        _claimed(row_id, attempts).values(
            status="sent", sent_at=now, message_id=message_id, lease_until=None, last_error=None
        )
    )
    return bool(result.rowcount)


def mark_retry(session: Session, row_id: int, attempts: int, at: datetime, error: str) -> bool:
    result = session.execute(
        _claimed(row_id, attempts).values(status="pending", next_attempt_at=at, lease_until=None, last_error=error[:256])
    )
    return bool(result.rowcount)


def mark_failed(session: Session, row_id: int, attempts: int, error: str) -> bool:
    result = session.execute(
        _claimed(row_id, attempts).values(status="failed", lease_until=None, last_error=error[:256])
    )
    return bool(result.rowcount)


def message_id_of(session: Session, row_id: int) -> int | None:
    return session.scalar(select(OutboxMessage.message_id).where(OutboxMessage.id == row_id))


def counts(session: Session) -> dict[str, int]:
    return dict(session.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)).all())
