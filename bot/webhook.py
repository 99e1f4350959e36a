"""Webhook mode: Telegram posts each update to a receiver of tipline's own.

PTB's `Updater.start_webhook` puts an update on its queue and answers 200 before anything
is kept, so a crash loses it. Here the update is journaled (the same sealed, minimal,
idempotent journal the poller writes: bot/polling.py) and committed before the answer:

- 401 for a request without the right `X-Telegram-Bot-Api-Secret-Token` (compared in
  constant time); nothing is read, journaled or logged about who sent it;
- 200 once the update is committed (a redelivered update_id is answered 200 and not
  journaled twice); the durable poller's per-chat queues then handle it, and across
  processes the journal keeps each chat with one process at a time (bot/chatorder.py);
- 500 when the journal cannot be written: Telegram sends the update again later.

Requests arriving together are journaled in one transaction (a group commit), so a burst
costs one commit, not one per update. No access log: an address is not written anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from dataclasses import dataclass, field

from aiohttp import web

from bot import liveness, metrics
from bot.config import Config
from bot.minimal import minimal_update
from bot.polling import DurablePoller
from bot.supervise import ThrottledLog

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
WEBHOOK = "webhook"  # liveness name: the last authenticated request
MAX_BODY = 1024 * 1024  # an update is a few kilobytes
GROUP_COMMIT = 200  # updates journaled in one transaction at most


@dataclass
class _Waiting:
    data: dict
    done: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def _retrieved(future: asyncio.Future[bool]) -> None:
    if not future.cancelled():
        future.exception()


class WebhookReceiver:
    def __init__(self, poller: DurablePoller, config: Config) -> None:
        tg = config.telegram
        self.poller = poller
        self.listen, self.wanted_port, self.path = tg.webhook_listen, tg.webhook_port, tg.webhook_path
        self._secret = tg.webhook_secret_token.get_secret_value().encode()
        self._runner: web.AppRunner | None = None
        self._queue: list[_Waiting] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._tlog = ThrottledLog(log)
        self.last_request: float | None = None  # time.time() of the last authenticated request
        # Tests break the guarantee on purpose with these (never set in production).
        self.check_secret = True
        self.answer_before_commit = False

    @property
    def port(self) -> int:
        assert self._runner is not None
        return int(self._runner.addresses[0][1])

    @property
    def serving(self) -> bool:
        return self._runner is not None and self._writer is not None and not self._writer.done()

    async def start(self) -> None:
        """Bind now (an `OSError` if the port is taken): before Telegram is told the URL."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.listen, self.wanted_port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._writer = asyncio.create_task(self._write_loop(), name="tipline-webhook-journal")
        liveness.watch(WEBHOOK, self._writer)

    async def stop(self) -> None:
        """Stop taking requests; those in hand are journaled and answered first."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        for waiting in self._queue:
            if not waiting.done.done():
                waiting.done.set_exception(ConnectionError("stopping"))
        self._queue.clear()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path != self.path:
            return self._answer("not_found", 404)
        if request.method != "POST":
            return self._answer("not_found", 405)
        if self.check_secret and not hmac.compare_digest(
                request.headers.get(SECRET_HEADER, "").encode(), self._secret):
            self._tlog("unauthorized", logging.WARNING,
                       "webhook: requests without the right secret token refused (401); said once a minute")
            return self._answer("unauthorized", 401)
        self.last_request = time.time()
        liveness.beat(WEBHOOK)
        try:
            data = json.loads(await request.read())
            if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
                raise ValueError("not an update")
        except (ValueError, UnicodeDecodeError, web.HTTPRequestEntityTooLarge):
            return self._answer("bad_request", 400)
        try:
            minimal_update(data)
        except (KeyError, TypeError, ValueError, AttributeError):
            # From Telegram (the secret matched) but not an update tipline can read: refusing it
            # would have Telegram send it again and again, holding up the chat's next updates.
            log.error("webhook: update %s cannot be read: dropped", data["update_id"])
            return self._answer("unreadable", 200)
        waiting = _Waiting(data)
        waiting.done.add_done_callback(_retrieved)  # a request whose client left still gets journaled
        self._queue.append(waiting)
        self._wake.set()
        if self.answer_before_commit:
            return self._answer("accepted", 200)
        try:
            new = await asyncio.shield(waiting.done)
        except Exception as exc:  # noqa: BLE001 - not journaled: Telegram sends it again
            self._tlog("journal", logging.WARNING, "webhook: journaling failed (%s): answered 500, "
                       "Telegram sends the update again", type(exc).__name__)
            return self._answer("journal_failed", 500)
        return self._answer("accepted" if new else "duplicate", 200)

    @staticmethod
    def _answer(outcome: str, status: int) -> web.Response:
        metrics.WEBHOOK_REQUESTS.labels(outcome).inc()
        return web.Response(status=status, text="" if status == 200 else f"{status}\n")

    async def _write_loop(self) -> None:
        """Journal what has arrived, a batch per transaction; answer each request after the commit."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:GROUP_COMMIT], self._queue[GROUP_COMMIT:]
                try:
                    fresh, new_ids = await asyncio.to_thread(
                        self.poller.journal_batch, [w.data for w in batch], advance_offset=False)
                except Exception as exc:  # noqa: BLE001 - each request answers 500
                    for waiting in batch:
                        if not waiting.done.done():
                            waiting.done.set_exception(exc)
                    continue
                self._tlog.recovered("journal", "webhook: journaling works again")
                self.poller.accept(fresh)
                for waiting in batch:
                    if not waiting.done.done():
                        waiting.done.set_result(waiting.data["update_id"] in new_ids)
