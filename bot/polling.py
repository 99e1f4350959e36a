"""Polling that loses nothing: each update is journaled before Telegram is told it arrived.

PTB's own Updater confirms an update (the next getUpdates offset) while its handler may
still be running, so a crash loses it. Here each batch is written to the journal (payload
encrypted; it names the sender) in the same transaction that advances the stored offset,
and only then is the next getUpdates sent. Updates are processed from the journal and
their payload erased; on start, anything left unprocessed by a crash is processed first.
An update Telegram delivers twice (same update_id) is recognised and processed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import timedelta

from sqlalchemy import delete, select, update
from telegram import Update
from telegram.error import Conflict, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application

from bot import liveness, metrics
from bot.deps import Deps
from bot.ratelimit import retry_after_seconds
from storage.models import KeyValue, UpdateJournal

log = logging.getLogger(__name__)

OFFSET_KEY = "poll_offset"
ALLOWED_UPDATES = ["message", "callback_query", "my_chat_member"]
MAX_ATTEMPTS = 3
KEEP_IDS = timedelta(days=2)


def _chat_of(data: dict) -> object:
    """Whose update it is, to keep one chat's updates in order (never stored or logged)."""
    for kind in ("message", "edited_message", "my_chat_member"):
        if kind in data:
            return ("chat", data[kind]["chat"]["id"])
    query = data.get("callback_query")
    if query is not None:
        message = query.get("message")
        return ("chat", message["chat"]["id"]) if message else ("user", query["from"]["id"])
    return ("update", data.get("update_id"))


