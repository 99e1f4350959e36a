"""Submit's database work runs in a worker thread, not on the event loop: with many
tipsters pressing Submit together, a transaction on the loop keeps every other chat
waiting. Checked where it happens (the thread each write runs in), not by timing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.services import intake, receipts
from tests.e2e.conftest import Harness

CITIZEN = 5_560_001


def on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def test_the_tip_and_its_receipt_are_written_off_the_event_loop(harness: Harness,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, list[bool]] = {"submit": [], "keep": [], "delivered": []}

    def watch(module: Any, name: str) -> None:
        original = getattr(module, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            calls[name].append(on_loop())
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)

    watch(intake, "submit")
    watch(receipts, "keep")
    watch(receipts, "delivered")
    citizen = harness.server.user(CITIZEN, "Citizen")
    code = await harness.report(citizen)
    assert len(code) == 19
    await harness.server.wait_for(lambda: calls["delivered"])
    # each ran once, and never with the event loop in the same thread
    assert calls == {"submit": [False], "keep": [False], "delivered": [False]}
