"""Webhook delivery of the fake Bot API, as Telegram does it.

While a webhook is set, pending updates are POSTed as JSON to it with the
``X-Telegram-Bot-Api-Secret-Token`` header (when a secret was given). One chat's updates
go one at a time, in update_id order: the next is sent only after the previous one was
answered 2xx; different chats are sent concurrently, up to ``max_connections``. An update
answered with anything else (or not answered) stays pending and is sent again after
``retry_delay`` seconds. A 2xx confirms it for good.

``backends`` stands for a reverse proxy in front of several processes: when set, each
delivery goes to the next backend URL in turn (round robin) instead of the registered URL
(which, as on Telegram, must be https://).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from bot.fakeapi.server import FakeBotAPI, _Pending

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def chat_of_update(update: dict[str, Any]) -> Any:
    """Which chat's sequence an update belongs to."""
    for kind in ("message", "edited_message", "channel_post", "my_chat_member", "chat_member"):
        value = update.get(kind)
        if isinstance(value, dict) and isinstance(value.get("chat"), dict):
            return value["chat"].get("id")
    query = update.get("callback_query")
    if isinstance(query, dict):
        message = query.get("message")
        if isinstance(message, dict) and isinstance(message.get("chat"), dict):
            return message["chat"].get("id")
        return ("user", (query.get("from") or {}).get("id"))
    return ("update", update.get("update_id"))


class WebhookDelivery:
    def __init__(self, server: FakeBotAPI) -> None:
        self.server = server
        self.backends: list[str] | None = None
        self.retry_delay = 0.2
        #: every delivery attempt: ``update_id``, ``backend``, ``status`` (None: no answer)
        self.attempts: list[dict[str, Any]] = []
        self.last_error: tuple[int, str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._turn = 0

    def ensure_running(self) -> None:
        loop = self.server._loop
        if loop is None or (self._task is not None and not self._task.done()):
            return
        self._task = loop.create_task(self._run(), name="fakebot-webhook")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def delivered(self) -> list[int]:
        """Update ids answered 2xx, in the order they were."""
        with self.server._lock:
            return [a["update_id"] for a in self.attempts if a["status"] is not None and 200 <= a["status"] < 300]

    async def _run(self) -> None:
        srv = self.server
        in_flight: dict[Any, asyncio.Task[None]] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            try:
                while True:
                    with srv._lock:
                        hook = dict(srv._webhook)
                        if not hook.get("url") or srv._closing:
                            return
                        ready = self._ready(hook, in_flight)
                        event = srv._updates_event
                    for chat, pending in ready:
                        task = asyncio.create_task(self._post(http, hook, pending))
                        in_flight[chat] = task
                        task.add_done_callback(lambda _t, c=chat: (in_flight.pop(c, None), srv._notify_updates()))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(event.wait(), 0.05)
            finally:
                for task in list(in_flight.values()):
                    task.cancel()
                await asyncio.gather(*in_flight.values(), return_exceptions=True)

    def _ready(self, hook: dict[str, Any], in_flight: dict[Any, asyncio.Task[None]]) -> list[tuple[Any, _Pending]]:
        from bot.fakeapi.server import _DEFAULT_ALLOWED_UPDATES, _kind_of_update

        srv = self.server
        allowed = set(hook.get("allowed_updates") or ()) or _DEFAULT_ALLOWED_UPDATES
        srv._pending = [p for p in srv._pending if _kind_of_update(p.update) in allowed]
        first: dict[Any, _Pending] = {}
        for pending in sorted(srv._pending, key=lambda p: p.update_id):
            first.setdefault(chat_of_update(pending.update), pending)
        now = time.monotonic()
        room = int(hook.get("max_connections") or 40) - len(in_flight)
        ready = [(chat, p) for chat, p in first.items() if chat not in in_flight and p.not_before <= now]
        return ready[:max(room, 0)]

    async def _post(self, http: aiohttp.ClientSession, hook: dict[str, Any], pending: _Pending) -> None:
        srv = self.server
        backends = self.backends or [hook["url"]]
        backend = backends[self._turn % len(backends)]
        self._turn += 1
        headers = {"Content-Type": "application/json"}
        if hook.get("secret_token"):
            headers[SECRET_HEADER] = str(hook["secret_token"])
        status: int | None = None
        error = ""
        try:
            async with http.post(backend, data=json.dumps(pending.update), headers=headers) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = type(exc).__name__
        with srv._lock:
            self.attempts.append({"update_id": pending.update_id, "backend": backend, "status": status})
            if status is not None and 200 <= status < 300:
                srv._pending = [p for p in srv._pending if p is not pending]
            else:
                pending.not_before = time.monotonic() + self.retry_delay
                self.last_error = (int(time.time()), f"Wrong response from the webhook: {status}" if status
                                   else f"Connection failed: {error}")
