"""Broadcasts: one message to many officials through the outbox, and the office's progress.

A broadcast is one `broadcasts` row and one outbox row per recipient and message part
(`dedupe_key` "broadcast:{id}:{staff}:{part}"), queued in one transaction. The sender
delivers them at the configured rate; a restart continues with the rows not yet sent.
The office sees one message per broadcast, edited every few seconds:
"delivered X of Y, N failed".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from bot.deps import Deps
from bot.services import outbox
from bot.services.office import office_targets
from bot.services.officials import Recipient
from storage.models import OutboxMessage
from storage.models_officials import Blob, Broadcast

Part = tuple[str, dict[str, Any]]  # (outbox method, payload)


@dataclass(frozen=True, slots=True)
class Progress:
    recipients: int
    delivered: int  # every part sent
    failed: int  # a part given up (blocked, refused)

    @property
    def done(self) -> bool:
        return self.delivered + self.failed >= self.recipients


def store_blob(session: Session, now: datetime, filename: str, content: bytes) -> int:
    blob = Blob(filename=filename, content=content, created_at=now)
    session.add(blob)
    session.flush()
    return blob.id


def send(
    session: Session, deps: Deps, now: datetime, *, kind: str, ref: str, recipients: list[Recipient],
    parts_for: dict[str, list[Part]], report: bool = True,
) -> Broadcast | None:
    """Queue `parts_for[lang]` to each recipient; None when there is nobody to send to."""
    if not recipients:
        return None
    b = Broadcast(kind=kind, ref=ref, recipients=len(recipients), created_at=now)
    session.add(b)
    session.flush()
    rows: list[outbox.Row] = []
    default = deps.config.campaign.default_language
    # Part-major order: everyone's first part, then everyone's second... A chat's parts
    # keep their order (ids increase), and its next part comes up only after a round of
    # the other chats, when its per-chat second has passed: no sender slot waits for it.
    for i in range(max(len(p) for p in parts_for.values())):
        for r in recipients:
            parts = parts_for.get(r.lang) or parts_for[default]
            if i < len(parts):
                method, payload = parts[i]
                rows.append(outbox.Row(f"broadcast:{b.id}:{r.staff_id}:{i}", r.chat_id, method, payload))
    outbox.enqueue_many(session, deps.keyring, now, rows, purpose="broadcast", broadcast_id=b.id)
    if report:
        for target in office_targets(session, deps):
            outbox.enqueue(
                session, deps.keyring, now, dedupe_key=f"progress:{b.id}:{target.chat_id}", chat_id=target.chat_id,
                method="send_message", payload={"text": _progress_text(deps, target.lang, b, Progress(b.recipients, 0, 0))},
                purpose="progress", broadcast_id=b.id,
            )
    return b


def progress(session: Session, broadcast_id: int) -> Progress:
    """Per recipient: delivered when all its parts are sent, failed when one failed."""
    per_chat = (
        select(
            OutboxMessage.chat_id,
            func.count().label("n"),
            func.sum(case((OutboxMessage.status == "sent", 1), else_=0)).label("sent"),
            func.sum(case((OutboxMessage.status == "failed", 1), else_=0)).label("failed"),
        )
        .where(OutboxMessage.broadcast_id == broadcast_id, OutboxMessage.purpose == "broadcast")
        .group_by(OutboxMessage.chat_id)
        .subquery()
    )
    total, delivered, failed = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((per_chat.c.sent == per_chat.c.n, 1), else_=0)), 0),
            func.coalesce(func.sum(case((per_chat.c.failed > 0, 1), else_=0)), 0),
        )
    ).one()
    return Progress(int(total), int(delivered), int(failed))


def _progress_text(deps: Deps, lang: str, b: Broadcast, p: Progress) -> str:
    return deps.texts.msg(lang, "broadcast_progress", kind=b.kind, ref=b.ref, delivered=p.delivered,
                          total=p.recipients, failed=p.failed, done=p.done)


def report_progress(session: Session, deps: Deps, now: datetime) -> int:
    """Edit the office's progress message of each unfinished broadcast; returns the edits queued."""
    edits = 0
    for b in session.scalars(select(Broadcast).where(Broadcast.finished_at.is_(None)).order_by(Broadcast.id)):
        p = progress(session, b.id)
        notes = session.scalars(
            select(OutboxMessage).where(OutboxMessage.broadcast_id == b.id, OutboxMessage.purpose == "progress")
        ).all()
        waiting = False
        langs = {t.chat_id: t.lang for t in office_targets(session, deps)}
        for note in notes:
            if note.status != "sent":
                waiting = waiting or note.status in ("pending", "sending")
                continue
            lang = langs.get(note.chat_id, deps.config.campaign.default_language)
            key = f"progress:{b.id}:{note.chat_id}:{p.delivered}:{p.failed}"
            if p == Progress(b.recipients, 0, 0):
                continue
            before = session.scalar(select(func.count()).select_from(OutboxMessage)
                                    .where(OutboxMessage.dedupe_key == key))
            if before:
                continue
            outbox.enqueue(
                session, deps.keyring, now, dedupe_key=key, chat_id=note.chat_id, method="edit_message_text",
                payload={"text": _progress_text(deps, lang, b, p), "edit_outbox": note.id},
                purpose="progress_edit", broadcast_id=b.id,
            )
            edits += 1
        if p.done and not waiting:
            b.finished_at = now
    return edits


def status_lines(session: Session, limit: int = 20) -> list[tuple[Broadcast, Progress]]:
    rows = session.scalars(select(Broadcast).order_by(Broadcast.id.desc()).limit(limit)).all()
    return [(b, progress(session, b.id)) for b in rows]


def failure_reasons(session: Session, broadcast_id: int, limit: int = 3) -> list[tuple[str, int]]:
    """Why parts failed (Telegram's words), most frequent first: for broadcast-status."""
    rows = session.execute(
        select(OutboxMessage.last_error, func.count())
        .where(OutboxMessage.broadcast_id == broadcast_id, OutboxMessage.status == "failed")
        .group_by(OutboxMessage.last_error).order_by(func.count().desc()).limit(limit)
    ).all()
    return [(error or "unknown", int(n)) for error, n in rows]
