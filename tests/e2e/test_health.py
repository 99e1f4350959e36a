"""/healthz and /metrics over real HTTP, with tipline running against the fake Bot API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.health import HealthServer
from bot.services import outbox
from tests.e2e.conftest import Harness, e2e_config
from tests.fakebot import FakeBotAPI

CITIZEN = 5_790_001
LEAD = 7_790_001
STUCK_AFTER = 600.0


@pytest.fixture
async def running(database_url: str, server: FakeBotAPI) -> AsyncIterator[tuple[Harness, str]]:
    h = Harness(server, e2e_config(database_url, server,
                                   health={"enabled": True, "port": 0, "outbox_stuck_seconds": STUCK_AFTER}))
    await h.start()
    health = HealthServer(h.deps)
    await health.start()
    try:
        yield h, f"http://127.0.0.1:{health.port}"
    finally:
        await health.stop()
        await h.stop()


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as client, client.get(url) as response:
        return response.status, await response.text()


async def _health(base: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as client, client.get(base + "/healthz") as response:
        return response.status, await response.json()


async def _healthy(base: str) -> dict[str, Any]:
    last: dict[str, Any] = {}
    for _ in range(200):
        status, last = await _health(base)
        if status == 200:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"never healthy: {last}")


async def test_healthz_turns_unhealthy_when_the_outbox_is_stuck(running: tuple[Harness, str]) -> None:
    h, base = running
    srv = h.server
    h.add_staff(srv.user(LEAD, "Lead"), "lead", 1)
    await h.say(srv.user(CITIZEN, "Tipster"), "/start", expect="查询码")  # the poller has fetched: receiving
    body = await _healthy(base)
    assert set(body["checks"]) == {"receiver", "sender", "database", "outbox", "scheduler"}

    # Telegram keeps failing one chat's messages: the row stays unsent while time passes.
    srv.fail_next("sendMessage", 502, count=10_000)
    with h.deps.sessions.begin() as session:
        outbox.enqueue(session, h.deps.keyring, h.deps.clock.now(), dedupe_key="test:stuck", chat_id=LEAD,
                       method="send_message", payload={"text": "x"}, purpose="team_note")
    h.deps.nudge_sender()
    status, body = await _health(base)
    assert status == 200, body  # young: not stuck yet
    h.clock.advance(seconds=STUCK_AFTER + 60)
    status, body = await _health(base)
    assert status == 503
    assert body["checks"]["outbox"]["ok"] is False
    assert body["checks"]["outbox"]["oldest_unsent_seconds"] > STUCK_AFTER
    assert body["checks"]["sender"]["ok"] is True and body["checks"]["database"]["ok"] is True


async def test_healthz_turns_unhealthy_when_the_sender_has_died(running: tuple[Harness, str]) -> None:
    h, base = running
    await h.say(h.server.user(CITIZEN, "Tipster"), "/start", expect="查询码")
    await _healthy(base)
    task = h.runtime.sender._task  # type: ignore[union-attr]
    assert task is not None
    task.cancel()
    status, body = await _health(base)
    assert status == 503
    assert body["status"] == "unhealthy"
    assert body["checks"]["sender"] == {**body["checks"]["sender"], "ok": False, "running": False}
    assert body["checks"]["receiver"]["ok"] is True


async def test_metrics_parse_and_carry_no_person(running: tuple[Harness, str]) -> None:
    h, base = running
    srv = h.server
    h.add_staff(srv.user(LEAD, "Lead"), "lead", 1)
    citizen = srv.user(CITIZEN, "Tipster")
    srv.force_retry_after(1, count=1, method="sendMessage")
    await h.report(citizen)
    await h.expect(LEAD, "举报 #1")
    status, body = await _get(base + "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body)}  # prometheus-client's own parser
    for name in ("tipline_updates_handled", "tipline_handler_failures", "tipline_telegram_429",
                 "tipline_send_pause_seconds", "tipline_scheduled_runs", "tipline_outbox_depth",
                 "tipline_outbox_oldest_age_seconds", "tipline_tips_received", "tipline_escalations",
                 "tipline_last_scheduled_run_timestamp_seconds"):
        assert name in families, name
    tips = {s.labels["team"]: s.value for s in families["tipline_tips_received"].samples if s.name.endswith("_total")}
    assert tips == {"1": 1.0}
    assert sum(s.value for s in families["tipline_updates_handled"].samples if s.name.endswith("_total")) >= 8
    assert sum(s.value for s in families["tipline_telegram_429"].samples if s.name.endswith("_total")) >= 1
    people = {str(CITIZEN), str(LEAD), "Tipster", "Lead"}
    for family in families.values():
        for sample in family.samples:
            for key, value in sample.labels.items():
                assert key not in ("chat", "chat_id", "user", "user_id", "person")
                assert value not in people, (family.name, sample)
