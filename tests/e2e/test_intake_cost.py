"""What one step of a citizen's report costs: Bot API calls, parsed objects, statements.

Counted, not timed (bench/intake.py measures the speed): a pressed choice is answered
with one edit of its own message (the answer under the question, the buttons gone) and
the next step; the Bot API's answers, which nothing reads, are not built into objects;
a citizen's press reads no staff directory; and the tip's transaction runs off the
event loop, where it would hold up every other chat's update.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from telegram import Message

from tests.e2e.conftest import Harness, plain

CITIZEN = 5_560_001


def methods_to(h: Harness, since: int, chat_id: int) -> list[str]:
    """The Bot API methods called since `since` for this chat (or its button presses)."""
    out = []
    for call in h.server.calls[since:]:
        params = call["params"]
        if call["method"] == "answerCallbackQuery" or str(params.get("chat_id")) == str(chat_id):
            out.append(call["method"])
    return out


@contextmanager
def statements(h: Harness) -> Iterator[list[tuple[bool, str]]]:
    """Every statement run meanwhile: (run on the event loop's thread, its SQL)."""
    assert h.runtime is not None
    engine = h.runtime.engine
    loop_thread = threading.current_thread()
    seen: list[tuple[bool, str]] = []

    def record(_conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool) -> None:
        seen.append((threading.current_thread() is loop_thread, statement))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_a_chosen_step_is_one_edit_and_the_next_step(harness: Harness) -> None:
    h, srv = harness, harness.server
    citizen = srv.user(CITIZEN, "Citizen")
    menu = await h.say(citizen, "/start", expect="查询码")
    cats = await h.press(citizen, menu, "📝", expect="1")
    assert cats is not None

    mark = len(srv.calls)
    units = await h.press(citizen, cats, "迟到早退脱岗", expect="2")
    assert methods_to(h, mark, CITIZEN) == ["answerCallbackQuery", "editMessageText", "sendMessage"]
    # The citizen sees the choice under its question, and no buttons left to press again.
    shown = srv.message(CITIZEN, cats["message_id"])
    assert shown is not None and "reply_markup" not in shown
    assert plain(shown).startswith("第 1 步 / 共 5 步") and plain(shown).endswith("已选择：迟到早退脱岗")

    mark = len(srv.calls)
    await h.press(citizen, units, "定昌镇", expect="3")
    assert methods_to(h, mark, CITIZEN) == ["answerCallbackQuery", "editMessageText", "sendMessage"]
    shown = srv.message(CITIZEN, units["message_id"])  # type: ignore[index]
    assert shown is not None and "reply_markup" not in shown and plain(shown).endswith("已选择：定昌镇")
    assert not [r for r in srv.sent_to(CITIZEN) if "已选择" in plain(r)]  # no message of its own


async def test_answers_of_the_bot_api_are_not_parsed(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the incoming updates' messages become Message objects, not the API's answers."""
    h, srv = harness, harness.server
    built = []
    init = Message.__init__

    def counting(self: Message, *args: Any, **kwargs: Any) -> None:
        built.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(Message, "__init__", counting)
    citizen = srv.user(CITIZEN, "Citizen")
    menu = await h.say(citizen, "/start", expect="查询码")
    cats = await h.press(citizen, menu, "📝", expect="1")
    units = await h.press(citizen, cats, "迟到早退脱岗", expect="2")
    await h.press(citizen, units, "定昌镇", expect="3")
    await h.say(citizen, "周一上午九点，镇便民服务大厅", expect="4")
    ev = await h.say(citizen, "窗口无人，群众排队等了半小时。", expect="5")
    await h.press(citizen, ev, "跳过", expect="核对")
    sent = len(methods_to(h, 0, CITIZEN))
    assert sent >= 14  # answers, edits and messages: each returned a Message or True
    # 7 updates, each with one message (its own, or the pressed one): 7 objects, none for the answers
    assert len(built) == 7


async def test_a_citizen_press_reads_no_staff_and_the_tip_is_stored_off_the_loop(harness: Harness) -> None:
    h, srv = harness, harness.server
    citizen = srv.user(CITIZEN, "Citizen")
    menu = await h.say(citizen, "/start", expect="查询码")
    with statements(h) as seen:
        cats = await h.press(citizen, menu, "📝", expect="1")
    assert seen and not [sql for on_loop, sql in seen if on_loop and "directory_version" in sql]
    units = await h.press(citizen, cats, "迟到早退脱岗", expect="2")
    await h.press(citizen, units, "定昌镇", expect="3")
    await h.say(citizen, "周一上午九点，镇便民服务大厅", expect="4")
    ev = await h.say(citizen, "窗口无人，群众排队等了半小时。", expect="5")
    await h.press(citizen, ev, "跳过", expect="核对")
    review = await h.expect_button(CITIZEN, "提交")
    with statements(h) as seen:
        await h.press(citizen, review, "提交", expect="您的查询码")
        await srv.wait_for(lambda: any("DELETE FROM pending_receipts" in sql for _, sql in seen))
    stored = [on_loop for on_loop, sql in seen if sql.lstrip().upper().startswith("INSERT INTO TIPS")]
    assert stored == [False]  # stored once, in a worker thread
    erased = [on_loop for on_loop, sql in seen if sql.lstrip().upper().startswith("DELETE FROM PENDING_RECEIPTS")]
    assert erased == [False]  # the receipt, once sent, erased in a worker thread too


async def test_requests_are_form_encoded_without_a_multipart_writer(harness: Harness,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A request without files is form-encoded by tipline (bot/http.py): aiohttp, given a
    dict, would build a FormData and its multipart writer, with a fresh uuid4 boundary, for
    every request. The text arrives as it was, whatever its characters."""
    import aiohttp

    built = []
    form_init = aiohttp.FormData.__init__

    def counting(self: aiohttp.FormData, *args: Any, **kwargs: Any) -> None:
        built.append(1)
        form_init(self, *args, **kwargs)

    monkeypatch.setattr(aiohttp.FormData, "__init__", counting)
    h, srv = harness, harness.server
    citizen = srv.user(CITIZEN, "Citizen")
    menu = await h.say(citizen, "/start", expect="查询码")
    cats = await h.press(citizen, menu, "📝", expect="1")
    units = await h.press(citizen, cats, "迟到早退脱岗", expect="2")
    await h.press(citizen, units, "定昌镇", expect="3")
    place = "周一 9:00 & 10:00，便民大厅 a+b=c %20 <窗口>"
    await h.say(citizen, place, expect="4")
    ev = await h.say(citizen, "窗口无人，群众排队等了半小时。", expect="5")
    await h.press(citizen, ev, "跳过", expect="核对")
    review = await h.expect_button(CITIZEN, "提交")
    assert place in plain(review)  # through the form encoding and back, unchanged
    assert len(methods_to(h, 0, CITIZEN)) >= 14 and built == []
