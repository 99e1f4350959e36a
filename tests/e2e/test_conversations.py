"""Conversations kept across restarts (bot/conversations.py): what the table holds, what a
copy of the database can open later, an update handled again after a crash, and the
office's "Edit note" prompt (bound to the member who pressed it, in that chat, expiring)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from bot.sealing import EphemeralKeys, KeyGone
from storage.models import Conversation, UpdateJournal
from storage.models_officials import Bulletin
from tests.e2e.conftest import Harness, e2e_config, plain, started
from tests.fakebot import FakeBotAPI

CITIZEN = 6_230_017_771
OTHER = 6_230_017_772
LEAD = 7_230_001
OFFICE_A = 7_230_011
OFFICE_B = 7_230_012
OFFICE_GROUP = -1_002_300_001
DISTINCT = "县医保中心三号窗口的人员把群众材料扔在地上"


@pytest.fixture
async def h(database_url: str, server: FakeBotAPI) -> AsyncIterator[Harness]:
    # Drafts outlive a key rotation here (4 h), so the re-sealing of live ones is seen.
    async with started(server, e2e_config(database_url, server, scheduler={"enabled": False},
                                          intake={"draft_ttl_minutes": 240})) as harness:
        yield harness


def settled(h: Harness) -> bool:
    """Every update pushed is journaled (confirmed to the fake API) and handled."""
    if h.server.pending_updates:
        return False
    with h.deps.sessions.begin() as session:
        return not session.scalar(select(func.count()).select_from(UpdateJournal)
                                  .where(UpdateJournal.processed_at.is_(None)))


async def until_settled(h: Harness) -> None:
    await h.server.wait_for(lambda: settled(h), 20.0, message="every update handled")


async def to_evidence(h: Harness, user: dict[str, Any], what: str) -> None:
    menu = await h.say(user, "/start", expect="查询码")
    cats = await h.press(user, menu, "📝", expect="第 1 步")
    units = await h.press(user, cats, "迟到早退脱岗", expect="第 2 步")
    await h.press(user, units, "定昌镇", expect="第 3 步")
    await h.say(user, "11月26日下午，县医保中心", expect="第 4 步")
    await h.say(user, what, expect="第 5 步")


def rows(h: Harness) -> dict[tuple[str, str], str]:
    with h.deps.sessions.begin() as session:
        return {(c.kind, c.pseudonym): c.sealed for c in session.scalars(select(Conversation))}


def table_bytes(h: Harness, database_url: str) -> bytes:
    """SQLite: the database file and its -wal, raw. PostgreSQL: the table's rows as text."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    with h.deps.sessions.begin() as session:
        return "\n".join(str(r) for r in session.execute(text("SELECT * FROM conversations"))).encode()


async def test_the_table_holds_no_plaintext_and_a_later_copy_opens_nothing_finished(
        h: Harness, database_url: str) -> None:
    srv = h.server
    lead = srv.user(LEAD, "Lead Wu")
    h.add_staff(lead, "lead", 1)
    citizen, other = srv.user(CITIZEN, "Tipster"), srv.user(OTHER, "Other")
    # A draft that stays open (it must outlive the keys it was first sealed under) ...
    await to_evidence(h, citizen, DISTINCT + "，还骂人。")
    srv.push_message(citizen, photo=True)
    await h.expect(CITIZEN, "已收到 1 个证据")
    # ... one that is submitted, and a lead's question flow that is left to expire.
    await to_evidence(h, other, "窗口人员上班时间离岗两个小时，电话也没人接。")
    await h.press(other, await h.expect_button(OTHER, "跳过"), "跳过", expect="核对")
    await until_settled(h)
    drafts = rows(h)
    assert [kind for kind, _ in drafts] == ["citizen", "citizen"]
    review = await h.expect_button(OTHER, "提交")
    await h.press(other, review, "提交", expect="您的查询码")
    card = await h.expect(LEAD, "举报 #1")
    card = await h.acknowledge(lead, card)
    srv.press(lead, card, "询问举报人")
    await h.expect(LEAD, "请输入要问举报人的问题")
    await until_settled(h)
    now = rows(h)
    assert sorted(kind for kind, _ in now) == ["citizen", "staff"]  # the submitted draft went with its tip

    raw = table_bytes(h, database_url)
    for needle in (DISTINCT.encode(), "县医保中心".encode(), str(CITIZEN).encode(), str(OTHER).encode(),
                   CITIZEN.to_bytes(8, "big"), CITIZEN.to_bytes(6, "big")):
        assert needle not in raw, needle
    keys = EphemeralKeys(h.config.journal.key_dir, timedelta(minutes=h.config.journal.key_rotate_minutes))
    opened = [keys.open(token).decode() for token in {**drafts, **now}.values()]
    assert any(DISTINCT in o for o in opened)  # the needle is there to be found, sealed
    assert not any(str(CITIZEN) in o or str(OTHER) in o for o in opened)  # no id inside either
    live = {k: v for k, v in now.items() if k in drafts}
    assert len(live) == 1
    # copies taken before they finished: the submitted draft, the flow (to expire)
    finished = [v for k, v in {**drafts, **now}.items() if k not in live]
    assert len(finished) == 2

    # Past the keys' period (and the flow's 30 minutes); the journal's upkeep runs first: the
    # live draft's old key is kept for it.
    h.clock.advance(minutes=h.config.journal.key_rotate_minutes + 5)
    poller = h.runtime.poller  # type: ignore[union-attr]
    await asyncio.to_thread(poller.maintain)
    fresh = EphemeralKeys(h.config.journal.key_dir, timedelta(minutes=h.config.journal.key_rotate_minutes))
    assert all(fresh.open(token) for token in rows(h).values())
    # Then the conversations' job: the expired flow deleted, the live draft re-sealed; then
    # the upkeep destroys the old key, and with it every copy of what is finished.
    store = h.deps.conversations
    await asyncio.to_thread(store.maintain, h.runtime.app.bot_data)  # type: ignore[union-attr]
    current = h.deps.ephemeral.current_key_id(h.deps.clock.now())
    with h.deps.sessions.begin() as session:
        assert [(c.kind, c.key_id) for c in session.scalars(select(Conversation))] == [("citizen", current)]
    await asyncio.to_thread(poller.maintain)
    later = EphemeralKeys(h.config.journal.key_dir, timedelta(minutes=h.config.journal.key_rotate_minutes))
    for token in finished:
        with pytest.raises(KeyGone):
            later.open(token)
    (kind, _), token = next(iter(rows(h).items()))
    assert kind == "citizen" and DISTINCT in later.open(token).decode()
    # and the citizen carries on where they were
    evidence = await h.expect_button(CITIZEN, "完成")
    review = await h.press(citizen, evidence, "完成", expect="核对")
    assert DISTINCT in plain(review) and "1 个" in plain(review)


