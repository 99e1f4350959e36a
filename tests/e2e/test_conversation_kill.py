"""Conversations survive a kill -9: the bot, in a child process, is killed (SIGKILL) while a
citizen is half-way through a tip (the text written, one photo attached) and a team lead
is half-way through recording an outcome (the result chosen, the finding not yet typed).
A new process takes over: the citizen presses Done on the message they had, reviews and
submits; the lead types the finding and confirms. Each continues where they were and
gets exactly one tip, one receipt, one card, one outcome.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bot.app import build_deps
from storage.db import upgrade
from storage.models import Conversation, Tip, TipEvent, UpdateJournal
from tests.e2e.conftest import TOKEN, Harness, add_staff, e2e_config, plain
from tests.e2e.test_intake_kill import Child
from tests.e2e.test_officials_kill import _document
from tests.fakebot import FakeBotAPI

CITIZEN = 5_811_001
EARLIER = 5_811_002
LEAD = 7_811_001
PROBE = 5_811_999
DISTINCT = "第九十九号窗口的工作人员上班时间一直在打游戏"


async def _up(srv: FakeBotAPI) -> None:
    """The child answers (a start takes seconds on a busy machine)."""
    probe = srv.user(PROBE, "Probe")
    mark = len(srv.sent_to(PROBE))
    srv.push_message(probe, "/help")
    await srv.wait_for(lambda: len(srv.sent_to(PROBE)) > mark, 90.0, message="the child's first answer")


def _settled(srv: FakeBotAPI, deps: Any) -> bool:
    """Every update pushed is journaled (confirmed) and handled (its conversation saved before that)."""
    if srv.pending_updates:
        return False
    with deps.sessions.begin() as session:
        return not session.scalar(select(func.count()).select_from(UpdateJournal)
                                  .where(UpdateJournal.processed_at.is_(None)))


async def test_a_citizen_and_a_lead_continue_their_flows_after_a_kill_9(database_url: str, tmp_path: Path) -> None:
    async with FakeBotAPI(TOKEN, global_per_second=None, per_chat_per_second=None, group_per_minute=None) as srv:
        config = e2e_config(database_url, srv, scheduler={"enabled": False})
        h = Harness(srv, config)
        deps, engine = build_deps(config, h.clock)
        upgrade(engine)
        lead = srv.user(LEAD, "Lead Sun")
        add_staff(deps, lead, "lead", 1)
        doc = tmp_path / "config.json"
        doc.write_text(json.dumps(_document(config)), encoding="utf-8")
        citizen, earlier = srv.user(CITIZEN, "Tipster"), srv.user(EARLIER, "Earlier")

        child = Child(doc, h.clock.offset.total_seconds())
        await child.start()
        try:
            await _up(srv)
            # A tip to work on, acknowledged; the lead starts recording its outcome.
            await h.report(earlier)
            results = await h.open_outcome(lead, await h.expect(LEAD, "举报 #1"))
            await h.press(lead, results, "不属实", expect="核查情况")

            # The citizen writes a tip up to its evidence: the text, then one photo.
            menu = await h.say(citizen, "/start", expect="查询码")
            cats = await h.press(citizen, menu, "📝", expect="第 1 步")
            units = await h.press(citizen, cats, "迟到早退脱岗", expect="第 2 步")
            await h.press(citizen, units, "定昌镇", expect="第 3 步")
            await h.say(citizen, "11月25日上午，县政务服务中心", expect="第 4 步")
            await h.say(citizen, DISTINCT + "，群众排队等了很久。", expect="第 5 步")
            srv.push_message(citizen, photo=True)
            evidence = await h.expect(CITIZEN, "已收到 1 个证据")
            await srv.wait_for(lambda: _settled(srv, deps), 20.0, message="every update handled")
            with deps.sessions.begin() as session:
                kept = sorted(session.scalars(select(Conversation.kind)))
            assert kept == ["citizen", "staff"]
        finally:
            await child.kill()  # SIGKILL: nothing in memory survives

        await child.start()  # a new process: it has seen neither of them
        try:
            await _up(srv)
            review = await h.press(citizen, evidence, "完成", expect="核对")
            assert "1 个" in plain(review) and DISTINCT in plain(review)
            review = await h.expect_button(CITIZEN, "提交")
            receipt = await h.press(citizen, review, "提交", expect="您的查询码")
            files = await h.say(lead, "经调取监控，当日该窗口人员在岗。", expect="如有附件")
            confirm = await h.press(lead, files, "完成", expect="请核对")
            await h.press(lead, confirm, "确认", expect="已办结")
            await srv.wait_for(lambda: any("📥 举报 #2" in plain(r) for r in srv.sent_to(LEAD)), 20.0,
                               message="the new tip's card")
            await srv.wait_for(lambda: _settled(srv, deps), 20.0, message="every update handled")
            # Something to wait for after the last answers: whatever came before it is there.
            mark = h.mark(CITIZEN)
            srv.push_message(citizen, "/help")
            await srv.wait_for(lambda: len(srv.sent_to(CITIZEN)) > mark, 20.0, message="an answer")
        finally:
            await child.kill()

        assert receipt is not None and re.search(r"\d{4} \d{4} \d{4} \d{4}", plain(receipt))
        with deps.sessions.begin() as session:
            tips = [(t.id, deps.keyring.decrypt(t.text_enc), t.state, len(t.evidence))
                    for t in session.scalars(select(Tip).order_by(Tip.id))]
            outcomes = session.scalar(select(func.count()).select_from(TipEvent)
                                      .where(TipEvent.tip_id == 1, TipEvent.kind == "closed"))
            left = session.scalar(select(func.count()).select_from(Conversation))
        engine.dispose()
        mine = [t for t in tips if DISTINCT in t[1]]
        assert len(mine) == 1 and mine[0][3] == 1, tips  # one tip, with its one photo
        assert sum("您的查询码" in plain(r) for r in srv.sent_to(CITIZEN)) == 1
        cards = [r for r in srv.sent_to(LEAD) if "📥" in plain(r) and f"举报 #{mine[0][0]}" in plain(r)]
        assert len(cards) == 1
        assert tips[0][2] == "closed_unfounded" and outcomes == 1
        assert sum("举报 #1 已办结：不属实" in plain(r) for r in srv.sent_to(LEAD)) == 1  # recorded once
        assert left == 0  # both conversations finished: nothing kept

