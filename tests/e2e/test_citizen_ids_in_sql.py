"""A citizen's Telegram id is never a bound parameter of any SQL statement.

Every statement the engine runs is recorded (SQLAlchemy's before_cursor_execute) while
citizens take every path there is; none may carry a citizen's id. Staff ids do appear
(the recorder is real). With `database.echo` on, the log shows no parameters at all.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import event

from tests.e2e.citizen_paths import LEAD, OFFICIAL, flatten, other_paths, setup_staff
from tests.e2e.conftest import Harness

CITIZENS = [6_410_000_000 + i * 104_729 for i in range(4)]


def hits(value: Any, ids: set[int]) -> set[int]:
    found = set()
    for scalar in flatten(value):
        if isinstance(scalar, int) and not isinstance(scalar, bool) and scalar in ids:
            found.add(scalar)
        elif isinstance(scalar, (str, bytes)):
            text = scalar.decode("latin-1") if isinstance(scalar, bytes) else scalar
            found |= {i for i in ids if str(i) in text}
    return found


async def test_no_citizen_id_is_a_sql_parameter(echo_harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    h = echo_harness
    assert h.runtime is not None
    engine = h.runtime.engine
    recorded: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        recorded.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    staff = await setup_staff(h)
    srv = h.server
    citizens = [srv.user(uid, f"Citizen{n}", username=f"citizen_{n}") for n, uid in enumerate(CITIZENS)]
    codes = [await h.report(c, evidence=1, notify=True, text=f"第{n}号：工作日中午在饭店饮酒，持续两个小时。")
             for n, c in enumerate(citizens)]
    # The lead acknowledges the first tip and asks its tipster a question; the tipster answers.
    card = await h.expect(-1_001_300_000_001, "举报 #1")
    srv.press(staff["lead"], card, "签收")
    await srv.wait_for(lambda: "询问举报人" in str(srv.message(card["chat_id"], card["message_id"])["reply_markup"]))
    srv.press(staff["lead"], srv.message(card["chat_id"], card["message_id"]), "询问举报人")
    await h.expect(LEAD, "请输入要问举报人的问题")
    await h.say(staff["lead"], "请问具体是几点？", expect="问题已记录")
    timeline = await h.say(citizens[0], codes[0], expect="督查组的问题")
    await h.press(citizens[0], timeline, "回答", expect="回答")
    await h.say(citizens[0], "大约中午十二点半。", expect="文字 1 条")
    await h.press(citizens[0], await h.expect_button(citizens[0]["id"], "发送给督查组"), "发送给督查组",
                  expect="已送达")
    for n, citizen in enumerate(citizens):
        await other_paths(h, citizen, codes[n], fail_once=n == 0)
    # The official uses the same commands (their id is known: it may be used).
    await h.say(staff["official"], "/settings", expect="")
    await h.say(citizens[1], "/help", expect="")  # after the block updates of the others: all processed
    event.remove(engine, "before_cursor_execute", record)

    ids = set(CITIZENS)
    leaks = [(statement, parameters) for statement, parameters in recorded if hits(parameters, ids)]
    assert not leaks, leaks[:5]
    staff_ids = {LEAD, OFFICIAL}
    assert any(hits(p, staff_ids) for _, p in recorded), "the recorder saw no staff id: it is not recording"
    # Echo is on, and shows statements but never their parameters.
    assert "SELECT" in caplog.text and "parameters hidden" in caplog.text
    assert not [i for i in CITIZENS if str(i) in caplog.text]
