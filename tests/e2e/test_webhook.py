"""Webhook mode end to end, through real HTTP: the fake Bot API posts updates (as Telegram
does: with the secret token header, one chat at a time, again after a non-200) to tipline's
own receiver, which journals each update before answering 200."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from bot import metrics
from bot.polling import ALLOWED_UPDATES
from storage.models import UpdateJournal
from tests.e2e.conftest import Harness, e2e_config, plain
from tests.fakebot import FakeBotAPI

SECRET = "s3cret_Token-for-tests"
PUBLIC_URL = "https://tipline.example.org/telegram"
HELP = "怎么用"


def webhook_config(database_url: str, server: FakeBotAPI, **sections):  # type: ignore[no-untyped-def]
    telegram = {"mode": "webhook", "webhook_port": 0, "webhook_url": PUBLIC_URL, "webhook_secret_token": SECRET,
                **sections.pop("telegram", {})}
    return e2e_config(database_url, server, telegram=telegram, **sections)


@pytest.fixture
async def hooked(database_url: str, server: FakeBotAPI) -> AsyncIterator[Harness]:
    h = Harness(server, webhook_config(database_url, server))
    await h.start()
    assert h.runtime is not None and h.runtime.webhook is not None
    server.webhook.backends = [f"http://127.0.0.1:{h.runtime.webhook.port}/telegram"]
    try:
        yield h
    finally:
        await h.stop()
        assert not server.internal_errors, server.internal_errors


def journal_size(h: Harness) -> int:
    with h.deps.sessions.begin() as session:
        return session.scalar(select(func.count()).select_from(UpdateJournal)) or 0


def helps(srv: FakeBotAPI, chat_id: int) -> int:
    return sum(1 for r in srv.sent_to(chat_id) if HELP in plain(r))


def counted(outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("tipline_webhook_requests_total", {"outcome": outcome}) or 0.0


async def test_wrong_or_missing_secret_is_401_and_nothing_is_journaled(
        hooked: Harness, caplog: pytest.LogCaptureFixture) -> None:
    h, srv = hooked, hooked.server
    url = srv.webhook.backends[0]  # type: ignore[index]
    update = {"update_id": 9_100_001, "message": {
        "message_id": 1, "date": 1772415037, "text": "/help",
        "chat": {"id": 5_910_001, "type": "private", "first_name": "Sender-Name"},
        "from": {"id": 5_910_001, "is_bot": False, "first_name": "Sender-Name"},
        "entities": [{"type": "bot_command", "offset": 0, "length": 5}]}}
    before = counted("unauthorized")
    with caplog.at_level(logging.DEBUG):
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"},
                            {"X-Telegram-Bot-Api-Secret-Token": SECRET + "x"},
                            {"X-Telegram-Bot-Api-Secret-Token": ""}):
                async with http.post(url, json=update, headers=headers) as response:
                    assert response.status == 401
            async with http.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}) as r:
                assert r.status == 200  # the same request with the secret: accepted
    assert counted("unauthorized") - before == 4
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition(None).decode())}
    samples = families["tipline_webhook_requests"].samples
    assert {tuple(sample.labels) for sample in samples} == {("outcome",)}  # no person, no chat
    assert {"unauthorized", "accepted"} <= {sample.labels["outcome"] for sample in samples}
    await srv.wait_for(lambda: helps(srv, 5_910_001) == 1, timeout=10)
    assert journal_size(h) == 1  # only the authenticated one
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Sender-Name" not in logged and "5910001" not in logged and "127.0.0.1:" not in logged.replace(
        f"127.0.0.1:{h.runtime.webhook.port}", "")  # type: ignore[union-attr]


async def test_unauthenticated_requests_alone_leave_the_journal_empty(hooked: Harness) -> None:
    h, srv = hooked, hooked.server
    async with aiohttp.ClientSession() as http:
        for n in range(5):
            async with http.post(srv.webhook.backends[0], json={"update_id": 9_100_100 + n}) as response:  # type: ignore[index]
                assert response.status == 401
    assert journal_size(h) == 0


async def test_webhook_is_registered_and_updates_are_handled(hooked: Harness) -> None:
    h, srv = hooked, hooked.server
    [call] = srv.calls_for("setWebhook")
    params = call["params"]
    assert params["url"] == PUBLIC_URL and params["secret_token"] == SECRET
    assert params["allowed_updates"] == ALLOWED_UPDATES and params.get("drop_pending_updates") in (None, False)
    user = srv.user(5_910_101, "Hook")
    await h.say(user, "/help", expect=HELP)
    menu = await h.say(user, "/start", expect="查询码")
    await h.press(user, menu, "📝", expect="1")
    assert all(a["status"] == 200 for a in srv.webhook.attempts)
    assert srv.webhook_url == PUBLIC_URL
    await h.stop()
    assert not srv.calls_for("deleteWebhook")  # the webhook stays: Telegram keeps updates meanwhile
    assert srv.webhook_url == PUBLIC_URL


async def test_a_redelivered_update_is_handled_once(hooked: Harness) -> None:
    h, srv = hooked, hooked.server
    poller = h.runtime.poller  # type: ignore[union-attr]
    user = srv.user(5_910_201, "Twice")
    first = srv.push_message(user, "/help")
    await h.expect(5_910_201, HELP)
    await srv.wait_for(lambda: first["update_id"] in poller._done_ids, timeout=10)  # recorded and counted
    before, duplicates = poller.processed, counted("duplicate")
    srv.push_duplicate(first)  # Telegram sends the same update_id again
    later = srv.push_message(user, "/cancel")  # sent after the duplicate was answered (one chat, in order)
    await h.expect(5_910_201, "取消")
    await srv.wait_for(lambda: later["update_id"] in poller._done_ids, timeout=10)
    assert poller.processed - before == 1  # /cancel only: the duplicate was not handled again
    assert helps(srv, 5_910_201) == 1
    assert srv.webhook.delivered().count(first["update_id"]) == 2
    assert counted("duplicate") - duplicates == 1


async def test_a_journal_failure_answers_500_and_telegram_delivers_again(
        hooked: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h, srv = hooked, hooked.server
    poller = h.runtime.poller  # type: ignore[union-attr]
    real = poller.journal_batch
    failures = [2]

    def flaky(updates, **kw):  # type: ignore[no-untyped-def]
        if failures[0] > 0:
            failures[0] -= 1
            raise OSError("database went away")
        return real(updates, **kw)

    monkeypatch.setattr(poller, "journal_batch", flaky)
    user = srv.user(5_910_301, "Retry")
    update = srv.push_message(user, "/help")
    await h.expect(5_910_301, HELP)
    statuses = [a["status"] for a in srv.webhook.attempts if a["update_id"] == update["update_id"]]
    assert statuses == [500, 500, 200]
    assert helps(srv, 5_910_301) == 1


async def test_polling_deletes_a_leftover_webhook_first(database_url: str, server: FakeBotAPI) -> None:
    srv = server
    async with aiohttp.ClientSession() as http:  # a webhook left from an earlier webhook deployment
        async with http.post(f"{srv.base_url}{srv.token}/setWebhook", data={"url": PUBLIC_URL}) as response:
            assert response.status == 200
    h = Harness(srv, e2e_config(database_url, srv))
    await h.start()
    try:
        await h.say(srv.user(5_910_401, "Poll"), "/help", expect=HELP)
        assert srv.calls_for("deleteWebhook") and srv.webhook_url == ""
        first_delete = srv.calls_for("deleteWebhook")[0]["time"]
        assert all(c["time"] >= first_delete for c in srv.calls_for("getUpdates"))
        assert not srv.calls_for("deleteWebhook")[0]["params"].get("drop_pending_updates")
    finally:
        await h.stop()


async def test_healthz_reports_the_webhook_receiving(hooked: Harness) -> None:
    from bot.health import checks

    h, srv = hooked, hooked.server
    await h.say(srv.user(5_910_501, "Health"), "/help", expect=HELP)
    result = await checks(h.deps)
    receiver = result["receiver"]
    assert receiver.ok and receiver.detail["mode"] == "webhook" and receiver.detail["listening"]
    assert receiver.detail["seconds_since_last_request"] is not None
    await h.runtime.webhook.stop()  # type: ignore[union-attr]
    assert not (await checks(h.deps))["receiver"].ok


async def test_bad_bodies_are_refused_and_an_unreadable_update_is_not_sent_again(hooked: Harness) -> None:
    h, srv = hooked, hooked.server
    url, secret = srv.webhook.backends[0], {"X-Telegram-Bot-Api-Secret-Token": SECRET}  # type: ignore[index]
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=b"not json", headers=secret) as response:
            assert response.status == 400
        async with http.get(url, headers=secret) as response:
            assert response.status == 405
        async with http.post(url + "/other", json={"update_id": 1}, headers=secret) as response:
            assert response.status == 404
        # From Telegram (the secret matches) but unreadable: 200, or it would come back forever.
        async with http.post(url, json={"update_id": 9_100_200, "message": {}}, headers=secret) as response:
            assert response.status == 200
    assert journal_size(h) == 0
