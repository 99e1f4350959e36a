"""Polling that loses nothing: each update is journaled before Telegram is told it arrived.

PTB's own Updater confirms an update (the next getUpdates offset) while its handler may
still be running, so a crash loses it. Here each batch is written to the journal in the
same transaction that advances the stored offset, and only then is the next getUpdates
sent. The journal keeps the least the handlers need (bot/minimal.py), sealed under a
rotating key (bot/sealing.py) that is destroyed once its period is over; an entry still
unprocessed then is re-sealed under the current key first (bot/resealing.py).

- Idempotent: an update Telegram delivers twice (same update_id), or that two pollers
  both journal, is inserted once (INSERT ... ON CONFLICT DO NOTHING) and handled once.
- Claimed: the process that journals an entry holds it under a lease (times from the
  database's clock), renewed while it runs; another process takes it over only once the
  lease ran out. So two processes never both handle one entry.
- Fair: each chat has a queue and one runner; a runner takes a worker slot only for the
  update at hand, so one chat's backlog holds at most one slot and its updates run
  strictly one after the other, in order.
- Retried on a timer: an attempt counts only when a handler ran and failed; the entry is
  tried again after `journal.retry_seconds` (doubling), and after `journal.max_attempts`
  failures it is given up, logged by update id and counted. A crash counts no attempt.
- Supervised: database and network errors are retried with back-off and reported once a
  minute (bot/supervise.py); a loop that still dies is restarted, and if it keeps dying
  `run()` raises `LoopGaveUp` so the process exits non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Engine, cast, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from telegram import Update
from telegram.error import Conflict, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application

from bot import chatorder, liveness, metrics
from bot.conversations import ConversationStore
from bot.deps import Deps, make_ephemeral_keys
from bot.minimal import chat_of, minimal_update
from bot.ratelimit import retry_after_seconds
from bot.resealing import reseal_expired
from bot.sealing import EphemeralKeys, SealError, key_id_of
from bot.security import DecryptionError
from bot.supervise import Backoff, LoopGaveUp, ThrottledLog, supervise
from bot.together import Together
from storage.db import checkpoint_truncate, db_now, is_postgres
from storage.models import KeyValue, PendingReceipt, UpdateJournal

log = logging.getLogger(__name__)

OFFSET_KEY = "poll_offset"
ALLOWED_UPDATES = ["message", "callback_query", "my_chat_member"]
CLAIM_BATCH = 500
DONE_REMEMBERED = 10_000
FINISH_BATCH = 200  # handled updates recorded in one transaction, at most


def to_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


@dataclass
class Entry:
    update_id: int
    data: dict
    chat: tuple[str, int]


class DurablePoller:
    def __init__(self, app: Application, deps: Deps, *, timeout: int = 30, concurrency: int | None = None,
                 keys: EphemeralKeys | None = None, engine: Engine | None = None) -> None:
        self.app = app
        self.deps = deps
        self.cfg = deps.config.journal
        self.timeout = timeout
        self.keys = keys or deps.ephemeral or make_ephemeral_keys(deps.config)
        self.engine = engine
        self.owner = secrets.token_hex(8)  # this process's name on its claims
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency or self.cfg.concurrency)
        self._queues: dict[tuple[str, int], deque[Entry]] = {}
        self._runners: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._in_hand: set[int] = set()
        # Handled here lately: a sweep that read an entry just before it was recorded does not
        # bring it back (several paths claim for this process: receiver, sweep, the chat's chain).
        self._done_ids: set[int] = set()
        self._done_order: deque[int] = deque()
        self._next_offset: int | None = None
        self._attempts: dict[int, int] = {}  # failed runs here, to time the next sweep
        self._finish_together: Together[tuple[int, bool], tuple[str, list[Entry]]] = Together(
            lambda results: self.finish_many(results), FINISH_BATCH, name="tipline-journal-finish")
        self._owner_fd: int | None = None
        # How a dying loop is restarted (tests make it quick).
        self.restart_backoff: Callable[[], Backoff] = lambda: Backoff(base=1.0, cap=30.0)
        self._tlog = ThrottledLog(log)
        self.failed_updates: set[int] = set()  # set by the error handler
        self.processed = 0
        self.failed_attempts = 0
        self.given_up = 0
        self.conflicts = 0

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    # Who is alive: each process holds an exclusive lock on a file named after it in the
    # key directory (shared by every process that shares the journal). The operating system
    # drops the lock when the process dies, however it dies: its claims are then taken over
    # at once instead of after the lease (which still covers processes on other hosts).
    def _owner_file(self, owner: str) -> Path:
        return self.keys.directory / f"owner-{owner}.lock"

    def _hold_owner_lock(self) -> None:
        if self._owner_fd is not None:
            return
        self.keys.ensure_directory()
        fd = os.open(self._owner_file(self.owner), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._owner_fd = fd

    def drop_owner_lock(self, unlink: bool = False) -> None:
        """What the operating system does when the process ends (tests simulate a kill with it)."""
        if self._owner_fd is not None:
            if unlink:
                with contextlib.suppress(OSError):
                    self._owner_file(self.owner).unlink()
            os.close(self._owner_fd)
            self._owner_fd = None

    def _clear_dead_owner_files(self) -> None:
        if not self.keys.directory.is_dir():
            return
        for path in self.keys.directory.glob("owner-*.lock"):
            owner = path.name[len("owner-"):-len(".lock")]
            if owner in self._dead_owners({owner}):
                with contextlib.suppress(OSError):
                    path.unlink()

    def _dead_owners(self, owners: set[str]) -> set[str]:
        dead: set[str] = set()
        for owner in owners - {self.owner}:
            if not owner.isalnum():
                continue
            try:
                fd = os.open(self._owner_file(owner), os.O_RDWR)
            except FileNotFoundError:
                continue  # not on this host: its lease tells
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # alive
            finally:
                os.close(fd)
            dead.add(owner)
        return dead

    @property
    def _lease(self) -> timedelta:
        return timedelta(seconds=self.cfg.lease_seconds)

    # journal -------------------------------------------------------------------------
    def _offset(self) -> int | None:
        with self.deps.sessions.begin() as session:
            row = session.get(KeyValue, OFFSET_KEY)
            return int(row.value) if row else None

    def _insert(self, session, model, values: dict, conflict_on: list[str]) -> bool:  # type: ignore[no-untyped-def]
        """INSERT ... ON CONFLICT DO NOTHING; True if the row was new."""
        return bool(self._insert_many(session, model, [values], conflict_on))

    def _journal_row(self, update_id: int, data: dict, existing: list[UpdateJournal], tags: list[str], held: bool,
                     now: datetime, lease_until: datetime) -> dict[str, Any]:
        """An update's journal row: sealed, claimed by this process unless another holds its chat."""
        token = self.keys.seal(json.dumps(data, ensure_ascii=False).encode(), now)
        return {
            "update_id": update_id, "payload_enc": token, "key_id": token.partition(".")[0],
            "received_at": to_minute(now), "attempts": 0,
            "claimed_by": None if held else self.owner, "lease_until": None if held else lease_until,
            "chat_key": existing[0].chat_key if existing else tags[0],
        }

    @staticmethod
    def _insert_many(session, model, rows: list[dict[str, Any]], conflict_on: list[str]) -> set[Any]:  # type: ignore[no-untyped-def]
        """INSERT ... ON CONFLICT DO NOTHING, one statement per hundred rows; the values of
        `conflict_on`'s first column in the rows that were new. On the table, not the ORM
        entity: an ORM-enabled INSERT goes through the bulk-insert machinery, two thirds of
        journaling an update's CPU, for rows nothing loads here."""
        maker = postgresql.insert if is_postgres(session) else sqlite.insert
        table = model.__table__
        made: set[Any] = set()
        for start in range(0, len(rows), 100):  # well under SQLite's limit of bound parameters
            stmt = (maker(table).values(rows[start:start + 100])
                    .on_conflict_do_nothing(index_elements=conflict_on).returning(table.c[conflict_on[0]]))
            made.update(session.scalars(stmt))
        return made

    def journal(self, updates: list[Update] | list[dict], *, advance_offset: bool = True) -> list[Entry]:
        """Save a batch (and, when polling, the next offset); returns the entries to handle here
        (in update_id order): the new ones of chats no other live process has."""
        return self.journal_batch(updates, advance_offset=advance_offset)[0]

    def journal_batch(self, updates: list[Update] | list[dict], *, advance_offset: bool = True
                      ) -> tuple[list[Entry], set[int]]:
        """`journal`, also returning the ids new to the journal (the others were delivered twice)."""
        if not updates:
            return [], set()
        self._hold_owner_lock()
        now = self.deps.clock.now()
        raw: dict[int, dict] = {}
        for u in updates:
            data = u if isinstance(u, dict) else u.to_dict()
            raw.setdefault(int(data["update_id"]), data)
        prepared = []
        for update_id in sorted(raw):
            data = minimal_update(raw[update_id])
            prepared.append((update_id, data, chat_of(data)))
        key_ids = self.keys.key_ids()
        tags = {chat: chatorder.candidate_tags(self.keys, chat, now, key_ids) for _, _, chat in prepared}
        fresh: list[Entry] = []
        new_ids: set[int] = set()
        with self.deps.sessions.begin() as session:
            chatorder.lock(session, [t for chat_tags in tags.values() for t in chat_tags])
            db = db_now(session)
            lease_until = db + self._lease
            # The waiting rows of every chat of the batch, in one SELECT rather than one per
            # update; a chat's second update in the batch reads them again (they changed).
            waiting = self._waiting_rows(session, [t for chat_tags in tags.values() for t in chat_tags])
            # A chat with one update in the batch (nearly all of them): its row is decided from
            # the waiting rows read above, and all such rows go in one INSERT, not one each.
            once = Counter(chat for _, _, chat in prepared)

            def waiting_of(chat: Any) -> list[UpdateJournal]:
                return sorted((r for t in tags[chat] for r in waiting.get(t, ())), key=lambda r: r.update_id)

            alone: list[tuple[int, dict, Any, list[UpdateJournal], bool, dict]] = []
            for update_id, data, chat in prepared:
                if once[chat] != 1:
                    continue
                existing = waiting_of(chat)
                if any(r.update_id == update_id for r in existing):
                    continue  # delivered twice, still waiting
                held = self._held_by_others(existing, db)
                alone.append((update_id, data, chat, existing, held,
                              self._journal_row(update_id, data, existing, tags[chat], held, now, lease_until)))

            def journaled(update_id: int, data: dict, chat: Any, existing: list[UpdateJournal], held: bool) -> None:
                new_ids.add(update_id)
                if not held:  # else another process has this chat: it takes the row up after the one it has
                    fresh.extend(self._take(session, existing, db, lease_until))
                    fresh.append(Entry(update_id, data, chat))

            made = self._insert_many(session, UpdateJournal, [values for *_, values in alone], ["update_id"])
            for update_id, data, chat, existing, held, _ in alone:
                if update_id in made:  # else delivered twice, handled already (maybe by another process)
                    journaled(update_id, data, chat, existing, held)
            first_of_chat: set[tuple[str, int]] = set()
            for update_id, data, chat in prepared:
                if once[chat] == 1:
                    continue
                if chat not in first_of_chat:
                    first_of_chat.add(chat)
                    existing = waiting_of(chat)
                else:
                    existing = list(session.scalars(
                        select(UpdateJournal).where(UpdateJournal.chat_key.in_(tags[chat]),
                                                    UpdateJournal.processed_at.is_(None))
                        .order_by(UpdateJournal.update_id)))
                if any(r.update_id == update_id for r in existing):
                    continue  # delivered twice, still waiting
                held = self._held_by_others(existing, db)
                if self._insert(session, UpdateJournal,
                                self._journal_row(update_id, data, existing, tags[chat], held, now, lease_until),
                                ["update_id"]):  # else delivered twice, handled already
                    journaled(update_id, data, chat, existing, held)
            if advance_offset:
                next_offset = max(raw) + 1
                self._insert(session, KeyValue, {"key": OFFSET_KEY, "value": str(next_offset)}, ["key"])
                session.execute(update(KeyValue)
                                .where(KeyValue.key == OFFSET_KEY, cast(KeyValue.value, BigInteger) < next_offset)
                                .values(value=str(next_offset)))
        fresh.sort(key=lambda e: e.update_id)
        return fresh, new_ids

    @staticmethod
    def _waiting_rows(session, tags: list[str]) -> dict[str, list[UpdateJournal]]:  # type: ignore[no-untyped-def]
        """The unprocessed rows carrying these chat tags, by tag, in update_id order."""
        by_tag: dict[str, list[UpdateJournal]] = {}
        unique = sorted(set(tags))
        for start in range(0, len(unique), 500):
            for row in session.scalars(select(UpdateJournal)
                                       .where(UpdateJournal.chat_key.in_(unique[start:start + 500]),
                                              UpdateJournal.processed_at.is_(None))
                                       .order_by(UpdateJournal.update_id)):
                by_tag.setdefault(row.chat_key, []).append(row)
        return by_tag

    # one chat at a time across processes (bot/chatorder.py) ------------------------------------
    def _held_by_others(self, rows: list[UpdateJournal], now: datetime) -> bool:
        """Whether another live process holds one of these rows (of one chat)."""
        owners = {r.claimed_by for r in rows if r.claimed_by and r.claimed_by != self.owner
                  and r.lease_until is not None and r.lease_until >= now}
        return bool(owners - self._dead_owners(owners))

    def _take(self, session, rows: list[UpdateJournal], now: datetime,  # type: ignore[no-untyped-def]
              lease_until: datetime) -> list[Entry]:
        """Claim the rows (of a chat nobody else holds) that are due and not this process's yet."""
        taken: list[Entry] = []
        for row in rows:
            if row.claimed_by == self.owner or row.payload_enc is None:
                continue
            if row.next_attempt_at is not None and row.next_attempt_at > now:
                continue
            row.claimed_by, row.lease_until = self.owner, lease_until
            try:
                data = self._open(row)
            except (SealError, DecryptionError, ValueError):
                log.error("journal entry %s cannot be opened (its key is gone): given up", row.update_id)
                self.given_up += 1
                self._erase(row)
                continue
            taken.append(Entry(row.update_id, data, chat_of(data)))
        return taken

    def _next_of_chats(self, session, tags: list[str], now: datetime) -> dict[str, list[Entry]]:  # type: ignore[no-untyped-def]
        """After rows of these chats were recorded: each chat's rows that came meanwhile (left
        for this process by another one), unless another live process holds the chat; one SELECT."""
        by_tag = self._waiting_rows(session, tags)
        taken: dict[str, list[Entry]] = {}
        for tag, rows in by_tag.items():
            if not self._held_by_others(rows, now):
                taken[tag] = self._take(session, rows, now, now + self._lease)
        return taken

    def pending(self) -> list[int]:
        with self.deps.sessions.begin() as session:
            return list(session.scalars(select(UpdateJournal.update_id)
                                        .where(UpdateJournal.processed_at.is_(None))
                                        .order_by(UpdateJournal.update_id)))

    def _open(self, row: UpdateJournal) -> dict:
        assert row.payload_enc is not None
        if row.key_id is None:  # journaled before the journal had keys of its own
            return minimal_update(json.loads(self.deps.keyring.decrypt(row.payload_enc)))
        return json.loads(self.keys.open(row.payload_enc))

    def claim(self, in_hand: frozenset[int] = frozenset()) -> tuple[list[Entry], list[int]]:
        """Renew this process's leases and claim what is due: entries of no live process
        (a crash's leftovers, entries whose lease ran out) and failed entries whose retry
        time has come. Returns the entries and the ids that could not be opened (given up)."""
        self._hold_owner_lock()
        entries: list[Entry] = []
        lost: list[int] = []
        with self.deps.sessions.begin() as session:
            now = db_now(session)
            lease_until = now + self._lease
            session.execute(update(UpdateJournal)
                            .where(UpdateJournal.claimed_by == self.owner, UpdateJournal.processed_at.is_(None))
                            .values(lease_until=lease_until))
            owners = set(session.scalars(select(UpdateJournal.claimed_by).distinct()
                                         .where(UpdateJournal.processed_at.is_(None),
                                                UpdateJournal.claimed_by.is_not(None))))
            dead = self._dead_owners(owners)
            query = (select(UpdateJournal)
                     .where(UpdateJournal.processed_at.is_(None),
                            or_(UpdateJournal.claimed_by == self.owner, UpdateJournal.claimed_by.is_(None),
                                UpdateJournal.claimed_by.in_(dead) if dead else UpdateJournal.claimed_by.is_(None),
                                UpdateJournal.lease_until.is_(None), UpdateJournal.lease_until < now),
                            or_(UpdateJournal.next_attempt_at.is_(None), UpdateJournal.next_attempt_at <= now))
                     .order_by(UpdateJournal.update_id).limit(CLAIM_BATCH))
            if is_postgres(session):
                query = query.with_for_update(skip_locked=True)
            rows = [row for row in session.scalars(query) if row.update_id not in in_hand]
            blocked = self._blocked_chats(session, rows, now, dead)
            for row in rows:
                if row.chat_key in blocked and row.claimed_by != self.owner:
                    continue  # another process has the chat (or is deciding about it)
                row.claimed_by, row.lease_until = self.owner, lease_until
                try:
                    data = self._open(row) if row.payload_enc is not None else None
                except (SealError, DecryptionError, ValueError):
                    data = None
                if data is None:
                    lost.append(row.update_id)
                    self._erase(row)
                    continue
                entries.append(Entry(row.update_id, data, chat_of(data)))
        for owner in dead:
            with contextlib.suppress(OSError):
                self._owner_file(owner).unlink()
        for update_id in lost:
            log.error("journal entry %s cannot be opened (its key is gone): given up", update_id)
        return entries, lost

    def _blocked_chats(self, session, rows: list[UpdateJournal], now: datetime,  # type: ignore[no-untyped-def]
                       dead: set[str]) -> set[str]:
        """The chats among `rows` this sweep must leave alone: held by another live process,
        or locked by one deciding about them right now."""
        tags = sorted({r.chat_key for r in rows if r.chat_key})
        blocked = {t for t in tags if not chatorder.try_lock(session, t)}
        free = [t for t in tags if t not in blocked]
        for start in range(0, len(free), 200):
            for tag, owner in session.execute(
                select(UpdateJournal.chat_key, UpdateJournal.claimed_by).distinct()
                .where(UpdateJournal.chat_key.in_(free[start:start + 200]), UpdateJournal.processed_at.is_(None),
                       UpdateJournal.claimed_by.is_not(None), UpdateJournal.claimed_by != self.owner,
                       UpdateJournal.lease_until >= now)
            ):
                if owner not in dead:
                    blocked.add(tag)
        return blocked

    def _erase(self, row: UpdateJournal) -> None:
        row.processed_at = to_minute(self.deps.clock.now())
        row.payload_enc = None  # the sender's chat goes with it
        row.key_id = None
        row.claimed_by = None
        row.lease_until = None
        row.next_attempt_at = None
        row.chat_key = None

    def finish(self, update_id: int, failed: bool) -> str:
        """Record the outcome of a handler run: "done", "retry" or "given_up"."""
        return self.finish_and_next(update_id, failed)[0]

    def finish_and_next(self, update_id: int, failed: bool) -> tuple[str, list[Entry]]:
        """`finish`, and the chat's rows another process left for this one meanwhile."""
        return self.finish_many([(update_id, failed)])[0]

    def finish_many(self, results: list[tuple[int, bool]]) -> list[tuple[str, list[Entry]]]:
        """`finish_and_next` for several updates (of different chats) in one transaction:
        what 200 chats finishing at once cost 200 transactions of four statements each
        costs a few statements here (tests/integration/test_update_journal.py counts them).
        All or nothing: a crash before the commit leaves every one of them claimed and
        unprocessed, to be taken up again (and, being recorded in its conversation as
        applied, not applied twice: bot/conversations.py)."""
        if not results:
            return []
        outcomes: dict[int, tuple[str, int, str | None]] = {}
        following: dict[str, list[Entry]] = {}
        with self.deps.sessions.begin() as session:
            ids = [update_id for update_id, _ in results]
            rows = {r.update_id: r for r in session.scalars(
                select(UpdateJournal).where(UpdateJournal.update_id.in_(ids)))}
            live = {i: r for i, r in rows.items() if r.processed_at is None}
            tags = sorted({r.chat_key for r in live.values() if r.chat_key})
            chatorder.lock(session, tags)
            now = db_now(session) if tags or any(f for _, f in results) else None
            for update_id, failed in results:
                row = live.get(update_id)
                if row is None:
                    continue
                outcome = "done"
                if failed:
                    assert now is not None
                    row.attempts += 1
                    outcome = "given_up"
                    if row.attempts < self.cfg.max_attempts:
                        delay = self.cfg.retry_seconds * 2 ** (row.attempts - 1)
                        row.next_attempt_at = now + timedelta(seconds=delay)
                        outcome = "retry"
                tag = row.chat_key
                outcomes[update_id] = (outcome, row.attempts, tag)
                if outcome != "retry":
                    self._erase(row)
            if tags:
                assert now is not None
                following = self._next_of_chats(session, tags, now)
        answers: list[tuple[str, list[Entry]]] = []
        for update_id, _ in results:
            if update_id not in outcomes:
                answers.append(("done", []))
                continue
            outcome, attempts, tag = outcomes[update_id]
            if outcome == "given_up":
                log.error("journal entry %s given up after %d failed attempts", update_id, attempts)
            answers.append((outcome, following.pop(tag, []) if tag else []))
        return answers

    # maintenance -----------------------------------------------------------------------
    def prune(self) -> int:
        """Forget handled ids older than `journal.keep_ids_hours`."""
        cutoff = self.deps.clock.now() - timedelta(hours=self.cfg.keep_ids_hours)
        with self.deps.sessions.begin() as session:
            result = session.execute(delete(UpdateJournal).where(UpdateJournal.processed_at.is_not(None),
                                                                 UpdateJournal.processed_at < cutoff))
            return result.rowcount or 0

    def reseal(self) -> int:
        """Move what is still needed off the keys whose period is over (bot/resealing.py)."""
        with self.deps.sessions.begin() as session:
            return reseal_expired(session, self.keys, self.deps.clock.now())

    def destroy_keys(self) -> list[str]:
        """Destroy the journal keys no unprocessed entry needs (once their period is over).
        Run after `reseal`, nothing needs an expired key any more."""
        with self.deps.sessions.begin() as session:
            needed = set(session.scalars(select(UpdateJournal.key_id).distinct()
                                         .where(UpdateJournal.payload_enc.is_not(None),
                                                UpdateJournal.key_id.is_not(None))))
            # A chat's tag names its key: kept while an unprocessed row carries it (bot/chatorder.py).
            for tag in session.scalars(select(UpdateJournal.chat_key).distinct()
                                       .where(UpdateJournal.processed_at.is_(None),
                                              UpdateJournal.chat_key.is_not(None))):
                needed.add(chatorder.key_id_of_tag(tag))
            # A receipt waiting for delivery is sealed under the same keys (bot/services/receipts.py).
            for token in session.scalars(select(PendingReceipt.sealed)):
                with contextlib.suppress(SealError):
                    needed.add(key_id_of(token))
            # So are conversations in progress (bot/conversations.py; re-sealed by their own job).
            needed |= ConversationStore.key_ids(session)
        return self.keys.destroy_unneeded(self.deps.clock.now(), needed)

    def maintain(self) -> tuple[int, list[str]]:
        """The journal's periodic job: prune, re-seal what outlives its key, destroy keys,
        truncate SQLite's WAL."""
        pruned = self.prune()
        self.reseal()  # committed before any key it moved off is destroyed
        gone = self.destroy_keys()
        self._clear_dead_owner_files()
        engine = self.engine or self.deps.sessions.kw.get("bind")
        if engine is not None:
            checkpoint_truncate(engine)
        return pruned, gone

    def first_failure(self, update_id: int) -> bool:
        """True unless this update already failed in this process (the person was told then)."""
        return update_id not in self._attempts

    # handling ----------------------------------------------------------------------------
    def accept(self, entries: list[Entry]) -> None:
        """Handle entries journaled by a receiver of this process (bot/webhook.py)."""
        self._enqueue(entries)

    def _enqueue(self, entries: list[Entry]) -> None:
        for entry in entries:
            if entry.update_id in self._in_hand or entry.update_id in self._done_ids:
                continue
            self._in_hand.add(entry.update_id)
            self._queues.setdefault(entry.chat, deque()).append(entry)
            if entry.chat not in self._runners:
                self._runners[entry.chat] = asyncio.create_task(self._run_chat(entry.chat),
                                                                name="tipline-chat")

    async def _run_chat(self, chat: tuple[str, int]) -> None:
        """One chat's updates, one after the other; a worker slot only for the one at hand."""
        queue = self._queues[chat]
        try:
            while queue:
                entry = queue.popleft()
                try:
                    async with self._slots:
                        failed = await self._handle(entry)
                    await self._record(entry, failed)
                finally:
                    self._in_hand.discard(entry.update_id)
        finally:
            # No await since the queue was found empty: nobody can be waiting on this chat.
            for left in queue:  # only when cancelled: they stay claimed, the sweep retakes them
                self._in_hand.discard(left.update_id)
            self._queues.pop(chat, None)
            self._runners.pop(chat, None)

    async def _handle(self, entry: Entry) -> bool:
        self.failed_updates.discard(entry.update_id)
        try:
            update = Update.de_json(entry.data, self.app.bot)
            await self.app.process_update(update)
            metrics.UPDATES_HANDLED.inc()
        except Exception as exc:  # noqa: BLE001 - PTB gives handler errors to the error handler; this is the rest
            log.error("journal entry %s could not be handled (%s)", entry.update_id, type(exc).__name__)
            return True
        failed = entry.update_id in self.failed_updates
        self.failed_updates.discard(entry.update_id)
        return failed

    async def _record(self, entry: Entry, failed: bool) -> None:
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            try:
                outcome, following = await self._finish(entry.update_id, failed)
                break
            except Exception as exc:  # noqa: BLE001 - the database is away: keep the result, retry
                self._tlog("record", logging.WARNING, "journal: recording a handled update failed (%s); retrying",
                           type(exc).__name__)
                if self._stopping.is_set() and backoff.attempts > 3:
                    return  # left claimed: handled again after a restart
                await asyncio.sleep(backoff.next_delay())
        if outcome != "retry":
            self._done_ids.add(entry.update_id)
            self._done_order.append(entry.update_id)
            if len(self._done_order) > DONE_REMEMBERED:
                self._done_ids.discard(self._done_order.popleft())
        self._enqueue(following)  # the chat's queue is still running: they follow in order
        if outcome == "done":
            self.processed += 1
            self._attempts.pop(entry.update_id, None)
            return
        self.failed_attempts += 1
        if outcome == "retry":  # the sweep takes it up again when its time has come
            attempts = self._attempts.get(entry.update_id, 0) + 1
            self._attempts[entry.update_id] = attempts
            delay = self.cfg.retry_seconds * 2 ** (attempts - 1) + 0.1
            asyncio.get_running_loop().call_later(delay, self._wake.set)
        else:
            self._attempts.pop(entry.update_id, None)
            self.given_up += 1

    async def _finish(self, update_id: int, failed: bool) -> tuple[str, list[Entry]]:
        """Record a handled update with the others finishing meanwhile (a group commit):
        the first waits for nobody; those that finish while its transaction runs go
        together in the next one (`finish_many`), at most FINISH_BATCH at a time."""
        return await self._finish_together((update_id, failed))

    # loops ---------------------------------------------------------------------------------
    async def run(self, fetch: bool = True) -> None:
        """Fetch (unless updates come by webhook: bot/webhook.py) and handle side by side until
        stopped. Raises `LoopGaveUp` if a loop keeps dying."""
        self._hold_owner_lock()
        sweeper = asyncio.create_task(supervise("update journal sweep", self._sweep_loop,
                                                backoff=self.restart_backoff()), name="tipline-sweep")
        try:
            if fetch:
                await supervise("poller", self._fetch_loop, backoff=self.restart_backoff())
            else:
                stopped = asyncio.create_task(self._stopping.wait())
                try:
                    await asyncio.wait({sweeper, stopped}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopped.cancel()
                if sweeper.done() and not sweeper.cancelled() and isinstance(sweeper.exception(), LoopGaveUp):
                    raise sweeper.exception()  # type: ignore[misc]
        except (asyncio.CancelledError, LoopGaveUp):  # killed, or gave up: the journal keeps the rest
            await self._cancel(sweeper)
            raise
        # A graceful stop: what was fetched is handled before we go.
        self._wake.set()
        while self._runners:
            await asyncio.gather(*list(self._runners.values()), return_exceptions=True)
        await self._cancel(sweeper)
        with contextlib.suppress(Exception):  # what waits for a retry: free for the next process at once
            await asyncio.to_thread(self.release_mine)
        if sweeper.done() and not sweeper.cancelled() and isinstance(sweeper.exception(), LoopGaveUp):
            raise sweeper.exception()  # type: ignore[misc]

    def release_mine(self) -> None:
        with self.deps.sessions.begin() as session:
            session.execute(update(UpdateJournal)
                            .where(UpdateJournal.claimed_by == self.owner, UpdateJournal.processed_at.is_(None))
                            .values(claimed_by=None, lease_until=None))

    async def _cancel(self, sweeper: asyncio.Task[None]) -> None:
        finisher = self._finish_together.task
        tasks = [sweeper, *self._runners.values(), *([finisher] if finisher else [])]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _sweep_loop(self) -> None:
        """Renew leases; take up crash leftovers, entries of dead processes and due retries."""
        backoff = Backoff(base=0.5, cap=30.0)
        every = max(0.2, min(self.cfg.lease_seconds / 3, 10.0))
        while True:
            try:
                entries, lost = await asyncio.to_thread(self.claim, frozenset(self._in_hand))
            except Exception as exc:  # noqa: BLE001 - database trouble: retry, say so once a minute
                self._tlog("sweep", logging.WARNING, "update journal unavailable (%s): retrying", type(exc).__name__)
                await self._sleep_or_wake(backoff.next_delay())
                continue
            if backoff.attempts:
                self._tlog.recovered("sweep", "update journal available again")
            backoff.reset()
            self.given_up += len(lost)
            self._enqueue(entries)
            if self._stopping.is_set() and not self._runners:
                return
            await self._sleep_or_wake(every)

    async def _sleep_or_wake(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()

    async def _fetch_loop(self) -> None:
        await self.app.bot.delete_webhook(drop_pending_updates=False)
        backoff = Backoff(base=0.5, cap=30.0)
        conflict = Backoff(base=1.0, cap=5.0)
        while not self._stopping.is_set():
            if self._next_offset is None:
                try:
                    self._next_offset = await asyncio.to_thread(self._offset)
                except Exception as exc:  # noqa: BLE001
                    self._tlog("db", logging.WARNING, "poller: database unavailable (%s): retrying",
                               type(exc).__name__)
                    await self._sleep(backoff.next_delay())
                    continue
            try:
                updates = await self._get_updates(self._next_offset)
            except Conflict:
                self.conflicts += 1
                self._tlog("conflict", logging.ERROR,
                           "another process is polling this bot's token (409 Conflict); "
                           "tipline needs one poller per token")
                await self._sleep(conflict.next_delay())
                continue
            except RetryAfter as exc:
                await self._sleep(retry_after_seconds(exc))
                continue
            except (NetworkError, TelegramError) as exc:
                self._tlog("network", logging.WARNING, "getUpdates failed (%s): retrying", type(exc).__name__)
                await self._sleep(backoff.next_delay())
                continue
            liveness.beat("receiver")
            if backoff.attempts:
                self._tlog.recovered("network", "getUpdates works again")
            # (409s alternate with successes while two pollers overlap: their line stays once a minute)
            backoff.reset()
            conflict.reset()
            if not updates:
                continue
            await self._journal_batch(updates)

    async def _journal_batch(self, updates: list[dict]) -> None:
        """Journal a batch, however long the database takes to come back: the batch is not
        confirmed to Telegram (the next offset is not sent) before it is journaled."""
        backoff = Backoff(base=0.5, cap=30.0)
        while True:
            try:
                fresh = await asyncio.to_thread(self.journal, updates)
                break
            except Exception as exc:  # noqa: BLE001 - database trouble: keep the batch, retry
                self._tlog("db", logging.WARNING, "poller: journaling failed (%s): retrying", type(exc).__name__)
                if self._stopping.is_set():
                    return  # not confirmed: Telegram sends the batch again after a restart
                await self._sleep(backoff.next_delay())
        if backoff.attempts:
            self._tlog.recovered("db", "poller: database available again")
        self._next_offset = max(self._next_offset or 0, max(int(u["update_id"]) for u in updates) + 1)
        self._enqueue(fresh)

    async def _fetch_raw(self, offset: int | None) -> list[dict]:
        """getUpdates' answer as JSON. Bot.get_updates would make Update objects of it, which
        the journal turns back into JSON at once (and handling parses again from the journal):
        that parse was a twentieth of an intake update's CPU. The timeouts are get_updates'
        (the long-poll's time on top of the read timeout); errors are the same exceptions."""
        bot = self.app.bot
        read_timeout = (bot._request[0].read_timeout or 0) + self.timeout  # noqa: SLF001 - the getUpdates request
        data = {"timeout": self.timeout, "offset": offset, "allowed_updates": ALLOWED_UPDATES}
        result = await bot._post("getUpdates", data, read_timeout=read_timeout)  # noqa: SLF001
        return list(result or [])

    async def _get_updates(self, offset: int | None) -> list[dict]:
        fetch = asyncio.create_task(self._fetch_raw(offset))
        stop = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait({fetch, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not fetch.done():
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError, TelegramError):
                    await fetch
        if fetch not in done:
            return []
        return list(fetch.result())

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    # for tests and tools -------------------------------------------------------------------
    async def process_pending(self) -> None:
        """Claim everything due and handle it; wait until done."""
        entries, lost = await asyncio.to_thread(self.claim, frozenset(self._in_hand))
        self.given_up += len(lost)
        self._enqueue(entries)
        while self._runners:
            await asyncio.gather(*list(self._runners.values()), return_exceptions=True)
