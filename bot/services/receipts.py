"""The receipt code reaches the chat that submitted the tip, or the office knows it did not.

The code is the tipster's only link to the tip, and it is shown once. So that a failed
send (Telegram down, a crash between the commit and the message) does not lose it, the
submitting transaction also writes a `pending_receipts` row: the code and the chat id,
sealed together under the rotating keys of the update journal (bot/sealing.py), kept for nothing but this delivery. The row is deleted as soon as the
message is sent. A job re-sends rows whose send failed; after `intake.receipt_delivery_hours`
(or at once if Telegram says the chat cannot be reached) the row is deleted, the tip is
marked `receipt_undelivered`, the audit trail says so and the office is told.

A row is claimed before it is sent (`claimed_until`), so the job and a handler do not
both send it; the handler handling the Submit press (again, after a crash) takes it over.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from bot.clock import to_minute
from bot.deps import Deps
from bot.sealing import SealError
from bot.services import audit, outbox
from bot.services.office import office_targets
from storage.models import PendingReceipt, Tip

log = logging.getLogger(__name__)

CLAIM = timedelta(seconds=60)  # a send in hand; longer than any send with its retries
FIRST_RETRY = timedelta(seconds=5)
MAX_RETRY = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a receipt message needs, sealed in the row."""

    chat_id: int
    code: str  # formatted, as shown
    lang: str
    kind: str  # citizen | office
    notify: bool = False
    channel: str = "telegram"
    team: int = 0


def submit_key(deps: Deps, nonce: str) -> str:
    """The stored form of a draft's submission token."""
    return deps.keyring.pseudonym("submit", nonce)


def _fernet(deps: Deps) -> Fernet | None:
    key = deps.config.security.contact_key.get_secret_value()
    return Fernet(key.strip().encode()) if key else None


def seal(deps: Deps, receipt: Receipt, now: datetime) -> str:
    """Seal under the rotating keys (bot/sealing.py) when the process has them: once the row
    is gone and its key destroyed, no copy of the database (WAL, dead tuples, backups) opens
    it. The journal keeps that key alive while a pending receipt still names it."""
    data = json.dumps(asdict(receipt), separators=(",", ":"))
    if deps.ephemeral is not None:
        return deps.ephemeral.seal(data.encode(), now)
    box = _fernet(deps)
    return box.encrypt(data.encode()).decode("ascii") if box else deps.keyring.encrypt(data)


def unseal(deps: Deps, sealed: str) -> Receipt | None:
    try:
        if deps.ephemeral is not None and "." in sealed:  # a rotating key's token names its key
            data = deps.ephemeral.open(sealed).decode()
        else:
            box = _fernet(deps)
            data = box.decrypt(sealed.encode("ascii")).decode() if box else deps.keyring.decrypt(sealed)
        return Receipt(**json.loads(data))
    except (InvalidToken, ValueError, TypeError, SealError):
        return None
    except Exception:  # a DecryptionError of the keyring: a key that no longer opens it
        return None


def keep(session: Session, deps: Deps, tip_id: int, receipt: Receipt, now: datetime) -> None:
    """In the transaction that stores the tip: the receipt, claimed by the caller who is
    about to send it. When it was made is kept to the minute, like the tip's own times
    (the claim and retry times are exact: a tipster is waiting for the code)."""
    session.add(PendingReceipt(tip_id=tip_id, sealed=seal(deps, receipt, now), created_at=to_minute(now),
                               next_attempt_at=now + FIRST_RETRY, attempts=0, claimed_until=now + CLAIM))


def take(session: Session, deps: Deps, tip_id: int, now: datetime, *, force: bool = False) -> Receipt | None:
    """Claim a pending receipt for sending; None if there is none (delivered) or another
    sender has it in hand (unless `force`: the Submit press itself, handled again)."""
    condition = [PendingReceipt.tip_id == tip_id]
    if not force:
        condition.append(or_(PendingReceipt.claimed_until.is_(None), PendingReceipt.claimed_until < now))
    claimed = session.execute(update(PendingReceipt).where(*condition).values(claimed_until=now + CLAIM))
    if not claimed.rowcount:
        return None
    row = session.get(PendingReceipt, tip_id)
    if row is None:
        return None
    receipt = unseal(deps, row.sealed)
    if receipt is None:  # sealed with a key no longer configured: it can never be sent
        _give_up(session, deps, row, now, "the sealed receipt no longer opens")
    return receipt


def delivered(session: Session, tip_id: int) -> None:
    """The chat has the message: the code and the chat id are erased."""
    session.execute(delete(PendingReceipt).where(PendingReceipt.tip_id == tip_id))


def failed(session: Session, deps: Deps, tip_id: int, now: datetime, *, permanent: bool, reason: str) -> bool:
    """A send failed: try again later, or give up (True) if it cannot succeed or has been
    tried for `intake.receipt_delivery_hours`."""
    row = session.get(PendingReceipt, tip_id)
    if row is None:
        return False
    row.attempts += 1
    bound = timedelta(hours=deps.config.intake.receipt_delivery_hours)
    if permanent or now - row.created_at >= bound:
        _give_up(session, deps, row, now, reason)
        return True
    row.claimed_until = None
    row.next_attempt_at = now + min(MAX_RETRY, FIRST_RETRY * 2 ** min(row.attempts - 1, 20))
    return False


def due(session: Session, now: datetime, limit: int = 50) -> list[int]:
    """Tips whose receipt is waiting for another try."""
    return list(session.scalars(
        select(PendingReceipt.tip_id)
        .where(PendingReceipt.next_attempt_at <= now,
               or_(PendingReceipt.claimed_until.is_(None), PendingReceipt.claimed_until < now))
        .order_by(PendingReceipt.next_attempt_at)
        .limit(limit)
    ))


def pending_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(PendingReceipt)) or 0


def _give_up(session: Session, deps: Deps, row: PendingReceipt, now: datetime, reason: str) -> None:
    tip_id = row.tip_id
    session.delete(row)
    tip = session.get(Tip, tip_id)
    if tip is None:
        return
    tip.receipt_undelivered = True
    log.warning("receipt of tip %s not delivered: given up (%s)", tip_id, reason)
    audit.record(session, staff_id=None, tip_id=tip_id, action="receipt_undelivered", detail=reason, at=now)
    for target in office_targets(session, deps):
        outbox.enqueue(
            session, deps.keyring, now, dedupe_key=f"tip:{tip_id}:receipt_undelivered:chat:{target.chat_id}",
            chat_id=target.chat_id, method="send_message",
            payload={"text": deps.texts.msg(target.lang, "receipt_undelivered", tip_id=tip_id,
                                            hours=deps.config.intake.receipt_delivery_hours)},
            purpose="receipt_undelivered", tip_id=tip_id,
        )


def find_submitted(session: Session, deps: Deps, nonce: str) -> int | None:
    """The tip a draft with this submission token became, if it did."""
    return session.scalar(select(Tip.id).where(Tip.submit_key == submit_key(deps, nonce)))