async def test_an_update_saved_but_not_marked_handled_is_not_handled_again(h: Harness) -> None:
    srv = h.server
    citizen = srv.user(CITIZEN, "Tipster")
    await to_evidence(h, citizen, DISTINCT + "，还骂人。")
    # The process dies after the photo's update changed the draft (saved) and before the
    # journal marks the update handled: the next process is given the same update again.
    await until_settled(h)
    runtime = h.runtime
    assert runtime is not None
    gate = threading.Event()
    original = runtime.poller.finish_many

    def stuck(results: list[tuple[int, bool]]) -> list[tuple[str, list[object]]]:
        gate.wait(30)
        raise RuntimeError("the process is gone")

    runtime.poller.finish_many = stuck  # type: ignore[method-assign]
    try:
        srv.push_message(citizen, photo=True)
        await h.expect(CITIZEN, "已收到 1 个证据")
        keys = EphemeralKeys(h.config.journal.key_dir, timedelta(minutes=60))

        def saved() -> bool:
            return any(len(json.loads(keys.open(t))["s"]["draft"]["evidence"]) == 1 for t in rows(h).values())

        await srv.wait_for(saved, 20.0, message="the draft saved with its photo")
        await h.crash()
    finally:
        gate.set()
        runtime.poller.finish_many = original  # type: ignore[method-assign]
    await h.start()
    await until_settled(h)
    assert h.deps.conversations.skipped == 1
    evidence = await h.expect_button(CITIZEN, "完成")
    review = await h.press(citizen, evidence, "完成", expect="核对")
    assert "1 个" in plain(review)  # not two: the photo was not taken twice


# --- the office's "Edit note" prompt ---------------------------------------------------------------
async def _office(h: Harness) -> tuple[dict[str, Any], dict[str, Any], Any]:
    srv = h.server
    a, b = srv.user(OFFICE_A, "Office A"), srv.user(OFFICE_B, "Office B")
    h.add_staff(a, "office", None)
    h.add_staff(b, "office", None)
    srv.group(OFFICE_GROUP, "Office")
    with h.deps.sessions.begin() as session:
        session.add(Bulletin(number=7, status="draft", period="2026-11", breach_ids="[]",
                             created_at=h.deps.clock.now(), issued_on="2026-11-27"))
    draft = await h.runtime.app.bot.send_message(OFFICE_GROUP, "通报第7期（草稿）")  # type: ignore[union-attr]
    return a, b, draft


def note(h: Harness) -> str | None:
    with h.deps.sessions.begin() as session:
        b = session.scalar(select(Bulletin).where(Bulletin.number == 7))
        assert b is not None
        return h.deps.keyring.decrypt_opt(b.note_enc)


async def test_the_note_is_taken_only_from_the_member_who_pressed_in_that_chat(h: Harness) -> None:
    srv = h.server
    a, b, draft = await _office(h)
    srv.push_callback(a, draft, h.deps.keyring.sign("bl:note:1"))
    await h.expect(OFFICE_GROUP, "请在30分钟内在此发送通报第7期的按语")
    srv.push_message(b, "这是B随手发的一句话", chat=OFFICE_GROUP)  # another member, in the same group
    srv.push_message(a, "A在私聊里说的话")  # the member who pressed, elsewhere
    await until_settled(h)
    assert note(h) is None
    await h.restart()  # the prompt is kept across a restart
    srv.push_message(a, "本期通报请各单位认真对照整改。", chat=OFFICE_GROUP)
    await h.expect(OFFICE_GROUP, "按语已保存")
    assert note(h) == "本期通报请各单位认真对照整改。"


async def test_the_note_prompt_expires(h: Harness) -> None:
    srv = h.server
    a, _, draft = await _office(h)
    srv.push_callback(a, draft, h.deps.keyring.sign("bl:note:1"))
    await h.expect(OFFICE_GROUP, "请在30分钟内")
    await until_settled(h)
    h.clock.advance(minutes=h.config.officials.note_prompt_minutes, seconds=1)
    srv.push_message(a, "第二天随口说的话", chat=OFFICE_GROUP)
    await until_settled(h)
    assert note(h) is None
    assert not any("按语已保存" in plain(r) for r in srv.sent_to(OFFICE_GROUP))
    with h.deps.sessions.begin() as session:
        assert not list(session.execute(select(Conversation.kind, Conversation.expires_at)))
