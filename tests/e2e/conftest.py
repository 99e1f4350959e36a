"""End-to-end harness: tipline runs against a fake Bot API on 127.0.0.1 over real HTTP.

Tests act as users do: they push messages and button presses into the fake server's
update queue and read what the bot sent back. Time is real time plus an offset that
tests can move forward (OffsetClock).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from cryptography.fernet import Fernet

from bot.app import Runtime
from bot.clock import OffsetClock
from bot.config import Config
from bot.services.staff import create_invite, join
from tests.conftest import make_config
from tests.fakebot import FakeBotAPI, SentRecord

TOKEN = "123456:TEST-TOKEN"
FAST = {"global_per_second": 1000.0, "per_chat_per_second": 100.0, "group_per_minute": 6000.0}


def plain(record: SentRecord | dict[str, Any]) -> str:
    return record.get("plain_text") or re.sub(r"<[^>]+>", "", record.get("text") or record.get("caption") or "")


class Harness:
    def __init__(self, server: FakeBotAPI, config: Config) -> None:
        self.server = server
        self.config = config
        self.clock = OffsetClock()
        self.runtime: Runtime | None = None
        self._seen: dict[int, int] = {}

    @property
    def deps(self):  # type: ignore[no-untyped-def]
        assert self.runtime is not None
        return self.runtime.deps

    async def start(self) -> None:
        self.runtime = Runtime(self.config, clock=self.clock)
        await self.runtime.start()

    async def stop(self) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
            self.runtime.engine.dispose()
            self.runtime = None

    async def crash(self) -> None:
        if self.runtime is not None:
            await self.runtime.crash()
            self.runtime = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    # acting ----------------------------------------------------------------------------
    def mark(self, chat_id: int) -> int:
        return len(self.server.sent_to(chat_id))

    async def expect(self, chat_id: int, contains: str, *, after: int | None = None, timeout: float = 10.0
                     ) -> SentRecord:
        """The first message to `chat_id` after `after` (default: the last one read) whose
        visible text contains `contains`."""
        start = self._seen.get(chat_id, 0) if after is None else after

        def found() -> SentRecord | None:
            for i, record in enumerate(self.server.sent_to(chat_id)[start:], start=start):
                if contains in plain(record):
                    self._seen[chat_id] = i + 1
                    return record
            return None

        return await self.server.wait_for(found, timeout, message=f"a message containing {contains!r} "
                                                                   f"in chat {chat_id}")

    async def expect_button(self, chat_id: int, label: str, timeout: float = 10.0) -> SentRecord:
        """The latest message to `chat_id` that carries a button labelled with `label`."""

        def found() -> SentRecord | None:
            for record in reversed(self.server.sent_to(chat_id)):
                rows = (record.get("reply_markup") or {}).get("inline_keyboard") or []
                if any(label in b.get("text", "") for row in rows for b in row):
                    return record
            return None

        return await self.server.wait_for(found, timeout, message=f"a button {label!r} in chat {chat_id}")

    async def say(self, user: dict[str, Any], text: str | None = None, expect: str | None = None,
                  **media: Any) -> SentRecord | None:
        self.server.push_message(user, text, **media)
        if expect is None:
            return None
        return await self.expect(user["id"], expect)

    async def press(self, user: dict[str, Any], message: Any, button_text: str, expect: str | None = None,
                    chat_id: int | None = None) -> SentRecord | None:
        self.server.press(user, message, button_text)
        if expect is None:
            return None
        return await self.expect(chat_id if chat_id is not None else user["id"], expect)

    async def acknowledge(self, lead: dict[str, Any], card: Any, shows: str = "询问举报人") -> Any:
        """The lead presses 签收 on a card in their chat; the card once it shows the button `shows`."""
        uid, mid = lead["id"], card["message_id"]
        self.server.press(lead, card, "签收")
        return await self.server.wait_for(lambda: shows in str(self.server.message(uid, mid)["reply_markup"])
                                          and self.server.message(uid, mid))

    async def open_outcome(self, lead: dict[str, Any], card: Any) -> SentRecord:
        """The lead acknowledges the card, then starts recording its outcome; the question asked."""
        card = await self.acknowledge(lead, card, "录入结果")
        self.server.press(lead, card, "录入结果")
        return await self.expect(lead["id"], "办理结果？")

    async def alert_for(self, count_before: int, timeout: float = 5.0) -> dict[str, Any]:
        return await self.server.wait_for(
            lambda: self.server.callback_answers[count_before] if len(self.server.callback_answers) > count_before
            else None, timeout, message="a callback answer")

    # set-up ------------------------------------------------------------------------------
    def add_staff(self, user: dict[str, Any], role: str, team: int | None, lang: str = "zh-CN") -> None:
        add_staff(self.deps, user, role, team, lang)

    def invite(self, *, role: str | None = None, team: int | None = None, group: bool = False) -> str:
        deps = self.deps
        with deps.sessions.begin() as session:
            return create_invite(session, deps.keyring, deps.clock.now(), kind="group" if group else "person",
                                 role=role, team_number=team)

    # the citizen's whole flow -------------------------------------------------------------
    async def report(self, user: dict[str, Any], *, category: str = "迟到早退脱岗", unit: str = "定昌镇",
                     place: str = "11月20日上午9点，镇政府便民服务大厅",
                     text: str = "窗口工作人员九点半还没有到岗，群众排队等了很久。", evidence: int = 0,
                     notify: bool = False) -> str:
        """Report a tip through the chat as a citizen would; returns the receipt code."""
        uid = user["id"]
        menu = await self.say(user, "/start", expect="receipt code" if self._en(user) else "查询码")
        cats = await self.press(user, menu, "📝", expect="1")
        units = await self.press(user, cats, category, expect="2")
        await self.press(user, units, unit, expect="3")
        await self.say(user, place, expect="4")
        ev = await self.say(user, text, expect="5")
        for _ in range(evidence):
            self.server.push_message(user, photo=True)
        if evidence:
            ev = await self.expect(uid, f"已收到 {evidence} 个证据")  # after the clean copies
        await self.press(user, ev, "完成" if evidence else "跳过", expect="核对")
        review = await self.expect_button(uid, "提交")
        if notify:
            await self.press(user, review, "通知我", expect="核对")
            review = await self.expect_button(uid, "通知我：开")
        receipt = await self.press(user, review, "提交", expect="您的查询码")
        assert receipt is not None
        return re.search(r"\d{4} \d{4} \d{4} \d{4}", plain(receipt)).group(0)  # type: ignore[union-attr]

    @staticmethod
    def _en(user: dict[str, Any]) -> bool:
        return (user.get("language_code") or "").startswith("en")


def add_staff(deps: Any, user: dict[str, Any], role: str, team: int | None, lang: str = "zh-CN") -> None:
    """The user joins as staff with an invite of their own (as /join does)."""
    with deps.sessions.begin() as session:
        now = deps.clock.now()
        code = create_invite(session, deps.keyring, now, kind="person", role=role, team_number=team)
        join(session, deps, code, user["id"], user["first_name"], lang, now)


@pytest.fixture
async def server() -> AsyncIterator[FakeBotAPI]:
    async with FakeBotAPI(TOKEN, global_per_second=None, per_chat_per_second=None, group_per_minute=None) as srv:
        yield srv


CONTACT_KEY = Fernet.generate_key().decode()


def e2e_config(database_url: str, server: FakeBotAPI, **sections: dict[str, Any]) -> Config:
    # Short leases: on PostgreSQL a crashed bot's messages in flight, and the sending, come back soon after it.
    telegram = {"base_url": server.base_url, "base_file_url": server.base_file_url, "poll_timeout_seconds": 5,
                "send_lease_seconds": 6.0, "sender_lead_seconds": 3.0, **FAST, **sections.pop("telegram", {})}
    security = {"contact_key": CONTACT_KEY, **sections.pop("security", {})}
    deadlines = {"sweep_seconds": 0.2, **sections.pop("deadlines", {})}
    journal = {"lease_seconds": 3.0, "retry_seconds": 0.5, **sections.pop("journal", {})}
    return make_config(database_url, telegram=telegram, security=security, deadlines=deadlines, journal=journal,
                       **sections)


@asynccontextmanager
async def started(server: FakeBotAPI, config: Config) -> AsyncIterator[Harness]:
    """The bot running for the block; stopped after, then checked as every run is."""
    h = Harness(server, config)
    await h.start()
    try:
        yield h
    finally:
        await h.stop()
        assert not server.calls_for("forwardMessage"), "tipline must never forward a message"
        assert not server.internal_errors, server.internal_errors


@pytest.fixture
async def harness(database_url: str, server: FakeBotAPI) -> AsyncIterator[Harness]:
    async with started(server, e2e_config(database_url, server)) as h:
        yield h


@pytest.fixture
async def echo_harness(database_url: str, server: FakeBotAPI) -> AsyncIterator[Harness]:
    """The bot with every SQL statement logged (and its parameters), for tests that read them."""
    async with started(server, e2e_config(database_url, server, database={"echo": True})) as h:
        yield h
