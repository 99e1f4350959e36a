"""One chat at a time, in order, across every process that shares the update journal.

Within a process a chat's updates run one after the other (bot/polling.py's per-chat
queues). Across processes (webhook mode behind a reverse proxy, or two pollers while a
deploy overlaps) the journal itself says who has a chat: the process holding one of the
chat's unprocessed rows under a live lease. A row that arrives at another process is left
unclaimed for that holder, which takes it up when it records the row before it (or at its
next sweep); a row that arrives when nobody holds the chat is taken by its receiver.

The rows name their chat by a tag: a keyed digest under the journal key of the period
(bot/sealing.py), never the chat's id; once that key is destroyed, nobody can tell which
chat a tag was. A chat's rows share the tag of its oldest unprocessed row, found by
computing the chat's tag under every key still on disk.

On PostgreSQL the decisions about one chat are serialized by a transaction-scoped
advisory lock on its tag; SQLite serializes every writer anyway.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from bot.sealing import EphemeralKeys, SealError
from storage.db import is_postgres

NAMESPACE = 7_384_200  # PostgreSQL advisory locks (namespace, chat tag)


def _chat_bytes(chat: tuple[str, int]) -> bytes:
    return f"journal-chat:{chat[0]}:{chat[1]}".encode()


def current_tag(keys: EphemeralKeys, chat: tuple[str, int], now: datetime) -> str:
    return keys.tag(keys.current_key_id(now), _chat_bytes(chat))


def candidate_tags(keys: EphemeralKeys, chat: tuple[str, int], now: datetime,
                   key_ids: list[str] | None = None) -> list[str]:
    """The chat's tag under each key on disk (its rows carry one of them), the current first."""
    tags = [current_tag(keys, chat, now)]
    for key_id in keys.key_ids() if key_ids is None else key_ids:
        try:
            tag = keys.tag(key_id, _chat_bytes(chat))
        except SealError:
            continue  # destroyed meanwhile: no row needs it
        if tag not in tags:
            tags.append(tag)
    return tags


def key_id_of_tag(tag: str) -> str:
    return tag.partition(":")[0]


def _number(tag: str) -> int:
    return int.from_bytes(hashlib.sha256(tag.encode()).digest()[:4], "big", signed=True)


def lock(session: Session, tags: Iterable[str]) -> None:
    """Wait for the chats' locks (in one order everywhere: no deadlock)."""
    if not is_postgres(session):
        return
    numbers = sorted({_number(t) for t in tags})
    if len(numbers) == 1:
        session.execute(select(func.pg_advisory_xact_lock(NAMESPACE, numbers[0])))
    elif numbers:
        # One statement for a batch of chats, not one round trip each; unnest yields the
        # sorted array in its order, so the locks are taken in that order.
        session.execute(text("SELECT pg_advisory_xact_lock(:ns, n) FROM unnest(CAST(:numbers AS integer[])) AS u(n)"),
                        {"ns": NAMESPACE, "numbers": numbers})


def try_lock(session: Session, tag: str) -> bool:
    """Take the chat's lock if free (a sweep skips a chat someone is deciding about)."""
    if not is_postgres(session):
        return True
    return bool(session.scalar(select(func.pg_try_advisory_xact_lock(NAMESPACE, _number(tag)))))
