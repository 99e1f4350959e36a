"""Conversations that survive a restart: kept in the database, sealed, under a pseudonym.

Each flow keeps its state in memory as before (the cache); this module mirrors it into
the `conversations` table so that a restart, a deploy or a crash continues where the
person was:

- Filed under a keyed pseudonym of the chat (`keyring.pseudonym("chat", id)`, the one
  drafts are kept under in memory) and a kind; never an id.
- The state is JSON (never pickle), sealed under the update journal's rotating keys
  (bot/sealing.py). Every write re-seals under the current key, and the maintenance job
  re-seals what is still alive, so the keys of past periods are destroyed by the
  journal's upkeep once nothing needs them: a copy of the database taken later cannot
  open a finished or expired conversation.
- Loaded on the first update of a chat after a start, and again whenever another process
  changed it since: each row has a version, read with every update (several webhook
  processes share one database; a chat may go A, B, A). A row gone means finished
  elsewhere: forgotten here too. Written after each update that changed it (in a worker
  thread, in one transaction with the writes other chats' updates made meanwhile),
  compare-and-set on the version (a newer row is never overwritten with an older copy),
  or deleted in the same transaction as the step's effect where there is one
  (`erase`: a submitted tip, a recorded outcome, a saved note).
- The ids of the last updates applied to it are sealed with the state: an update handled
  and saved but not yet marked handled in the journal when the process died is not
  handled a second time (after the restart, or when it comes back after a newer one).
- Expired rows are deleted by a job (`maintain`), finished ones at once.

The kinds register themselves (`register`): how to find the state in memory for a chat
or a user, how to dump it to JSON and load it back, and when it expires.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker
from telegram import Update

from bot.clock import Clock
from bot.sealing import EphemeralKeys, KeyGone, SealError, key_id_of
from bot.security import Keyring
from bot.supervise import ThrottledLog
from bot.together import Together
from storage.db import is_postgres
from storage.models import Conversation

log = logging.getLogger(__name__)

FORGET_KNOWN = 25 * 3600.0  # seconds: a chat idle this long is looked up again (nothing is left of it)
APPLIED_KEPT = 16  # ids of the latest updates applied to a conversation, kept with it
_TABLE = Conversation.__table__
WRITE_BATCH = 64  # conversation writes in one transaction, at most (it holds SQLite's write lock)


def ceil_minute(moment: datetime) -> datetime:
    """Rounded up to the minute: a row never goes before the state it mirrors expires."""
    whole = moment.replace(second=0, microsecond=0)
    return whole if whole == moment else whole + timedelta(minutes=1)


@dataclass(frozen=True)
class Kind:
    """One kind of conversation. `scope` says whose pseudonym files it: "chat" (a private
    chat; the ident is the pseudonym itself), "join" (any chat, the /join back-off; the
    ident is the pseudonym) or "user" (the person, wherever they write; the ident is
    their Telegram user id: only staff have these kinds)."""

    name: str
    scope: str
    get: Callable[[dict[str, Any], Any], Any]  # (bot_data, ident) -> the state in memory, or None
    put: Callable[[dict[str, Any], Any, dict[str, Any]], None]  # load a dumped state into memory
    dump: Callable[[Any], dict[str, Any] | None]  # None: nothing worth keeping
    expires: Callable[[Any, dict[str, Any]], datetime]  # (state, bot_data) -> when it goes
    clear: Callable[[dict[str, Any], Any], None]  # forget it in memory (another process finished it)


KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> None:
    KINDS[kind.name] = kind


@dataclass(frozen=True)
class Slot:
    kind: str
    pseudonym: str
    ident: Any

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.pseudonym


# (slot, state as text or None, state, when it expires, ids of the updates applied)
Write = tuple[Slot, str | None, dict[str, Any] | None, datetime | None, list[int]]


class ConversationStore:
    def __init__(self, sessions: sessionmaker[Session], keyring: Keyring, keys: EphemeralKeys | None,
                 clock: Clock) -> None:
        self.sessions, self.keyring, self.keys, self.clock = sessions, keyring, keys, clock
        self._known: dict[tuple[str, str], float] = {}  # loaded (or found absent) in this process
        self._stored: dict[tuple[str, str], str] = {}  # the state as last written (JSON)
        self._dirty: dict[tuple[str, str], tuple[Slot, int]] = {}  # a write that failed: tried again
        self._applied: dict[tuple[str, str], list[int]] = {}  # update ids applied to each (latest last)
        self._version: dict[tuple[str, str], int] = {}  # the row's version as last read or written here
        # The writes of the chats' updates handled at the same moment share one transaction
        # (on SQLite one hold of the write lock and one flush to disk) instead of queueing
        # for the lock one by one; each caller returns once its own rows are committed. Their
        # version reads share one statement (the rows of the others' chats are ignored).
        self._write_together: Together[list[Write], list[int | None | bool]] = Together(
            self._write_batch, WRITE_BATCH, weight=len)
        self._versions_together: Together[set[str], dict[tuple[str, str], int]] = Together(
            self._versions_batch, WRITE_BATCH)
        self._tlog = ThrottledLog(log)
        self.skipped = 0  # updates found handled already (after a restart)

    @property
    def enabled(self) -> bool:
        return self.keys is not None

    # which conversations an update touches -------------------------------------------------
    def slots(self, update: Update) -> list[Slot]:
        chat, user = update.effective_chat, update.effective_user
        found: list[Slot] = []
        for kind in KINDS.values():
            if kind.scope == "chat" and chat is not None and chat.type == "private":
                p = self.keyring.pseudonym("chat", chat.id)
                found.append(Slot(kind.name, p, p))
            elif kind.scope == "join" and chat is not None:
                p = self.keyring.pseudonym("join", chat.id)
                found.append(Slot(kind.name, p, p))
            elif kind.scope == "user" and user is not None:
                found.append(Slot(kind.name, self.keyring.pseudonym("chat", user.id), user.id))
        return found

    # loading ---------------------------------------------------------------------------------
    async def load(self, bot_data: dict[str, Any], slots: list[Slot], update_id: int) -> bool:
        """Bring the slots' stored state into memory where the row is not the one this process
        last read or wrote: on the first update after a start, and whenever another process
        handled the chat meanwhile (several webhook processes on one database). One small
        read per update: the versions; the sealed state only of the rows that changed.
        True if the update was applied to one of them already (handled and saved, before a
        restart or before a newer update of the chat)."""
        now = time.monotonic()
        for s in slots:
            self._known[s.key] = now
        if not slots or not self.enabled:
            return self._was_applied(slots, update_id)
        versions = await self._versions_together({s.pseudonym for s in slots})
        stale: list[Slot] = []
        for slot in slots:
            stored = versions.get(slot.key)
            if stored is None:
                if slot.key in self._version:  # finished (or expired) elsewhere: nothing to continue
                    KINDS[slot.kind].clear(bot_data, slot.ident)
                    self._forget(slot.key)
            elif stored != self._version.get(slot.key):
                stale.append(slot)
        if stale:
            rows = await asyncio.to_thread(self._read, {s.pseudonym for s in stale})
            for slot in stale:
                if slot.key in rows:
                    self._take(bot_data, slot, *rows[slot.key])
        return self._was_applied(slots, update_id)

    def _take(self, bot_data: dict[str, Any], slot: Slot, version: int, sealed: str) -> None:
        """The row's state replaces this process's copy."""
        kind = KINDS[slot.kind]
        self._version[slot.key] = version
        try:
            blob = json.loads(self.keys.open(sealed))  # type: ignore[union-attr]
            kind.put(bot_data, slot.ident, blob["s"])
        except (SealError, ValueError, KeyError, TypeError) as exc:
            # its key is gone (or it is not ours to read): it is as if it had expired
            log.warning("a stored conversation (%s) could not be opened (%s): dropped", slot.kind,
                        type(exc).__name__)
            kind.clear(bot_data, slot.ident)
            self._stored.pop(slot.key, None)
            self._applied.pop(slot.key, None)
            return
        self._stored[slot.key] = _text(blob["s"])
        self._applied[slot.key] = [int(u) for u in blob.get("h", [])][-APPLIED_KEPT:]

    def _forget(self, key: tuple[str, str]) -> None:
        self._stored.pop(key, None)
        self._applied.pop(key, None)
        self._version.pop(key, None)

    def _was_applied(self, slots: list[Slot], update_id: int) -> bool:
        return any(update_id in self._applied.get(s.key, ()) for s in slots)

    def _versions_batch(self, asked: list[set[str]]) -> list[dict[tuple[str, str], int]]:
        versions = self._versions(set().union(*asked))
        return [versions] * len(asked)

    def _write_batch(self, batch: list[list[Write]]) -> list[list[int | None | bool]]:
        outcome = self._write([w for writes in batch for w in writes])
        out = []
        for writes in batch:
            out.append(outcome[:len(writes)])
            outcome = outcome[len(writes):]
        return out

    def _versions(self, pseudonyms: set[str]) -> dict[tuple[str, str], int]:
        with self.sessions.begin() as session:
            return {(kind, p): v for p, kind, v in session.execute(
                select(Conversation.pseudonym, Conversation.kind, Conversation.version)
                .where(Conversation.pseudonym.in_(sorted(pseudonyms))))}

    def _read(self, pseudonyms: set[str]) -> dict[tuple[str, str], tuple[int, str]]:
        with self.sessions.begin() as session:
            return {(kind, p): (v, sealed) for p, kind, v, sealed in session.execute(
                select(Conversation.pseudonym, Conversation.kind, Conversation.version, Conversation.sealed)
                .where(Conversation.pseudonym.in_(sorted(pseudonyms))))}

    # writing ---------------------------------------------------------------------------------
    async def flush(self, bot_data: dict[str, Any], slots: Iterable[Slot], update_id: int,
                    applied: bool = True) -> None:
        """Write what the update changed (off the event loop); a failed write is kept and
        tried again with the next update or by the job. `applied`: the handler did not fail
        (an update whose handler failed is tried again, so it is not marked applied)."""
        if not self.enabled:
            return
        writes = self._changes(bot_data, slots, update_id, applied)
        if not writes:
            return
        try:
            outcome = await self._write_together(writes)
        except Exception as exc:  # noqa: BLE001 - the database is away: the job writes it later
            self._tlog("flush", logging.WARNING, "conversations: saving failed (%s); will try again",
                       type(exc).__name__)
            for slot, *_ in writes:
                self._dirty[slot.key] = (slot, update_id)
            return
        self._written(writes, outcome)

    def _written(self, writes: list[Write], outcome: list[int | None | bool]) -> None:
        """Record what `_write` did: a new version, None (deleted) or False (another process
        wrote the row meanwhile: left alone, and read again with the chat's next update)."""
        for (slot, text, *_), done in zip(writes, outcome, strict=True):
            self._dirty.pop(slot.key, None)
            if done is False:
                self._tlog("conflict", logging.WARNING,
                           "conversations: another process changed a %s conversation meanwhile; theirs is kept",
                           slot.kind)
                self._stored.pop(slot.key, None)
                self._version[slot.key] = -1  # never a stored version: the next update reads the row
            elif done is None or text is None:
                self._forget(slot.key)
            else:
                self._stored[slot.key] = text
                self._version[slot.key] = done

    def _changes(self, bot_data: dict[str, Any], slots: Iterable[Slot], update_id: int, applied: bool = False
                 ) -> list[Write]:
        writes = []
        for slot in slots:
            kind = KINDS[slot.kind]
            obj = kind.get(bot_data, slot.ident)
            state = kind.dump(obj) if obj is not None else None
            text = _text(state) if state is not None else None
            if text == self._stored.get(slot.key) and slot.key not in self._dirty:
                continue
            if state is None:
                self._applied.pop(slot.key, None)
                ids: list[int] = []
            else:
                ids = self._applied.setdefault(slot.key, [])
                if applied and update_id not in ids:
                    ids.append(update_id)
                    del ids[:-APPLIED_KEPT]
            expires = ceil_minute(kind.expires(obj, bot_data)) if state is not None else None
            writes.append((slot, text, state, expires, list(ids)))
        return writes

    def _write(self, writes: list[Write]) -> list[int | None | bool]:
        """Compare-and-set on the version this process last read or wrote: a row another
        process changed meanwhile is not overwritten. Returns per write the new version,
        None (deleted) or False (not written: changed elsewhere)."""
        assert self.keys is not None
        now = self.clock.now()
        outcome: list[int | None | bool] = []
        # A row written twice in one batch (a staff member's conversation, from two chats at
        # once): the second write compares with the version the first one left.
        now_at: dict[tuple[str, str], int | None] = {}
        # Statements on the table, not the ORM entity: ORM-enabled UPDATE / INSERT / DELETE go
        # through the bulk machinery (and synchronize the session), most of a write's CPU.
        c = _TABLE.c
        with self.sessions.begin() as session:
            for slot, _, state, expires, applied in writes:
                where = (c.pseudonym == slot.pseudonym) & (c.kind == slot.kind)
                seen = now_at[slot.key] if slot.key in now_at else self._version.get(slot.key)
                if state is None:
                    # finished here (cancelled, submitted): gone, unless changed elsewhere meanwhile
                    gone = delete(_TABLE).where(where)
                    if seen is not None:
                        gone = gone.where(c.version == seen)
                    session.execute(gone)
                    outcome.append(None)
                    now_at[slot.key] = None
                    continue
                token = self.keys.seal(json.dumps({"h": applied, "s": state}, ensure_ascii=False).encode(), now)
                values = {"sealed": token, "key_id": token.partition(".")[0], "expires_at": expires}
                if seen is not None:
                    if session.execute(update(_TABLE).where(where, c.version == seen)
                                       .values(version=seen + 1, **values)).rowcount:
                        outcome.append(seen + 1)
                        now_at[slot.key] = seen + 1
                        continue
                    if session.scalar(select(c.version).where(where)) is not None:
                        outcome.append(False)  # another process wrote it meanwhile
                        continue
                    # gone: finished with the step's effect here (`erase`), or elsewhere: a new row
                # A new row starts at a random version: one deleted and created again elsewhere
                # does not come back under the version a process still remembers.
                first = secrets.randbelow(1 << 30) + 1
                maker = postgresql.insert if is_postgres(session) else sqlite.insert
                made = session.execute(maker(_TABLE).values(pseudonym=slot.pseudonym, kind=slot.kind,
                                                                  version=first, **values)
                                       .on_conflict_do_nothing(index_elements=["pseudonym", "kind"])).rowcount
                outcome.append(first if made else False)  # not made: created elsewhere meanwhile
                if made:
                    now_at[slot.key] = first
        return outcome

    @staticmethod
    def erase(session: Session, kind: str, pseudonym: str) -> None:
        """Delete a conversation in the caller's transaction (with the step's effect)."""
        session.execute(delete(Conversation).where(Conversation.pseudonym == pseudonym, Conversation.kind == kind))

    # the job -----------------------------------------------------------------------------------
    def maintain(self, bot_data: dict[str, Any] | None = None) -> tuple[int, int]:
        """Delete expired conversations; re-seal live ones under the current key, so that the
        keys of past periods can be destroyed. Returns (deleted, re-sealed)."""
        if not self.enabled:
            return 0, 0
        assert self.keys is not None
        if bot_data is not None and self._dirty:
            pending = list(self._dirty.values())
            for slot, u in pending:
                writes = self._changes(bot_data, [slot], u)
                if writes:
                    self._written(writes, self._write(writes))
                self._dirty.pop(slot.key, None)
        now = self.clock.now()
        current = self.keys.current_key_id(now)
        with self.sessions.begin() as session:
            gone = session.execute(delete(Conversation).where(Conversation.expires_at <= now)).rowcount or 0
            old = list(session.execute(select(Conversation.pseudonym, Conversation.kind)
                                       .where(Conversation.key_id != current)))
        resealed = 0
        for pseudonym, kind in old:
            # a transaction per row: no lock held across the whole table while flushes write
            with self.sessions.begin() as session:
                resealed += self.reseal_rows(session, self.keys, now,
                                             (Conversation.pseudonym == pseudonym) & (Conversation.kind == kind)
                                             & (Conversation.key_id != current))
        cutoff = time.monotonic() - FORGET_KNOWN
        for key in [k for k, seen in self._known.items() if seen < cutoff]:
            self._known.pop(key, None)
            self._forget(key)
        return gone, resealed

    @staticmethod
    def reseal_rows(session: Session, keys: EphemeralKeys, now: datetime, where: Any) -> int:
        """Re-seal the conversations matching `where` under the current key; returns how many.
        Shared by the job above and the journal upkeep (bot/resealing.py). The caller commits."""
        moved = 0
        for pseudonym, kind, sealed in session.execute(
                select(Conversation.pseudonym, Conversation.kind, Conversation.sealed).where(where)).all():
            try:
                data = keys.open(sealed)
            except KeyGone:
                continue  # its key is gone: unreadable, it goes when it expires
            except SealError:
                log.warning("a stored conversation does not open with its key: left as it is")
                continue
            token = keys.seal(data, now)
            # compare-and-set: a write that came meanwhile is newer, and left alone. The version
            # stays: the content is the same, so no process needs to read it again.
            moved += session.execute(update(Conversation)
                                     .where(Conversation.pseudonym == pseudonym, Conversation.kind == kind,
                                            Conversation.sealed == sealed)
                                     .values(sealed=token, key_id=key_id_of(token))).rowcount or 0
        return moved

    @staticmethod
    def key_ids(session: Session) -> set[str]:
        """The journal keys stored conversations still need."""
        return set(session.scalars(select(Conversation.key_id).distinct()))


def _text(state: dict[str, Any]) -> str:
    return json.dumps(state, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


# dumping dates -------------------------------------------------------------------------------
def when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def parse_when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
