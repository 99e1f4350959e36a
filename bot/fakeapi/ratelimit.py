"""Sliding-window flood limits for the fake Bot API server.

Telegram documents its limits loosely ("about 30 messages per second" overall,
"no more than one message per second" in a single chat, "no more than 20
messages per minute" in a group).  The fake enforces them strictly with a
sliding window over real monotonic time: a request is admitted when fewer than
``limit`` requests were admitted during the ``window`` seconds before it.
Rejected requests are not counted.

``tolerance`` (seconds, shared by all windows of a limiter) shortens every
window by that much.  A sender pacing at exactly the limit (one message every
1.000 s) reaches the server with network/scheduling jitter, so consecutive
requests may arrive 0.9996 s apart; with ``tolerance=0`` the second one is a
flood violation.  That strictness is the default because a sound client limiter
should keep a margin anyway; benchmarks that pace exactly at the limit should
pass e.g. ``tolerance=0.01`` (10 ms), which is far below anything a real
burst would gain.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

__all__ = ["SlidingWindow", "retry_after_seconds"]


@dataclass
class SlidingWindow:
    """At most ``limit`` events in any ``window``-second interval."""

    limit: int
    window: float
    tolerance: float = 0.0
    _events: deque[float] = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("limit must be at least 1")
        if not 0 <= self.tolerance < self.window:
            raise ValueError("tolerance must be >= 0 and smaller than the window")

    @property
    def effective_window(self) -> float:
        return self.window - self.tolerance

    def _expire(self, now: float) -> None:
        horizon = now - self.effective_window
        events = self._events
        while events and events[0] <= horizon:
            events.popleft()

    def wait_time(self, now: float) -> float:
        """Seconds until one more event would be admitted (0.0 if it is now)."""
        self._expire(now)
        if len(self._events) < self.limit:
            return 0.0
        # The oldest event that must leave the window for one slot to free up.
        oldest = self._events[len(self._events) - self.limit]
        return max(oldest + self.effective_window - now, 0.0)

    def add(self, now: float) -> None:
        self._events.append(now)

    def is_idle(self, now: float) -> bool:
        """True when nothing is left in the window (the window may be discarded)."""
        self._expire(now)
        return not self._events

    def __len__(self) -> int:
        return len(self._events)


def retry_after_seconds(wait: float) -> int:
    """Telegram's ``retry_after``: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait - 1e-9))
