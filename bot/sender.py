"""Delivers the outbox: each row once, in order per chat, until Telegram has it.

The sender runs as one asyncio task beside the bot, under `supervise` (restarted if it
dies; if it keeps dying the process exits non-zero). Its database work (claims, outcomes,
leases) runs in a worker thread of its own, never on the event loop. It leases due rows,
sends them through the bot (whose rate limiter paces every request) and records each
outcome the moment Telegram has answered (bot/recorder.py: a thread that commits outcomes
as they arrive, together only those that arrived together):

- delivered: `sent`, with Telegram's message id (later rows may reply to it or edit it);
- `RetryAfter`: handed straight back by the limiter (which pauses every request), and
  the row waits until Telegram's time is up (its `next_attempt_at`);
- network errors, 5xx: tried again later with exponential back-off;
- `Forbidden` (the chat blocked the bot or removed it): `failed`, with the rest queued for
  that chat, and the chat is marked inactive so nothing more is queued for it;
- `ChatMigrated` (a group became a supergroup): the binding and the chat's queue move to
  the new id, and the row goes again there;
- a permanent refusal (`BadRequest`; a Bot API server without the method): `failed` at
  once and told to the office (once per broadcast), never retried.

A database error (a dropped connection, a locked SQLite file) never ends the sender: it
waits with back-off and says so once a minute; an outcome it could not record yet is kept
and recorded when the database is back.

Exactly once. A row is leased with times from the database's clock, the lease is renewed
every few seconds while the row is in flight (waiting in the limiter included), and just
before the request leaves, the limiter asks the sender whether the lease is still safely
held: it must outlast the longest a request may take (the per-request timeouts below).
So no other sender can take a row while a request for it may still reach Telegram, and
only a crash between Telegram's answer and the commit that records it can send a row
twice: that commit is the next thing done with the answer (the file id of an upload is
written in the same transaction), and it waits for nothing but the database. A chat's
next message becomes due only in the transaction that records its previous one's
outcome (bot/services/outbox.py: heads), so it is never sent before that is committed.
At start on SQLite (one process per database) rows a dead process left `sending` wait
again at once; on PostgreSQL (several processes) they come back when their short lease
runs out.

One sender at a time. Telegram's limits are per bot token, and each process paces only its
own requests: several processes on one token send only while they hold the sender lead
(bot/services/sendlead.py), one at a time, the others taking over within a few seconds of
the holder's death or stall. A request leaves only while the lead is sure to last one
more second; a row whose request could not leave for that goes back to waiting, its try
not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Message, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from bot import liveness, metrics
from bot.deps import Deps
from bot.ratelimit import SEND_GUARD, retry_after_seconds
from bot.recorder import Recorder
from bot.services import outbox, sendlead
from bot.services.office import office_targets
from bot.splitting import has_content
from bot.supervise import Backoff, ThrottledLog, supervise
from storage.db import is_postgres
from storage.models import OutboxMessage, Staff, TeamChat
from storage.models_officials import Blob

log = logging.getLogger(__name__)
T = TypeVar("T")

MEDIA_METHODS = {
    "send_photo": "photo",
    "send_document": "document",
    "send_video": "video",
    "send_voice": "voice",
    "send_audio": "audio",
}

# The longest one request may take once it leaves the limiter (pool + connect + write +
# read), as shares of the lease: two thirds of it in all (20 s of the default 30 s). A
# lease must have at least this much left when a request leaves.
TIMEOUT_SHARES = {"pool_timeout": 1 / 15, "connect_timeout": 1 / 10, "write_timeout": 1 / 3, "read_timeout": 1 / 6}


def request_timeouts(lease: timedelta) -> dict[str, float]:
    return {name: share * lease.total_seconds() for name, share in TIMEOUT_SHARES.items()}
DB_ERRORS = (SQLAlchemyError, OSError)


class LeaseLost(Exception):
    """The row's lease may have run out (renewals failed): the request must not leave."""


class LeadLost(Exception):
    """This process may no longer be the one that sends (bot/services/sendlead.py): the
    request must not leave, and the row waits again for whichever process sends."""