class DurablePoller:
    def __init__(self, app: Application, deps: Deps, *, timeout: int = 30, concurrency: int = 64) -> None:
        self.app = app
        self.deps = deps
        self.timeout = timeout
        self._stopping = asyncio.Event()
        self._journaled = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._chat_locks: dict[object, asyncio.Lock] = {}  # in memory only, gone when idle
        self.failed_updates: set[int] = set()  # set by the error handler
        self.processed = 0

    def stop(self) -> None:
        self._stopping.set()

    # journal -------------------------------------------------------------------------
    def _offset(self) -> int | None:
        with self.deps.sessions.begin() as session:
            row = session.get(KeyValue, OFFSET_KEY)
            return int(row.value) if row else None

    def journal(self, updates: list[Update]) -> list[int]:
        """Save a fetched batch and the next offset; returns the ids new to the journal."""
        if not updates:
            return []
        now = self.deps.clock.now()
        fresh: list[int] = []
        with self.deps.sessions.begin() as session:
            ids = [u.update_id for u in updates]
            known = set(session.scalars(select(UpdateJournal.update_id).where(UpdateJournal.update_id.in_(ids))))
            for u in updates:
                if u.update_id in known or u.update_id in fresh:
                    continue  # delivered twice: processed (or queued) already
                payload = json.dumps(u.to_dict(), ensure_ascii=False)
                session.add(UpdateJournal(update_id=u.update_id, payload_enc=self.deps.keyring.encrypt(payload),
                                          received_at=now, attempts=0))
                fresh.append(u.update_id)
            next_offset = str(max(ids) + 1)
            row = session.get(KeyValue, OFFSET_KEY)
            if row is None:
                session.add(KeyValue(key=OFFSET_KEY, value=next_offset))
            elif int(row.value) < int(next_offset):
                row.value = next_offset
        return fresh

    def pending(self) -> list[int]:
        with self.deps.sessions.begin() as session:
            return list(
                session.scalars(
                    select(UpdateJournal.update_id)
                    .where(UpdateJournal.processed_at.is_(None))
                    .order_by(UpdateJournal.update_id)
                )
            )

    def _load(self, update_id: int) -> tuple[dict, int] | None:
        """The update's payload, counting this attempt (so a poison update is given up)."""
        with self.deps.sessions.begin() as session:
            row = session.get(UpdateJournal, update_id)
            if row is None or row.processed_at is not None or row.payload_enc is None:
                return None
            row.attempts += 1
            return json.loads(self.deps.keyring.decrypt(row.payload_enc)), row.attempts

    async def process(self, update_id: int) -> None:
        loaded = self._load(update_id)
        if loaded is not None:
            await self._handle(update_id, *loaded)

    async def _handle(self, update_id: int, data: dict, attempts: int) -> None:
        update = Update.de_json(data, self.app.bot)
        self.failed_updates.discard(update_id)
        await self.app.process_update(update)
        metrics.UPDATES_HANDLED.inc()
        failed = update_id in self.failed_updates
        with self.deps.sessions.begin() as session:
            row = session.get(UpdateJournal, update_id)
            if row is None:
                return
            if failed and attempts < MAX_ATTEMPTS:
                log.warning("journal entry %s failed (attempt %s): will try again", update_id, attempts)
                return
            if failed:
                log.error("journal entry %s failed %s times: given up", update_id, attempts)
            row.processed_at = self.deps.clock.now()
            row.payload_enc = None  # the sender's identity goes with it
        self.processed += 1

    def prune(self) -> int:
        cutoff = self.deps.clock.now() - KEEP_IDS
        with self.deps.sessions.begin() as session:
            result = session.execute(
                delete(UpdateJournal).where(UpdateJournal.processed_at.is_not(None), UpdateJournal.processed_at < cutoff)
            )
            return result.rowcount or 0

    def erase_unprocessable(self) -> None:
        """Payloads that failed for good are erased too."""
        with self.deps.sessions.begin() as session:
            session.execute(
                update(UpdateJournal)
                .where(UpdateJournal.processed_at.is_(None), UpdateJournal.attempts >= MAX_ATTEMPTS)
                .values(processed_at=self.deps.clock.now(), payload_enc=None)
            )

    # loop --------------------------------------------------------------------------
    async def dispatch_pending(self) -> None:
        """Start handling every journaled update not yet in hand: chats side by side, each
        chat's updates in order. Handlers pace their replies (one message a second in a
        private chat), so one chat must never hold up the others; within a chat, order is
        what the person did."""
        for update_id in self.pending():
            if update_id in self._in_flight:
                continue
            loaded = self._load(update_id)
            if loaded is None:
                continue
            self._in_flight.add(update_id)
            await self._slots.acquire()
            task = asyncio.create_task(self._in_chat_order(update_id, *loaded))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.erase_unprocessable()

    async def process_pending(self) -> None:
        """Handle everything journaled, and wait until it is done."""
        await self.dispatch_pending()
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def _in_chat_order(self, update_id: int, data: dict, attempts: int) -> None:
        key = _chat_of(data)
        lock = self._chat_locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                await self._handle(update_id, data, attempts)
        finally:
            self._slots.release()
            self._in_flight.discard(update_id)
            if not lock.locked() and self._chat_locks.get(key) is lock:
                del self._chat_locks[key]

    async def run(self) -> None:
        """Fetch and process side by side: the next getUpdates (which confirms the last
        batch to Telegram) goes out while the batch is being handled, as with PTB's own
        Updater; unlike it, the batch is in the journal by then."""
        await self.app.bot.delete_webhook(drop_pending_updates=False)
        processor = asyncio.create_task(self._process_loop(), name="tipline-updates")
        try:
            await self._fetch_loop()
        except asyncio.CancelledError:  # killed: stop at once, the journal keeps the rest
            processor.cancel()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(processor, *self._tasks, return_exceptions=True)
            raise
        # A graceful stop: what was fetched is processed before we go.
        self._stopping.set()
        self._journaled.set()
        await processor

    async def _process_loop(self) -> None:
        while True:
            await self.dispatch_pending()  # first of all: what a crash left behind
            if self._stopping.is_set():
                await self.process_pending()
                return
            await self._journaled.wait()
            self._journaled.clear()

    async def _fetch_loop(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            try:
                updates = await self._get_updates(self._offset())
            except Conflict:
                log.error("another process is polling this bot's token; tipline needs one process per token")
                await self._sleep(10)
                continue
            except RetryAfter as exc:
                await self._sleep(retry_after_seconds(exc))
                continue
            except (NetworkError, TelegramError) as exc:
                log.warning("getUpdates failed (%s): retrying in %.0f s", type(exc).__name__, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 60)
                continue
            backoff = 1.0
            liveness.beat("receiver")
            if self.journal(updates):
                self._journaled.set()

    async def _get_updates(self, offset: int | None) -> list[Update]:
        fetch = asyncio.create_task(
            self.app.bot.get_updates(offset=offset, timeout=self.timeout, allowed_updates=ALLOWED_UPDATES)
        )
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
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass
