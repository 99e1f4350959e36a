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
- Loaded lazily, on the first update of a chat after a start; written after each update
  that changed it (in a worker thread), or in the same transaction as the step's effect
  where there is one (`erase`: a submitted tip, a recorded outcome, a saved note).
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
from storage.models import Conversation

log = logging.getLogger(__name__)

FORGET_KNOWN = 25 * 3600.0  # seconds: a chat idle this long is looked up again (nothing is left of it)
APPLIED_KEPT = 16  # ids of the latest updates applied to a conversation, kept with it


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


class ConversationStore:
    def __init__(self, sessions: sessionmaker[Session], keyring: Keyring, keys: EphemeralKeys | None,
                 clock: Clock) -> None:
        self.sessions, self.keyring, self.keys, self.clock = sessions, keyring, keys, clock
        self._known: dict[tuple[str, str], float] = {}  # loaded (or found absent) in this process
        self._stored: dict[tuple[str, str], str] = {}  # the state as last written (JSON)
        self._dirty: dict[tuple[str, str], tuple[Slot, int]] = {}  # a write that failed: tried again
        self._applied: dict[tuple[str, str], list[int]] = {}  # update ids applied to each (latest last)
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
        """Bring the slots' stored state into memory if this process has not seen them yet.
        True if the update was applied to one of them already (handled and saved, before a
        restart or before a newer update of the chat)."""
        now = time.monotonic()
        missing = [s for s in slots if s.key not in self._known]
        for s in slots:
            if s.key in self._known:
                self._known[s.key] = now
        if not missing or not self.enabled:
            return self._was_applied(slots, update_id)
        rows = await asyncio.to_thread(self._read, {s.pseudonym for s in missing})
        wanted = {s.key: s for s in missing}
        handled = False
        for pseudonym, kind_name, sealed in rows:
            slot = wanted.get((kind_name, pseudonym))
            kind = KINDS.get(kind_name)
            if slot is None or kind is None:
                continue
            try:
                blob = json.loads(self.keys.open(sealed))  # type: ignore[union-attr]
                kind.put(bot_data, slot.ident, blob["s"])
            except (SealError, ValueError, KeyError, TypeError) as exc:
                # its key is gone (or it is not ours to read): it is as if it had expired
                log.warning("a stored conversation (%s) could not be opened (%s): dropped", kind_name,
                            type(exc).__name__)
                continue
            self._stored[slot.key] = _text(blob["s"])
            self._applied[slot.key] = [int(u) for u in blob.get("h", [])][-APPLIED_KEPT:]
        for s in missing:
            self._known[s.key] = now
        return self._was_applied(slots, update_id)

    def _was_applied(self, slots: list[Slot], update_id: int) -> bool:
        return any(update_id in self._applied.get(s.key, ()) for s in slots)

    def _read(self, pseudonyms: set[str]) -> list[tuple[str, str, str]]:
        with self.sessions.begin() as session:
            return [tuple(r) for r in session.execute(  # type: ignore[misc]
                select(Conversation.pseudonym, Conversation.kind, Conversation.sealed)
                .where(Conversation.pseudonym.in_(sorted(pseudonyms))))]

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
            await asyncio.to_thread(self._write, writes)
        except Exception as exc:  # noqa: BLE001 - the database is away: the job writes it later
            self._tlog("flush", logging.WARNING, "conversations: saving failed (%s); will try again",
                       type(exc).__name__)
            for slot, *_ in writes:
                self._dirty[slot.key] = (slot, update_id)
            return
        for slot, text, _, _, _ in writes:
            self._dirty.pop(slot.key, None)
            if text is None:
                self._stored.pop(slot.key, None)
            else:
                self._stored[slot.key] = text

    def _changes(self, bot_data: dict[str, Any], slots: Iterable[Slot], update_id: int, applied: bool = False
                 ) -> list[tuple[Slot, str | None, dict[str, Any] | None, datetime | None, list[int]]]:
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

    def _write(self, writes: list[tuple[Slot, str | None, dict[str, Any] | None, datetime | None, list[int]]]
               ) -> None:
        assert self.keys is not None
        now = self.clock.now()
        with self.sessions.begin() as session:
            for slot, _, state, expires, applied in writes:
                if state is None:
                    self.erase(session, slot.kind, slot.pseudonym)
                    continue
                token = self.keys.seal(json.dumps({"h": applied, "s": state}, ensure_ascii=False).encode(), now)
                values = {"sealed": token, "key_id": token.partition(".")[0], "expires_at": expires}
                dialect = session.get_bind().dialect.name
                maker = postgresql.insert if dialect == "postgresql" else sqlite.insert
                session.execute(maker(Conversation).values(pseudonym=slot.pseudonym, kind=slot.kind, **values)
                                .on_conflict_do_update(index_elements=["pseudonym", "kind"], set_=values))

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
                    self._write(writes)
                    text = writes[0][1]
                    if text is None:
                        self._stored.pop(slot.key, None)
                    else:
                        self._stored[slot.key] = text
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
            self._stored.pop(key, None)
            self._applied.pop(key, None)
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
            # compare-and-set: a write that came meanwhile is newer, and left alone
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
