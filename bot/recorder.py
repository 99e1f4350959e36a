"""Commits the outcome of each send as soon as Telegram has answered.

The time between Telegram's answer and the commit that records it is the one moment
in which a crash makes the outbox send a message twice, so it is kept as short as the
database allows: outcomes go straight from the event loop to a thread of their own
(a thread-safe queue, no hop through the loop), which commits each as it arrives. What
arrived while a commit was running goes in the next transaction together (a batch is
only ever what came in concurrently: nothing waits to fill one), and no outcome ever
waits behind a claim, a lease renewal or a request to Telegram, which run elsewhere.

While the database is away the thread keeps trying with back-off; the leases of the
rows concerned are renewed meanwhile, so nobody else takes them. A graceful stop
flushes every outcome handed over; a crash (`kill`) commits nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from bot.supervise import Backoff, ThrottledLog

log = logging.getLogger(__name__)
T = TypeVar("T")
DB_ERRORS = (SQLAlchemyError, OSError)
MAX_BATCH = 64  # outcomes in one transaction at most (a long one would hold SQLite's write lock)
_STOP = object()


class Recorder(Generic[T]):
    def __init__(self, apply: Callable[[list[T]], None], *, name: str = "tipline-outbox-record") -> None:
        self._apply = apply
        self._name = name
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._killed = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._log = ThrottledLog(log)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> asyncio.Future[None]:
        """Hand an outcome over (on the event loop); the future is done once it is committed."""
        assert self._loop is not None, "start() first"
        done: asyncio.Future[None] = self._loop.create_future()
        self._queue.put((item, done))
        return done

    async def close(self, timeout: float) -> bool:
        """Graceful stop: commit whatever was handed over, then end the thread. False if
        that took longer than `timeout` (the database away): the rest is given up, and
        comes back as a crash's would (its lease runs out; at start on SQLite)."""
        if self._thread is None:
            return True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join, timeout)
        if self._thread.is_alive():
            self.kill()
            return False
        return True

    def kill(self) -> None:
        """A crash (tests): nothing more is committed."""
        self._killed.set()
        self._queue.put(_STOP)

    # the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._killed.is_set():
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                batch.append(more)
            self._commit(batch)  # type: ignore[arg-type]
            if stop:
                return

    def _commit(self, batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        backoff = Backoff(base=0.2, cap=10.0)
        while not self._killed.is_set():
            try:
                self._apply([item for item, _ in batch])
            except DB_ERRORS as exc:
                self._log("db", logging.ERROR, "outbox: database unavailable (%s while recording): retrying",
                          type(exc).__name__)
                self._killed.wait(backoff.next_delay())
                continue
            except Exception:  # noqa: BLE001 - a bug must not stop recording: those rows come back
                log.exception("outbox: outcomes could not be recorded")
            if backoff.attempts:
                self._log.recovered("db", "outbox: outcomes recorded again")
            if self._killed.is_set():
                return  # crashed meanwhile: nobody is told
            loop = self._loop
            assert loop is not None
            try:
                loop.call_soon_threadsafe(_resolve, [done for _, done in batch])
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass
            return


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for done in futures:
        if not done.done():
            done.set_result(None)
