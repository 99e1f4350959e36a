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
        code = await h.report(user, evidence=1 if i % 7 == 0 else 0,
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
    # the lead acknowledges one, so staff names flow too
    card = next(r for r in srv.sent_to(GROUP) if "举报 #1\n" in (r.get("plain_text") or "") + "\n")
    srv.press(lead, card, "签收")
    await srv.wait_for(lambda: srv.edits, timeout=10)

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
