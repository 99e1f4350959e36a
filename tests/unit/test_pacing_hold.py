"""The pacer's hold after taking over the sending from another process: nothing leaves
within what remains of the handover after the other's lead ended, and a group hears from
this process only a group's interval after it (the other process may have sent to it just
before). Delays are computed, not timed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from bot.ratelimit import PacingRateLimiter
from bot.services import sendlead

GROUP = 60.0 / 20 + 0.05  # a group's interval at 20 a minute, with the margin


def _waits(ended: float | None) -> tuple[float, float, float, float, float]:
    """(before the hold, a new private chat, a new group, any request, a chat paced already)
    after a hold for a lead that ended `ended` seconds ago."""
    async def run() -> tuple[float, float, float, float, float]:
        limiter = PacingRateLimiter(global_per_second=30, per_chat_per_second=1, group_per_minute=20)
        fresh = limiter._reserve_chat(1001)  # before any hold: at once
        if ended is None:
            limiter.hold(1.0)
        else:
            limiter.hold(1.0, ended)
        return (fresh, limiter._reserve_chat(1002), limiter._reserve_chat(-1002), limiter._reserve(),
                limiter._reserve_chat(1001))

    return asyncio.run(run())


def test_a_lead_still_running_holds_the_whole_handover_and_each_groups_first() -> None:
    for ended in (None, 0.0):  # 0 is the default: taken by force while the other's lead ran
        fresh, private, group, overall, known = _waits(ended)
        assert fresh == 0.0
        assert 0.99 < private <= 1.0  # a chat first seen now: after the handover
        assert GROUP - 0.01 < group <= GROUP  # a group: one group interval
        assert 0.99 < overall <= 1.0  # every request waits out the handover
        assert 0.99 < known <= 1.05  # a chat this process paced already keeps its own next turn


def test_a_lead_that_ended_a_moment_ago_holds_only_the_remainder() -> None:
    _, private, group, overall, known = _waits(0.4)
    assert 0.59 < private <= 0.6
    assert GROUP - 0.41 < group <= GROUP - 0.4
    assert 0.59 < overall <= 0.6
    assert 0.99 < known <= 1.05  # its own pace, not the hold


def test_a_lead_that_ended_long_ago_holds_nothing() -> None:
    _, private, group, overall, _ = _waits(GROUP + 0.1)
    assert (private, group, overall) == (0.0, 0.0, 0.0)
    _, private, group, overall, _ = _waits(1.5)  # past the handover, within a group's interval
    assert private == 0.0 and overall == 0.0
    assert GROUP - 1.51 < group <= GROUP - 1.5


def test_how_long_ago_the_lead_ended_on_the_databases_clock() -> None:
    now = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
    never = sendlead.Status(None, None, None, None, now)
    assert sendlead.ended_ago(never) is None  # nobody ever sent: no hold at all
    ago = sendlead.Status("h:1:ab", now - timedelta(minutes=5), now - timedelta(seconds=3.5),
                          now - timedelta(seconds=2.25), now)
    assert sendlead.ended_ago(ago) == 2.25
    running = sendlead.Status("h:1:ab", now - timedelta(minutes=5), now, now + timedelta(seconds=2), now)
    assert sendlead.ended_ago(running) == 0.0  # taken by force while it ran: the whole handover