@dataclass(eq=False, slots=True)
class Claimed:
    id: int
    chat_id: int
    method: str
    payload: dict[str, Any]
    attempts: int
    purpose: str = ""
    broadcast_id: int | None = None
    tip_id: int | None = None
    # monotonic moment after which the lease may have less left than one request may take
    safe_until: float = 0.0
    lost: bool = False
    outcome: Callable[[Session], None] | None = field(default=None, repr=False)  # to record
    file_id: tuple[int, str] | None = None  # (blob, Telegram's file id) of an upload, recorded with it


def markup(rows: list[list[dict[str, str]]] | None) -> InlineKeyboardMarkup | None:
    if not rows:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b["text"], callback_data=b["data"]) for b in row] for row in rows]
    )


class OutboxSender:
    def __init__(
        self,
        bot: Bot,
        deps: Deps,
        *,
        concurrency: int = 16,
        lease: timedelta | None = None,
        renew_every: float | None = None,
        idle_poll: float = 1.0,
        request_budget: timedelta | None = None,
        lead: timedelta | None = None,
        on_give_up: Callable[[BaseException], None] | None = None,
    ) -> None:
        lease = lease or timedelta(seconds=deps.config.telegram.send_lease_seconds)
        self.timeouts = request_timeouts(lease)
        if request_budget is None:
            request_budget = timedelta(seconds=sum(self.timeouts.values()))
        renew_every = renew_every or lease.total_seconds() / 10
        if lease <= request_budget:
            raise ValueError("the lease must outlast one request")
        self.bot = bot
        self.deps = deps
        self.concurrency = concurrency
        self.lease = lease
        self.renew_every = renew_every
        self.idle_poll = idle_poll
        self.request_budget = request_budget
        self.on_give_up = on_give_up
        # The sender lead: renewed every fifth of its length (every second by default).
        self.lead = lead or timedelta(seconds=deps.config.telegram.sender_lead_seconds)
        if self.lead.total_seconds() <= 2 * sendlead.HANDOVER:
            raise ValueError("the sender lead must outlast two handovers")
        self.lead_every = self.lead.total_seconds() / 5
        self.holder = sendlead.holder_name()
        self._lead_safe_until = float("-inf")  # monotonic: requests may leave until then
        self._leading = False
        self._lead_ready = False  # its row exists
        self._lead_task: asyncio.Task[None] | None = None
        self.lead_taken = 0  # times this sender took the lead
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tipline-outbox-db")
        # Claims: one statement each, on a connection of their own (in their own thread).
        self._claim_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tipline-outbox-claim")
        self._claims = outbox.ClaimConnection(deps.sessions.kw["bind"])
        # Outcomes have a thread of their own: the time between Telegram's answer and the
        # commit that records it (the one window for a duplicate) never waits behind a claim.
        self._recorder: Recorder[Claimed] = Recorder(self._apply)
        self._in_flight: dict[int, Claimed] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = ThrottledLog(log)
        self._db_backoff = Backoff(base=0.5, cap=15.0)
        self._released = False
        self.delivered = 0
        self.failed = 0
        self._file_ids: dict[int, str] = {}
        self._upload_locks: dict[int, asyncio.Lock] = {}
        self._fits_limiter = getattr(bot, "rate_limiter", None) is not None
        self.restart_backoff = Backoff(base=1.0, cap=30.0)  # between restarts of a dying loop
        self._expired_checked = float("-inf")

    # lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self.deps.wake_sender.append(self.wake)
        self._task = asyncio.create_task(
            supervise("outbox sender", self.run, on_give_up=self.on_give_up, backoff=self.restart_backoff),
            name="tipline-outbox")
        self._renewer = asyncio.create_task(self._renew_loop(), name="tipline-outbox-leases")
        self._lead_task = asyncio.create_task(self._lead_loop(), name="tipline-outbox-lead")
        self._recorder.start()

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        # Let messages already handed to Telegram finish and be recorded (the leases are
        # renewed meanwhile); one that cannot be within a lease comes back as after a crash.
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=self.lease.total_seconds())
            for task in late:
                task.cancel()
        if not await self._recorder.close(timeout=self.request_budget.total_seconds()):
            log.error("outbox: outcomes not recorded at stop (database unavailable): those messages wait again")
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self._lead_task is not None:
            self._lead_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lead_task
        if self._leading:  # the next process need not wait for the lead to run out
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(self._claim_pool, self._release_lead)
        self._set_leading(False)
        with contextlib.suppress(ValueError):
            self.deps.wake_sender.remove(self.wake)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(RuntimeError):  # stopped twice
            self._claim_pool.submit(self._claims.close)
        self._claim_pool.shutdown(wait=False)

    def kill(self) -> None:
        """Stop at once, recording nothing (tests: a crash)."""
        self._recorder.kill()
        for task in (self._task, self._renewer, self._lead_task, *self._tasks):
            if task is not None:
                task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._claim_pool.shutdown(wait=False, cancel_futures=True)

    def wake(self) -> None:
        self._wake.set()

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking database work, in the sender's own worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        while not self._stopping.is_set():
            liveness.beat("sender")
            if not self.leads():  # another process sends (or none may yet): wait for the lead
                await self._idle()
                continue
            try:
                if not self._released:
                    released = await self._db(self._release_dead)
                    self._released = True
                    if released:
                        log.warning("outbox: %d messages left in flight by a stopped process wait again", released)
                free = self.concurrency - len(self._in_flight)
                claimed = (await asyncio.get_running_loop().run_in_executor(self._claim_pool, self._claim, free)
                           if free > 0 else [])
            except DB_ERRORS as exc:
                await self._db_trouble("claim", exc)
                continue
            self._db_ok()
            for item in claimed:
                self._in_flight[item.id] = item
                task = asyncio.create_task(self._deliver(item))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if claimed and len(claimed) == free:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            await self._idle()

    async def _idle(self) -> None:
        """Until woken (a row queued, the lead taken), a message done, or `idle_poll`."""
        self._wake.clear()
        waiter = asyncio.create_task(self._wake.wait())
        await asyncio.wait([waiter, *self._tasks], timeout=self.idle_poll, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()

    async def _db_trouble(self, what: str, exc: BaseException) -> None:
        delay = self._db_backoff.next_delay()
        self._log("db", logging.ERROR, "outbox: database unavailable (%s during %s): retrying with back-off",
                  type(exc).__name__, what)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    def _db_ok(self) -> None:
        if self._db_backoff.attempts:
            self._db_backoff.reset()
            self._log.recovered("db", "outbox: database reachable again")

    def _release_dead(self) -> int:
        with self.deps.sessions.begin() as session:
            if is_postgres(session):
                return 0  # other processes may be sending: their leases are short instead
            return outbox.release_all(session, self.deps.clock.now())

    def _claim(self, limit: int) -> list[Claimed]:
        now = self.deps.clock.now()
        started = time.monotonic()
        # Leases that ran out (a sender that died) are looked for once a second, not at
        # every claim: the claim is then one statement.
        expired = started - self._expired_checked >= 1.0
        rows = self._claims.claim(now, limit, self.lease, expired=expired, skip=list(self._in_flight))
        claimed = []
        unreadable = []
        for r in rows:
            try:
                payload = outbox.payload_of(r, self.deps.keyring)
            except Exception as exc:  # noqa: BLE001 - one unreadable row must not stop the sender
                log.error("outbox row %s cannot be read (%s): failed", r.id, type(exc).__name__)
                unreadable.append((r, f"unreadable: {type(exc).__name__}"))
                continue
            claimed.append(Claimed(r.id, r.chat_id, r.method, payload, r.attempts, r.purpose, r.broadcast_id,
                                   r.tip_id))
        if unreadable:  # leased to this sender: nobody else takes them meanwhile
            try:
                with self.deps.sessions.begin() as session:
                    for r, error in unreadable:
                        outbox.mark_failed(session, r.id, r.attempts, error, chat_id=r.chat_id)
            except DB_ERRORS:  # they come back when their lease runs out, and are failed then
                log.warning("outbox: unreadable rows not marked failed yet (database unavailable)")
        if expired:
            self._expired_checked = started
        safe = started + (self.lease - self.request_budget).total_seconds()
        for item in claimed:
            item.safe_until = safe
        return claimed

    # the sender lead ---------------------------------------------------------------------
    def leads(self) -> bool:
        """This sender may let a request leave now: it holds the lead for one more handover."""
        return time.monotonic() < self._lead_safe_until

    async def _lead_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = time.monotonic()
            seen: sendlead.Status | None = None
            try:
                held, seen = await loop.run_in_executor(self._claim_pool, self._take_lead)
            except DB_ERRORS as exc:
                self._log("lead", logging.ERROR, "outbox: sender lead not renewed (%s): sending stops when it runs out",
                          type(exc).__name__)
                held = None
            except RuntimeError:  # the claim thread is shut down: stopping
                return
            if held:
                self._lead_held(started, seen)
            elif held is False and self._leading:
                self._lead_safe_until = float("-inf")
                self._set_leading(False)
                log.warning("outbox: another process sends now (%s): this one stopped sending",
                            seen.holder if seen is not None else None)
            await asyncio.sleep(max(0.0, self.lead_every - (time.monotonic() - started)))

    def _take_lead(self) -> tuple[bool, sendlead.Status | None]:
        """(whether this sender holds the lead now, the lead as it was if this sender was not
        sending: taken only if unchanged since, and the hold is reckoned from it)."""
        with self._claims.session() as session:
            if not self._lead_ready:
                sendlead.ensure(session)
                self._lead_ready = True
            seen = None if self.leads() else sendlead.status(session)
            # SQLite is one process per file: at its start (before it frees the rows a dead
            # process left in flight) the lead is its own, whoever had it is gone.
            force = not self._released and not is_postgres(session)
            return sendlead.take(session, self.holder, self.lead, force=force, seen=seen), seen

    def _lead_held(self, started: float, seen: sendlead.Status | None) -> None:
        fresh = started >= self._lead_safe_until  # not sending until now: taken (again), not renewed
        before = seen.holder if seen is not None else None
        if fresh:
            # Whoever sent before let its last request leave at least a handover before its
            # lead ended (or waited for its requests in flight before releasing it): this
            # one's first leaves a handover after that end, so it holds what remains of it,
            # reckoned on the database's clock when the lead was read (the hold starts later:
            # never too short). Nobody ever held the lead: nobody sent, nothing to wait for.
            ended = sendlead.ended_ago(seen) if seen is not None else 0.0
            limiter = getattr(self.bot, "rate_limiter", None)
            if ended is not None and hasattr(limiter, "hold"):
                limiter.hold(sendlead.HANDOVER, ended)  # type: ignore[union-attr]
        # The lead runs out `lead` after the renewal's statement, which is after `started`.
        self._lead_safe_until = started + self.lead.total_seconds() - sendlead.HANDOVER
        if fresh:
            self.lead_taken += 1
            metrics.SENDER_LEAD_TAKEN.inc()
            self._set_leading(True)
            if before is None or before == self.holder:
                log.info("outbox: this process sends now (%s)", self.holder)
            else:
                log.warning("outbox: this process sends now (%s), taking over from %s", self.holder, before)
            self._wake.set()

    def _set_leading(self, leading: bool) -> None:
        self._leading = leading
        metrics.SENDER_LEADING.set(1 if leading else 0)

    def _release_lead(self) -> None:
        with self._claims.session() as session:
            sendlead.release(session, self.holder)

    # leases ------------------------------------------------------------------------------
    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.renew_every)
            held = [(i.id, i.attempts) for i in self._in_flight.values() if not i.lost]
            if not held:
                continue
            started = time.monotonic()
            try:
                kept = await self._db(self._renew, held)
            except DB_ERRORS as exc:
                self._log("renew", logging.ERROR, "outbox: leases not renewed (%s): messages wait",
                          type(exc).__name__)
                continue
            except RuntimeError:  # the worker pool is shut down: stopping
                return
            safe = started + (self.lease - self.request_budget).total_seconds()
            for row_id, _ in held:
                item = self._in_flight.get(row_id)
                if item is None:
                    continue
                if row_id in kept:
                    item.safe_until = max(item.safe_until, safe)
                elif item.outcome is None:
                    item.lost = True  # another sender has it now: ours must not leave

    def _renew(self, held: list[tuple[int, int]]) -> set[int]:
        with self.deps.sessions.begin() as session:
            return outbox.renew(session, held, outbox.db_now(session) + self.lease)

    def _guard(self, item: Claimed) -> Callable[[], None]:
        def check() -> None:
            now = time.monotonic()
            if item.lost or now > item.safe_until:
                raise LeaseLost(item.id)
            if now >= self._lead_safe_until:
                raise LeadLost(item.id)
        return check

    # one message -----------------------------------------------------------------------
    async def _deliver(self, item: Claimed) -> None:
        token = SEND_GUARD.set(self._guard(item))
        try:
            outcome = await self._attempt(item)
        finally:
            SEND_GUARD.reset(token)
        if outcome is None:  # the lease was lost: the row is someone else's (or comes back)
            self._in_flight.pop(item.id, None)
            return
        item.outcome = outcome
        await self._record(item)

    async def _attempt(self, item: Claimed) -> Callable[[Session], None] | None:
        """Send the row; returns the database work that records what happened."""
        try:
            message = await self._call(item)
        except LeaseLost:
            self._log("lease", logging.WARNING,
                      "outbox row %s: lease not confirmed in time (database unreachable?): not sent now", item.id)
            return None
        except LeadLost:  # never left: it waits again at once, for whichever process sends
            return partial(self._retry, item, 0.0, "the sending process changed", count=False)
        except RetryAfter as exc:
            return partial(self._retry, item, retry_after_seconds(exc) + 0.5, "retry after", count=False)
        except Forbidden as exc:
            return partial(self._blocked, item, f"forbidden: {exc.message}")
        except ChatMigrated as exc:
            return partial(self._migrated, item, exc.new_chat_id)
        except BadRequest as exc:
            if "message is not modified" in exc.message:
                return partial(self._done, item, None)
            return partial(self._refused, item, f"bad request: {exc.message}")
        except InvalidToken as exc:
            if "not found" in exc.message.lower():  # a Bot API server without this method
                return partial(self._refused, item, f"not supported by the Bot API server: {exc.message}")
            self._log("token", logging.CRITICAL, "outbox: the Bot API refuses the token (%s)", exc.message)
            return partial(self._retry, item, self._backoff(item.attempts), "invalid token", count=False)
        except (NetworkError, TelegramError) as exc:  # TimedOut is a NetworkError; 5xx too
            self._log("network", logging.WARNING, "outbox: Telegram unreachable or failing (%s): retrying",
                      type(exc).__name__)
            return partial(self._retry, item, self._backoff(item.attempts), f"{type(exc).__name__}: {exc}")
        except DB_ERRORS as exc:  # reading a file or a message id to reply to
            self._log("db", logging.ERROR, "outbox: database unavailable (%s): retrying", type(exc).__name__)
            return partial(self._retry, item, self._backoff(item.attempts), "database unavailable", count=False)
        except Exception:  # never let one row kill the sender
            log.exception("outbox row %s: unexpected error", item.id)
            return partial(self._retry, item, self._backoff(item.attempts), "unexpected error")
        else:
            mid = message.message_id if isinstance(message, Message) else None
            return partial(self._done, item, mid)

    async def _record(self, item: Claimed) -> None:
        """Hand the outcome to the recorder at once and wait until it is committed."""
        await self._recorder.submit(item)
        self._in_flight.pop(item.id, None)
        self._wake.set()  # a slot is free, and the chat's next row may be due

    def _apply(self, items: list[Claimed]) -> None:
        """The outcomes that arrived together, in one transaction (in the recorder's thread)."""
        try:
            with self.deps.sessions.begin() as session:
                for item in items:
                    assert item.outcome is not None
                    item.outcome(session)
            return
        except DB_ERRORS:
            raise
        except Exception:  # noqa: BLE001 - one outcome is broken: record each on its own
            pass
        for item in items:  # each is idempotent: one already recorded is not recorded again
            try:
                with self.deps.sessions.begin() as session:
                    assert item.outcome is not None
                    item.outcome(session)
            except DB_ERRORS:
                raise
            except Exception:  # noqa: BLE001 - the row comes back when its lease runs out
                log.exception("outbox row %s: its outcome could not be recorded", item.id)

    def _kwargs(self) -> dict[str, Any]:
        extra: dict[str, Any] = dict(self.timeouts)
        if self._fits_limiter:
            extra["rate_limit_args"] = 0  # RetryAfter comes back here at once, not retried in the limiter
        return extra

    async def _call(self, item: Claimed) -> Message | bool:
        p = item.payload
        reply_markup = markup(p.get("buttons"))
        common: dict[str, Any] = {"chat_id": item.chat_id, **self._kwargs()}
        if p.get("protect"):
            common["protect_content"] = True
        if item.method == "edit_message_text":
            message_id = p.get("message_id") or await self._db(self._message_id_of, p["edit_outbox"])
            if message_id is None:
                raise BadRequest("message to edit not found")
            common.pop("protect_content", None)
            return await self.bot.edit_message_text(
                text=p["text"], message_id=message_id, reply_markup=reply_markup, parse_mode=ParseMode.HTML,
                **common,
            )
        reply_to = p.get("reply_to_outbox")
        if reply_to is not None:
            mid = await self._db(self._message_id_of, reply_to)
            if mid is not None:
                common["reply_parameters"] = ReplyParameters(message_id=mid, allow_sending_without_reply=True)
        if item.method == "send_message":
            if not has_content(p["text"]):
                raise BadRequest("message text is empty")  # never sent: failed and told
            return await self.bot.send_message(
                text=p["text"], parse_mode=ParseMode.HTML, reply_markup=reply_markup, **common
            )
        field = MEDIA_METHODS[item.method]
        method = getattr(self.bot, item.method)
        blob_id = p.get("blob_id")
        extra = {"caption": p.get("caption"), "parse_mode": ParseMode.HTML, "reply_markup": reply_markup, **common}
        if blob_id is None:
            return await method(**{field: p["file_id"]}, **extra)
        if blob_id in self._file_ids:
            return await method(**{field: self._file_ids[blob_id]}, **extra)
        # Upload once: the other chats wait for the file id instead of uploading it again.
        async with self._upload_locks.setdefault(blob_id, asyncio.Lock()):
            if blob_id in self._file_ids:
                return await method(**{field: self._file_ids[blob_id]}, **extra)
            media = await self._db(self._blob_media, blob_id)
            message = await method(**{field: media}, **extra)
            if isinstance(media, InputFile):
                self._remember_file_id(item, blob_id, message)
            return message

    def _blob_media(self, blob_id: int) -> str | InputFile:
        """A stored file (chart, bulletin document): its Telegram file id once one upload
        succeeded, else the bytes themselves."""
        cached = self._file_ids.get(blob_id)
        if cached is not None:
            return cached
        with self.deps.sessions.begin() as session:
            blob = session.get(Blob, blob_id)
            if blob is None:
                raise BadRequest("stored file not found")
            if blob.telegram_file_id:
                self._file_ids[blob_id] = blob.telegram_file_id
                return blob.telegram_file_id
            return InputFile(blob.content, filename=blob.filename, attach=True)

    def _remember_file_id(self, item: Claimed, blob_id: int, message: Message | bool) -> None:
        """The other chats use the file id from now on; it is stored with the row's outcome
        (nothing stands between the answer and the commit that records it)."""
        if not isinstance(message, Message):
            return
        file_id = (message.photo[-1].file_id if message.photo else
                   message.document.file_id if message.document else None)
        if file_id is None:
            return
        self._file_ids[blob_id] = file_id
        item.file_id = (blob_id, file_id)

    def _message_id_of(self, row_id: int) -> int | None:
        with self.deps.sessions.begin() as session:
            return outbox.message_id_of(session, row_id)

    def _backoff(self, attempts: int) -> float:
        # 0.5 s, 1 s, 2 s, ... up to 10 minutes: a lone 5xx costs a broadcast little time.
        return float(min(600, 2 ** min(attempts, 12) / 4))

    # outcomes (run in the worker thread) -------------------------------------------------
    def _done(self, item: Claimed, message_id: int | None, session: Session) -> None:
        if outbox.mark_sent(session, item.id, item.attempts, self.deps.clock.now(), message_id, chat_id=item.chat_id):
            self.delivered += 1
        if item.file_id is not None:
            blob_id, file_id = item.file_id
            session.execute(update(Blob).where(Blob.id == blob_id, Blob.telegram_file_id.is_(None))
                            .values(telegram_file_id=file_id))

    def _retry(self, item: Claimed, delay: float, error: str, session: Session, *, count: bool = True) -> None:
        now = self.deps.clock.now()
        if count and item.attempts >= self.deps.config.telegram.max_send_attempts:
            log.error("outbox row %s given up after %s attempts: %s", item.id, item.attempts, error[:200])
            if outbox.mark_failed(session, item.id, item.attempts, f"gave up: {error}", chat_id=item.chat_id):
                self.failed += 1
                self._tell_office(session, item, f"gave up after {item.attempts} attempts: {error}")
        elif not count:
            # Not the row's fault (Telegram's pace, the database): the try is not counted.
            outbox.requeue(session, item.id, item.attempts, now + timedelta(seconds=delay), error)
        else:
            outbox.mark_retry(session, item.id, item.attempts, now + timedelta(seconds=delay), error)

    def _refused(self, item: Claimed, error: str, session: Session) -> None:
        log.error("outbox row %s refused for good: %s", item.id, error[:200])
        if outbox.mark_failed(session, item.id, item.attempts, error, chat_id=item.chat_id):
            self.failed += 1
            self._tell_office(session, item, error)

    def _tell_office(self, session: Any, item: Claimed, error: str) -> None:
        """The office learns of a message that will never arrive (once per broadcast)."""
        if item.purpose == "undeliverable":
            return
        now = self.deps.clock.now()
        what = f"broadcast:{item.broadcast_id}" if item.broadcast_id is not None else f"row:{item.id}"
        for target in office_targets(session, self.deps):
            if target.chat_id == item.chat_id:
                continue
            text = self.deps.texts.msg(target.lang, "undeliverable", purpose=item.purpose, chat_id=item.chat_id,
                                       error=error[:300], tip_id=item.tip_id, broadcast_id=item.broadcast_id)
            outbox.enqueue(session, self.deps.keyring, now, dedupe_key=f"undeliverable:{what}:{target.chat_id}",
                           chat_id=target.chat_id, method="send_message", payload={"text": text},
                           purpose="undeliverable", tip_id=item.tip_id)

    def _blocked(self, item: Claimed, error: str, session: Session) -> None:
        if outbox.mark_failed(session, item.id, item.attempts, error, chat_id=item.chat_id):
            self.failed += 1
        session.execute(update(TeamChat).where(TeamChat.chat_id == item.chat_id).values(active=False))
        session.execute(update(Staff).where(Staff.telegram_user_id == item.chat_id).values(active=False))
        # What is still queued for the chat would meet the same 403: give it up now.
        outbox.fail_open_rows(session, item.chat_id, "chat blocked the bot or removed it")
        log.warning("chat %s blocked the bot or removed it: marked inactive", item.chat_id)

    def _migrated(self, item: Claimed, new_chat_id: int, session: Session) -> None:
        """A basic group became a supergroup: the binding follows, and so does the queue."""
        now = self.deps.clock.now()
        if not outbox.requeue(session, item.id, item.attempts, now, f"chat migrated to {new_chat_id}"):
            return
        taken = session.query(TeamChat).filter(TeamChat.chat_id == new_chat_id).first()
        if taken is None:
            session.execute(update(TeamChat).where(TeamChat.chat_id == item.chat_id).values(chat_id=new_chat_id))
        else:  # bound again already under the new id: the old binding is gone
            session.execute(update(TeamChat).where(TeamChat.chat_id == item.chat_id).values(active=False))
        outbox.move_chat(session, item.chat_id, new_chat_id, now)
        log.warning("group %s became supergroup %s: its binding and queue moved", item.chat_id, new_chat_id)
