"""Anonymity by construction: 200+ tipsters with distinctive identities, and none of their
identifiers in the database, the logs, or anything the bot sent to staff."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, text

from tests.e2e.conftest import Harness

TIPSTERS = 210
LEAD = 7_300_001
GROUP = -1_001_300_000_001


def identity(i: int) -> dict[str, Any]:
    return {
        "id": 6_120_000_000 + i * 7_919,
        "first_name": f"Xiaoqing{i:03d}Zhou",
        "last_name": f"Wuyang{i:03d}Lin",
        "username": f"tipster_zq_{i:03d}",
        "phone": f"+86139{i:08d}"[:14],
    }


async def _tips_by_code(h: Harness, codes: list[str]) -> dict[int, int]:
    """Tip number -> index of the tipster, found the way the office cannot: by the codes."""
    from bot.services.followup import find_tip

    out = {}
    with h.deps.sessions.begin() as session:
        for i, code in enumerate(codes):
            tip = find_tip(session, h.deps.keyring.receipt_hash(code.replace(" ", "")))
            assert tip is not None
            out[tip.id] = i
    return out


def dump_database(engine: Engine) -> str:
    out: list[str] = []
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                out.append(f"{table}: " + " | ".join(repr(v) for v in row))
    return "\n".join(out)


async def test_no_tipster_identifier_reaches_db_logs_or_staff(harness: Harness, caplog: pytest.LogCaptureFixture
                                                                ) -> None:
    caplog.set_level(logging.DEBUG)
    h = harness
    srv = h.server
    lead = srv.user(LEAD, "Lead")
    h.add_staff(lead, "lead", 1)
    group = srv.group(GROUP, "第一督查组")
    srv.push_message(lead, f"/join {h.invite(group=True, team=1)}", chat=group)
    await h.expect(GROUP, "已绑定")

    people = [identity(i) for i in range(TIPSTERS)]
    users = [srv.user(p["id"], p["first_name"], username=p["username"], last_name=p["last_name"])
             for p in people]

    async def one(i: int, user: dict[str, Any]) -> str:
        if i % 10 == 0:  # some share their contact card or location by mistake: refused, not kept
            srv.push_message(user, contact={"phone_number": people[i]["phone"], "first_name": user["first_name"],
                                            "user_id": user["id"]})
            await h.expect(user["id"], "不支持", after=0)
        code = await h.report(user, evidence=1 if i % 7 == 0 else 0, notify=i % 4 == 0,
                              text=f"第{i}号举报：窗口人员上班时间玩手机，群众等了半小时。")
        if i % 5 == 0:  # some come back: the timeline and an addition
            await h.say(user, code, expect="举报 #")
        return code

    # Tipsters act concurrently, as they would.
    codes = []
    for start in range(0, TIPSTERS, 30):
        batch = list(enumerate(users))[start : start + 30]
        codes += await asyncio.gather(*(one(i, u) for i, u in batch))
    assert len(set(codes)) == TIPSTERS
    await srv.wait_for(lambda: len([r for r in srv.sent_to(GROUP) if "举报 #" in (r.get("plain_text") or "")])
                       >= TIPSTERS, timeout=60)
    # The lead acknowledges three tips and asks their tipsters a question; they answer.
    cards = {n: next(r for r in srv.sent_to(GROUP) if (r.get("plain_text") or "").startswith(f"📥 举报 #{n}\n"))
             for n in (1, 2, 5)}
    for n, card in cards.items():
        srv.press(lead, card, "签收")
        await srv.wait_for(lambda card=card: "询问举报人" in str(srv.message(GROUP, card["message_id"])["reply_markup"]))
        srv.press(lead, srv.message(GROUP, card["message_id"]), "询问举报人")
        await h.expect(LEAD, "请输入要问举报人的问题")
        await h.say(lead, f"第{n}号举报：请问具体是几点？", expect="问题已记录")
    by_tip = await _tips_by_code(h, codes)
    for n in cards:
        i = by_tip[n]
        user = users[i]
        timeline = await h.say(user, codes[i], expect="督查组的问题")
        await h.press(user, timeline, "回答", expect="回答")
        await h.say(user, "大约上午九点四十。", expect="文字 1 条")
        await h.press(user, await h.expect_button(user["id"], "发送给督查组"), "发送给督查组", expect="已送达")
        await h.expect(GROUP, f"举报 #{n}：举报人回答了问题")
    await srv.wait_for(lambda: sum("有新进展" in (r.get("plain_text") or "") for r in srv.sent) >= 1)

    assert h.runtime is not None
    database = dump_database(h.runtime.engine)
    logs = caplog.text
    staff_chats = {LEAD, GROUP}
    to_staff = json.dumps([r for r in srv.sent if r["chat_id"] in staff_chats], ensure_ascii=False, default=str)
    to_staff += json.dumps([e for e in srv.edits if e.get("chat_id") in staff_chats], ensure_ascii=False,
                           default=str)
    to_staff += json.dumps(srv.callback_answers, ensure_ascii=False, default=str)
    assert "举报 #" in to_staff and "tips" in database  # the haystacks are real

    leaks = []
    for p in people:
        for key in ("id", "first_name", "last_name", "username", "phone"):
            needle = str(p[key])
            for name, haystack in (("database", database), ("logs", logs), ("staff messages", to_staff)):
                if needle in haystack:
                    leaks.append(f"{key} {needle} in {name}")
    assert not leaks, leaks[:10]
    # and no code in clear either
    for code in codes:
        assert code.replace(" ", "") not in database and code not in database
