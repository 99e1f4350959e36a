"""A timer job's error boundary: back-off, and one log line a minute, not one per tick."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.jobs import TickGuard


def test_a_failing_tick_backs_off_and_logs_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.jobs")
    now = [0.0]
    guard = TickGuard("sweep", monotonic=lambda: now[0])
    calls = 0
    fail = True

    async def work() -> int:
        nonlocal calls
        calls += 1
        if fail:
            raise OSError("database is locked")
        return 7

    async def ticks(seconds: int) -> list[object]:
        out = []
        for _ in range(seconds):
            out.append(await guard.run(work))
            now[0] += 1.0
        return out

    results = asyncio.run(ticks(120))  # a tick a second for two minutes, the database away
    assert results == [None] * 120
    assert calls < 20  # backed off: not 120 attempts
    lines = [r.getMessage() for r in caplog.records]
    assert 1 <= len(lines) <= 3 and all("database unavailable" in line for line in lines)
    fail = False
    now[0] += 120
    assert asyncio.run(guard.run(work)) == 7
    assert "working again" in caplog.records[-1].getMessage()
