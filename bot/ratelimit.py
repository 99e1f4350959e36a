"""Pacing for every Bot API request tipline makes (installed as PTB's rate limiter).

Telegram publishes three limits: about 30 messages a second overall, one a second in a
private chat, 20 a minute in a group. PTB's AIORateLimiter enforces the first and the
last, not the per-chat second, and lets `RetryAfter` through by default. This limiter
spaces requests evenly (a reservation per request: no bursts to be punished for) on all
three, and when Telegram still answers `RetryAfter`, pauses *every* request for that long
and retries.

Telegram counts a request when it arrives, which the sender cannot see: only that it is
after the request left and before its answer came back. Spacing by departures alone is
punished whenever arrivals jitter by more than the margin (a busy event loop, a busy
server, the network), and one 429 pauses everything for at least a second, 30 messages
lost. So the overall limit is also kept on what is certain: a request counts from the
moment it leaves until one second after its answer, and no more than the limit count at
once. Then no 30 requests can arrive within one second however late or early each one
arrives; the price is the answer's latency (30 / (1 s + latency) at most).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

from bot import metrics
from bot.supervise import ThrottledLog

log = logging.getLogger(__name__)

# Requests that are not messages: never paced (a callback answer must be quick).
UNPACED = frozenset(
    {
        "getUpdates",
        "getMe",
        "answerCallbackQuery",
        "deleteWebhook",
        "setWebhook",
        "getWebhookInfo",
        "setMyCommands",
        "deleteMyCommands",
        "getMyCommands",
        "getFile",
        "getChat",
        "close",
        "logOut",
        "sendChatAction",
    }
)


JITTER_MARGIN = 0.05  # seconds
# Overall, requests are spaced 1% wider than the limit: only to keep them evenly spread
# (the window of answers below is what keeps them under Telegram's count).
GLOBAL_MARGIN = 0.01
# The span over which Telegram counts `global_per_second` requests.
GLOBAL_WINDOW = 1.0


# Set by the outbox sender for the request it makes: called right before the request
# leaves, it raises if the row's lease is no longer safely held (so the request stays).
SEND_GUARD: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("send_guard", default=None)


def retry_after_seconds(exc: RetryAfter) -> float:
    value: Any = exc._retry_after  # a timedelta in PTB 22; the public property may warn
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class PacingRateLimiter(BaseRateLimiter[int]):
    def __init__(
        self,
        global_per_second: float = 30.0,
        per_chat_per_second: float = 1.0,
        group_per_minute: float = 20.0,
        max_retries: int = 3,
    ) -> None:
        self._global_interval = (1.0 + GLOBAL_MARGIN) / global_per_second
        # A request reaches Telegram a little after it leaves; spacing per chat carries a
        # small margin so that network jitter never makes two arrive closer than allowed.
        self._chat_interval = 1.0 / per_chat_per_second + JITTER_MARGIN
        self._group_interval = 60.0 / group_per_minute + JITTER_MARGIN
        self._max_retries = max_retries
        self._next_global = 0.0
        self._per_window = max(1, int(global_per_second * GLOBAL_WINDOW))
        self._in_flight = 0  # requests that left and have no answer yet
        self._answered: deque[float] = deque()  # answer times of the last GLOBAL_WINDOW
        self._answer = asyncio.Event()  # replaced at each answer: wakes who waits for one
        self._next_chat: dict[int | str, float] = {}
        self._paused_until = 0.0
        # Until then a chat seen for the first time waits (`hold`): another process may
        # have sent to it just before this one took over the sending.
        self._chat_floor = 0.0
        self._group_floor = 0.0
        self.retry_after_count = 0
        self.requests = 0
        self._throttled = ThrottledLog(log)

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _reserve_chat(self, chat_id: int | str) -> float:
        """The moment the chat may have its next request; reserved at once."""
        now = self._now()
        private = isinstance(chat_id, int) and chat_id > 0
        interval = self._chat_interval if private else self._group_interval
        start = max(now, self._next_chat.get(chat_id, self._chat_floor if private else self._group_floor))
        self._next_chat[chat_id] = start + interval
        if len(self._next_chat) > 10_000:
            self._forget_idle(now)
        return start - now

    def hold(self, handover: float, ended: float = 0.0) -> None:
        """This process has just taken over the sending from another (bot/services/sendlead.py)
        whose lead ended `ended` seconds ago (0 if it still ran: taken at a SQLite start after
        a crash). That one let no request leave in the last `handover` of its lead (one that
        released its lead early first waited for its requests in flight, and a request counts
        until one second after its answer): nothing leaves here before `handover` has passed
        since that lead ended, what remains of it from now, so that none of its requests
        still counts in Telegram's one-second window; and no group hears from this process
        before a group's interval has passed since then (its limiter knew the groups' last
        messages, this one does not). A lead that ended long enough ago holds nothing."""
        now = self._now()
        pause = max(0.0, handover - ended)
        group = max(0.0, max(handover, self._group_interval) - ended)
        self._paused_until = max(self._paused_until, now + pause)
        self._chat_floor = max(self._chat_floor, now + pause)
        self._group_floor = max(self._group_floor, now + group)

    def _reserve(self, chat_id: int | str | None = None) -> float:
        """The moment this request may go overall (a slot 1/30 s after the previous one)."""
        now = self._now()
        start = max(now, self._paused_until, self._next_global)
        self._next_global = start + self._global_interval
        return start - now

    def _window_wait(self) -> float | None:
        """Seconds until one more request may leave under the overall limit: 0 now, None
        when only an answer can make room (the limit's worth are all in flight)."""
        now = self._now()
        answered = self._answered
        while answered and answered[0] <= now - GLOBAL_WINDOW:
            answered.popleft()
        excess = self._in_flight + len(answered) - self._per_window + 1
        if excess <= 0:
            return 0.0
        if excess > len(answered):
            return None
        # The excess oldest answers must leave the window first.
        return answered[excess - 1] + GLOBAL_WINDOW - now

    def _answered_now(self) -> None:
        self._in_flight -= 1
        self._answered.append(self._now())
        answer, self._answer = self._answer, asyncio.Event()
        answer.set()

    def _after(self, chat_id: int | str) -> None:
        """A request to the chat has been answered. Telegram counted it at some moment
        before the answer (a busy server or network may have held it for a while), so the
        chat's next request waits a full interval from now: spacing by departure times
        alone lets a delayed request and the next one arrive less than a second apart."""
        interval = self._chat_interval if isinstance(chat_id, int) and chat_id > 0 else self._group_interval
        self._next_chat[chat_id] = max(self._next_chat.get(chat_id, 0.0), self._now() + interval)

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, t in self._next_chat.items() if t < now]:
            del self._next_chat[key]

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        if endpoint in UNPACED:
            return await callback(*args, **kwargs)
        retries = self._max_retries if rate_limit_args is None else rate_limit_args
        chat_id = _chat_key(data.get("chat_id"))
        for attempt in range(retries + 1):
            # First the chat's turn, then a global slot: a request waiting for its chat
            # does not hold up the requests to other chats behind it.
            if chat_id is not None:
                delay = self._reserve_chat(chat_id)
                if delay > 0:
                    await asyncio.sleep(delay)
            delay = self._reserve()
            if delay > 0:
                await asyncio.sleep(delay)
            while True:
                if self._paused_until > self._now():  # a RetryAfter arrived while we waited
                    await asyncio.sleep(self._paused_until - self._now())
                    continue
                # A busy event loop wakes sleepers late and together: the window keeps
                # such a burst under Telegram's count, yet the time lost is caught up.
                wait = self._window_wait()
                if wait is None:
                    await self._answer.wait()
                elif wait > 0:
                    await asyncio.sleep(wait)
                else:
                    break
            guard = SEND_GUARD.get()
            if guard is not None:
                guard()
            # From here to the answer nothing awaits before the callback: the request is
            # counted in flight from the moment it may leave.
            self._in_flight += 1
            try:
                self.requests += 1
                return await callback(*args, **kwargs)
            except RetryAfter as exc:
                self.retry_after_count += 1
                pause = retry_after_seconds(exc) + 0.1
                self._paused_until = max(self._paused_until, self._now() + pause)
                metrics.retry_after(pause)
                self._throttled("429", logging.WARNING, "Telegram asked to slow down: pausing all requests for %.1f s",
                                pause)
                if attempt == retries:
                    raise
            finally:
                self._answered_now()
                if chat_id is not None:
                    self._after(chat_id)
        raise AssertionError("unreachable")


def _chat_key(chat_id: Any) -> int | str | None:
    if chat_id is None:
        return None
    try:
        return int(chat_id)
    except (TypeError, ValueError):
        return str(chat_id)
