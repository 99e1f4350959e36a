"""Keeping tipline's background loops alive, and saying so without flooding the log.

The poller, the outbox sender and the job ticks are long-running asyncio tasks. A database
or network error inside one must not end it for good while the bot keeps accepting tips:
each loop retries with back-off (`Backoff`), reports at most one log line a minute per
kind of trouble (`ThrottledLog`), and is itself run under `supervise`, which restarts a
loop that still dies and, if it keeps dying, gives up so the process can exit non-zero and
a supervisor (systemd, the container runtime) starts it again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Exponential back-off with jitter: 0.5 s, 1 s, 2 s ... up to `cap` seconds."""

    base: float = 0.5
    cap: float = 30.0
    attempts: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * (2 ** self.attempts))
        self.attempts += 1
        return delay * (0.8 + 0.4 * random.random())

    def reset(self) -> None:
        self.attempts = 0


@dataclass
class ThrottledLog:
    """One log line per `every` seconds per key; the lines in between are counted, not written."""

    logger: logging.Logger
    every: float = 60.0
    monotonic: Callable[[], float] = time.monotonic
    _last: dict[str, float] = field(default_factory=dict)
    _suppressed: dict[str, int] = field(default_factory=dict)

    def __call__(self, key: str, level: int, message: str, *args: object) -> bool:
        """Log `message` unless `key` was logged less than `every` seconds ago. True if written."""
        now = self.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        suppressed = self._suppressed.pop(key, 0)
        self._last[key] = now
        if suppressed:
            message += " (%d similar in the last minute)"
            args = (*args, suppressed)
        self.logger.log(level, message, *args)
        return True

    def recovered(self, key: str, message: str, *args: object) -> None:
        """Say once that trouble of kind `key` is over (only if it had been reported)."""
        if self._last.pop(key, None) is not None:
            self._suppressed.pop(key, None)
            self.logger.warning(message, *args)


class LoopGaveUp(RuntimeError):
    """A supervised loop kept dying; the process should exit non-zero."""


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    max_restarts: int = 5,
    window_seconds: float = 300.0,
    on_give_up: Callable[[BaseException], None] | None = None,
    backoff: Backoff | None = None,
) -> None:
    """Run `run()` until it returns; restart it when it raises.

    More than `max_restarts` failures within `window_seconds` and the loop is given up:
    `on_give_up` is called (e.g. to stop the application with a non-zero exit status) and
    `LoopGaveUp` is raised. Cancellation passes through untouched.
    """
    backoff = backoff or Backoff(base=1.0, cap=30.0)
    failures: list[float] = []
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the loop is restarted
            now = time.monotonic()
            failures = [t for t in failures if now - t < window_seconds] + [now]
            if len(failures) > max_restarts:
                log.critical("%s: failed %d times in %.0f s, giving up (%s)",
                             name, len(failures), window_seconds, type(exc).__name__)
                if on_give_up is not None:
                    on_give_up(exc)
                raise LoopGaveUp(name) from exc
            delay = backoff.next_delay()
            log.error("%s stopped on %s: %s; restarting in %.1f s",
                      name, type(exc).__name__, _short(exc), delay)
            await asyncio.sleep(delay)


def _short(exc: BaseException) -> str:
    """The first line of an exception's text, cut short: never a statement's parameters."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:200]
