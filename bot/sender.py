"""Delivers the outbox: each row once, in order per chat, until Telegram has it.

The sender runs as one asyncio task beside the bot. It leases due rows (so a crashed
sender's rows come back after the lease), sends them through the bot (whose rate limiter
paces every request), and records the outcome in its own short transaction:

- delivered: `sent`, with Telegram's message id (later rows may reply to it or edit it);
- `RetryAfter`, network errors, 5xx: tried again later with exponential back-off;
- `Forbidden` (the chat blocked the bot or removed it): `failed`, with the rest queued for
  that chat, and the chat is marked inactive so nothing more is queued for it;
- another `BadRequest`: `failed` at once (retrying would fail the same way), logged.

Exactly once: a row is marked sent in the transaction right after Telegram answers. Only
a crash in the instant between Telegram's answer and that commit can send a row twice;
nothing can make it be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Message, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError

from bot import liveness
from bot.deps import Deps
from bot.ratelimit import retry_after_seconds
from bot.services import outbox
from storage.models import OutboxMessage, Staff, TeamChat
from storage.models_officials import Blob

log = logging.getLogger(__name__)

MEDIA_METHODS = {
    "send_photo": "photo",
    "send_document": "document",
    "send_video": "video",
    "send_voice": "voice",
    "send_audio": "audio",
}


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    chat_id: int
    method: str
    payload: dict[str, Any]
    attempts: int


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
        lease: timedelta = timedelta(minutes=10),
        idle_poll: float = 1.0,
    ) -> None:
        self.bot = bot
        self.deps = deps
        self.concurrency = concurrency
        self.lease = lease
        self.idle_poll = idle_poll
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failed = 0
        self._file_ids: dict[int, str] = {}
        self._upload_locks: dict[int, asyncio.Lock] = {}

    # lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self.deps.wake_sender.append(self.wake)
        self._task = asyncio.create_task(self.run(), name="tipline-outbox")

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(ValueError):
            self.deps.wake_sender.remove(self.wake)

    def wake(self) -> None:
        self._wake.set()

    # the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping.is_set():
                liveness.beat("sender")
                free = self.concurrency - len(in_flight)
                claimed = self._claim(free) if free > 0 else []
                for item in claimed:
                    task = asyncio.create_task(self._deliver(item))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                if claimed and len(claimed) == free:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                self._wake.clear()
                waiters = [asyncio.create_task(self._wake.wait())]
                done, pending = await asyncio.wait(
                    [*waiters, *in_flight], timeout=self.idle_poll, return_when=asyncio.FIRST_COMPLETED
                )
                for w in waiters:
                    w.cancel()
        finally:
            # Let messages already handed to Telegram finish and be recorded.
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def drain(self, timeout: float = 30.0) -> None:
        """Deliver everything due now (used by the CLI and tests)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            claimed = self._claim(self.concurrency)
            if not claimed:
                return
            await asyncio.gather(*(self._deliver(c) for c in claimed))

    def _claim(self, limit: int) -> list[Claimed]:
        now = self.deps.clock.now()
        with self.deps.sessions.begin() as session:
            rows = outbox.claim_due(session, now, limit, self.lease)
            return [
                Claimed(r.id, r.chat_id, r.method, outbox.payload_of(r, self.deps.keyring), r.attempts) for r in rows
            ]

    # one message -----------------------------------------------------------------------
    async def _deliver(self, item: Claimed) -> None:
        try:
            message = await self._call(item)
        except RetryAfter as exc:
            self._retry(item, retry_after_seconds(exc) + 0.5, "retry after")
        except Forbidden as exc:
            self._fail(item, f"forbidden: {exc.message}")
            self._deactivate_chat(item.chat_id)
        except BadRequest as exc:
            if "message is not modified" in exc.message:
                self._done(item, None)
            else:
                log.error("outbox row %s refused by Telegram: %s", item.id, exc.message)
                self._fail(item, f"bad request: {exc.message}")
        except (NetworkError, TelegramError) as exc:  # TimedOut is a NetworkError; 5xx too
            self._retry(item, self._backoff(item.attempts), f"{type(exc).__name__}: {exc}")
        except Exception:  # never let one row kill the sender
            log.exception("outbox row %s: unexpected error", item.id)
            self._retry(item, self._backoff(item.attempts), "unexpected error")
        else:
            self._done(item, message.message_id if isinstance(message, Message) else None)

    async def _call(self, item: Claimed) -> Message | bool:
        p = item.payload
        reply_markup = markup(p.get("buttons"))
        common: dict[str, Any] = {"chat_id": item.chat_id}
        if p.get("protect"):
            common["protect_content"] = True
        if item.method == "edit_message_text":
            message_id = p.get("message_id") or self._message_id_of(p["edit_outbox"])
            if message_id is None:
                raise BadRequest("message to edit not found")
            return await self.bot.edit_message_text(
                text=p["text"], chat_id=item.chat_id, message_id=message_id, reply_markup=reply_markup,
                parse_mode=ParseMode.HTML,
            )
        reply_to = p.get("reply_to_outbox")
        if reply_to is not None:
            mid = self._message_id_of(reply_to)
            if mid is not None:
                common["reply_parameters"] = ReplyParameters(message_id=mid, allow_sending_without_reply=True)
        if item.method == "send_message":
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
            media = self._blob_media(blob_id)
            message = await method(**{field: media}, **extra)
            if isinstance(media, InputFile):
                self._remember_file_id(blob_id, message)
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

    def _remember_file_id(self, blob_id: int, message: Message | bool) -> None:
        if not isinstance(message, Message):
            return
        file_id = (message.photo[-1].file_id if message.photo else
                   message.document.file_id if message.document else None)
        if file_id is None:
            return
        self._file_ids[blob_id] = file_id
        with self.deps.sessions.begin() as session:
            session.execute(update(Blob).where(Blob.id == blob_id, Blob.telegram_file_id.is_(None))
                            .values(telegram_file_id=file_id))

    def _message_id_of(self, row_id: int) -> int | None:
        with self.deps.sessions.begin() as session:
            return outbox.message_id_of(session, row_id)

    def _backoff(self, attempts: int) -> float:
        # 0.5 s, 1 s, 2 s, ... up to 10 minutes: a lone 5xx costs a broadcast little time.
        return float(min(600, 2 ** min(attempts, 12) / 4))

    def _done(self, item: Claimed, message_id: int | None) -> None:
        with self.deps.sessions.begin() as session:
            outbox.mark_sent(session, item.id, item.attempts, self.deps.clock.now(), message_id)
        self.delivered += 1

    def _retry(self, item: Claimed, delay: float, error: str) -> None:
        now = self.deps.clock.now()
        with self.deps.sessions.begin() as session:
            if item.attempts >= self.deps.config.telegram.max_send_attempts:
                log.error("outbox row %s given up after %s attempts: %s", item.id, item.attempts, error)
                outbox.mark_failed(session, item.id, item.attempts, f"gave up: {error}")
                self.failed += 1
            else:
                outbox.mark_retry(session, item.id, item.attempts, now + timedelta(seconds=delay), error)
        self._wake.set()

    def _fail(self, item: Claimed, error: str) -> None:
        with self.deps.sessions.begin() as session:
            outbox.mark_failed(session, item.id, item.attempts, error)
        self.failed += 1

    def _deactivate_chat(self, chat_id: int) -> None:
        with self.deps.sessions.begin() as session:
            session.execute(update(TeamChat).where(TeamChat.chat_id == chat_id).values(active=False))
            session.execute(update(Staff).where(Staff.telegram_user_id == chat_id).values(active=False))
            # What is still queued for the chat would meet the same 403: give it up now.
            session.execute(update(OutboxMessage).where(OutboxMessage.chat_id == chat_id,
                                                        OutboxMessage.status == "pending")
                            .values(status="failed", last_error="chat blocked the bot or removed it"))
        log.warning("chat %s blocked the bot or removed it: marked inactive", chat_id)
