"""The pacer's hold after taking over the sending from another process: nothing leaves
within the handover, and a group hears from this process only a group's interval later
(the other process may have sent to it just before). Delays are computed, not timed."""

from __future__ import annotations

import asyncio

from bot.ratelimit import PacingRateLimiter


def test_hold_delays_the_first_request_and_each_groups_first() -> None:
    async def run() -> tuple[float, float, float, float, float]:
        limiter = PacingRateLimiter(global_per_second=30, per_chat_per_second=1, group_per_minute=20)
        fresh = limiter._reserve_chat(1001)  # before any hold: at once
        limiter.hold(1.0)
        return (fresh, limiter._reserve_chat(1002), limiter._reserve_chat(-1002), limiter._reserve(),
                limiter._reserve_chat(1001))

    fresh, private, group, overall, known = asyncio.run(run())
    assert fresh == 0.0
    assert 0.99 < private <= 1.0  # a chat first seen now: after the handover
    assert 3.0 < group <= 3.05  # a group: one group interval (60 / 20 s, with the margin)
    assert 0.99 < overall <= 1.0  # every request waits out the handover
    assert 0.99 < known <= 1.05  # a chat this process paced already keeps its own next turn
