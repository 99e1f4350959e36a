"""The receipt code is delivered, or re-delivered, or the office knows it never was; a
submitted tip is never answered with "expired, start again"."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import threading
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from bot.services import audit, receipts
from storage.models import AuditEntry, PendingReceipt, Tip
from tests.e2e.conftest import Harness, plain
from tests.fakebot import ApiError

CITIZEN = 5_620_001
OFFICE = 7_620_001
CODE = re.compile(r"\d{4} \d{4} \d{4} \d{4}")


async def _review(h: Harness, user: dict[str, Any]) -> dict[str, Any]:
    menu = await h.say(user, "/start", expect="查询码")
    cats = await h.press(user, menu, "📝", expect="1")
    units = await h.press(user, cats, "迟到早退脱岗", expect="2")
    await h.press(user, units, "定昌镇", expect="3")
    await h.say(user, "周一上午，便民大厅", expect="4")
    ev = await h.say(user, "便民大厅九点还没有人上班，电话也没人接。", expect="5")
    await h.press(user, ev, "跳过", expect="核对")
    return await h.expect_button(user["id"], "提交")


def _submit_data(review: dict[str, Any]) -> str:
    return next(b["callback_data"] for row in review["reply_markup"]["inline_keyboard"] for b in row
                if "提交" in b["text"])


def _fail_sends_to(h: Harness, chat_id: int, status: int = 502) -> dict[str, Any]:
    """sendMessage to `chat_id` fails with `status` until the returned switch is cleared."""
    srv = h.server
    original = srv._methods["sendmessage"][1]
    switch = {"on": True, "calls": 0}

    def handler(params: dict, files: dict) -> Any:
        if switch["on"] and str(params.get("chat_id")) == str(chat_id):
            switch["calls"] += 1
            raise ApiError(status, "Bad Gateway" if status == 502 else "Forbidden: bot was blocked by the user")
        return original(params, files)

    srv.register_method("sendMessage", handler)
    return switch


def _pending(h: Harness) -> list[PendingReceipt]:
    with h.deps.sessions.begin() as session:
        rows = list(session.scalars(select(PendingReceipt)))
        session.expunge_all()
        return rows


async def test_a_receipt_whose_send_failed_is_sent_again_and_then_erased(harness: Harness) -> None:
    h, srv = harness, harness.server
    user = srv.user(CITIZEN, "A")
    review = await _review(h, user)
    switch = _fail_sends_to(h, CITIZEN)
    srv.press(user, review, "提交")
    await srv.wait_for(lambda: _pending(h) and _pending(h)[0].attempts >= 1)
    [row] = _pending(h)
    assert str(CITIZEN) not in row.sealed  # sealed, never in clear
    with h.deps.sessions.begin() as session:
        assert session.scalar(select(func.count(Tip.id))) == 1  # committed before the tipster hears of it
    # When it was made names the tip's submission: kept to the minute.
    assert row.created_at.second == 0 and row.created_at.microsecond == 0
    switch["on"] = False
    h.clock.advance(minutes=1)  # the next try is due
    receipt = await h.expect(CITIZEN, "您的查询码")
    assert receipt["protect_content"] is True and CODE.search(plain(receipt))
    await srv.wait_for(lambda: not _pending(h))  # delivered: the code and the chat are erased
    # a second press of Submit answers that the tip is in, and stores nothing
    srv.push_callback(user, review, _submit_data(review))
    await h.expect(CITIZEN, "已经提交（举报 #1）")
    assert not any("已过期" in plain(r) for r in srv.sent_to(CITIZEN))
    with h.deps.sessions.begin() as session:
        assert session.scalar(select(func.count(Tip.id))) == 1


async def test_a_second_press_before_delivery_gets_the_receipt(harness: Harness) -> None:
    h, srv = harness, harness.server
    user = srv.user(CITIZEN + 1, "B")
    review = await _review(h, user)
    switch = _fail_sends_to(h, CITIZEN + 1)
    srv.press(user, review, "提交")
    await srv.wait_for(lambda: _pending(h) and _pending(h)[0].attempts >= 1)
    switch["on"] = False
    srv.push_callback(user, review, _submit_data(review))  # the tipster, seeing nothing, presses again
    receipt = await h.expect(CITIZEN + 1, "您的查询码")
    assert CODE.search(plain(receipt))
    await srv.wait_for(lambda: not _pending(h))
    await asyncio.sleep(0.5)
    assert sum("您的查询码" in plain(r) for r in srv.sent_to(CITIZEN + 1)) == 1
    assert not any("已过期" in plain(r) for r in srv.sent_to(CITIZEN + 1))
    with h.deps.sessions.begin() as session:
        assert session.scalar(select(func.count(Tip.id))) == 1


async def test_the_submit_handled_again_after_a_crash_answers_with_the_receipt(harness: Harness) -> None:
    h, srv = harness, harness.server
    user = srv.user(CITIZEN + 2, "C")
    review = await _review(h, user)
    gate, hanging = asyncio.Event(), []
    original = srv._methods["sendmessage"][1]

    async def hang(params: dict, files: dict) -> Any:
        if str(params.get("chat_id")) == str(CITIZEN + 2) and "查询码" in (params.get("text") or ""):
            hanging.append(1)
            await gate.wait()
            raise ApiError(502, "Bad Gateway")
        with srv._lock:
            return original(params, files)

    srv.register_method("sendMessage", hang)
    srv.press(user, review, "提交")
    await srv.wait_for(lambda: hanging)
    await h.crash()  # the tip is committed, its receipt in flight: the process dies
    gate.set()
    srv.register_method("sendMessage", original)
    await h.start()  # the journal hands the Submit press to the new process
    receipt = await h.expect(CITIZEN + 2, "您的查询码")
    assert CODE.search(plain(receipt))
    assert not any("已过期" in plain(r) for r in srv.sent_to(CITIZEN + 2))
    await srv.wait_for(lambda: not _pending(h))
    with h.deps.sessions.begin() as session:
        assert session.scalar(select(func.count(Tip.id))) == 1


async def test_a_blocked_chat_marks_the_tip_and_tells_the_office(harness: Harness) -> None:
    h, srv = harness, harness.server
    office = srv.user(OFFICE, "Office")
    h.add_staff(office, "office", None)
    user = srv.user(CITIZEN + 3, "D")
    review = await _review(h, user)
    _fail_sends_to(h, CITIZEN + 3, status=403)
    srv.press(user, review, "提交")
    notice = await h.expect(OFFICE, "查询码未能送达举报人")
    assert "举报 #1" in plain(notice) and "D" not in plain(notice) and str(CITIZEN + 3) not in plain(notice)
    assert not _pending(h)
    with h.deps.sessions.begin() as session:
        tip = session.get(Tip, 1)
        assert tip is not None and tip.receipt_undelivered
        assert [e.action for e in audit.trail(session, 1)] == ["receipt_undelivered"]


async def test_a_receipt_that_keeps_failing_is_given_up_after_the_bound(harness: Harness) -> None:
    h, srv = harness, harness.server
    office = srv.user(OFFICE + 1, "Office")
    h.add_staff(office, "office", None)
    user = srv.user(CITIZEN + 4, "E")
    review = await _review(h, user)
    switch = _fail_sends_to(h, CITIZEN + 4)
    srv.press(user, review, "提交")
    await srv.wait_for(lambda: _pending(h) and _pending(h)[0].attempts >= 1)
    h.clock.advance(hours=h.config.intake.receipt_delivery_hours - 1)
    await srv.wait_for(lambda: _pending(h) and _pending(h)[0].attempts >= 2)
    with h.deps.sessions.begin() as session:
        assert not session.get(Tip, 1).receipt_undelivered  # type: ignore[union-attr]
    h.clock.advance(hours=2)
    await h.expect(OFFICE + 1, "查询码未能送达举报人")
    assert not _pending(h) and switch["calls"] >= 3
    with h.deps.sessions.begin() as session:
        assert session.get(Tip, 1).receipt_undelivered  # type: ignore[union-attr]
        assert session.scalar(select(func.count(AuditEntry.id)).where(AuditEntry.action == "receipt_undelivered")) == 1


def _watch_threads(monkeypatch: pytest.MonkeyPatch, *names: str) -> dict[str, set[int]]:
    """The threads each of these receipt functions runs in, from now on."""
    seen: dict[str, set[int]] = {name: set() for name in names}
    for name in names:
        def watched(*args: Any, _name: str = name, _fn: Any = getattr(receipts, name), **kw: Any) -> Any:
            seen[_name].add(threading.get_ident())
            return _fn(*args, **kw)
        monkeypatch.setattr(receipts, name, watched)
    return seen


async def test_a_database_error_in_the_receipts_job_is_contained(harness: Harness, monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The job that sends failed receipts again does its database work in a worker thread; a
    database error there is logged in one line (no person's data) and the next run delivers."""
    caplog.set_level(logging.INFO)
    h, srv = harness, harness.server
    user = srv.user(CITIZEN + 5, "F")
    review = await _review(h, user)
    threads = _watch_threads(monkeypatch, "due", "take", "failed", "find_submitted")
    switch = _fail_sends_to(h, CITIZEN + 5)
    srv.press(user, review, "提交")
    await srv.wait_for(lambda: _pending(h) and _pending(h)[0].attempts >= 1)
    switch["on"] = False
    due, broken = receipts.due, {"left": 1}

    def failing_due(*args: Any, **kw: Any) -> list[int]:
        if broken["left"]:
            broken["left"] -= 1
            raise OperationalError("SELECT tip_id FROM pending_receipts", {}, sqlite3.OperationalError("disk I/O error"))
        return due(*args, **kw)

    monkeypatch.setattr(receipts, "due", failing_due)
    await srv.wait_for(lambda: broken["left"] == 0 or None)  # the job's run failed
    h.clock.advance(minutes=1)  # the next try is due
    receipt = await h.expect(CITIZEN + 5, "您的查询码")  # the job's next run
    code = CODE.search(plain(receipt))
    assert code is not None
    await srv.wait_for(lambda: not _pending(h))
    srv.push_callback(user, review, _submit_data(review))  # pressed again: "it is in"
    await h.expect(CITIZEN + 5, "已经提交（举报 #1）")
    loop_thread = threading.get_ident()
    assert all(threads.values()), threads  # each ran
    assert all(loop_thread not in seen for seen in threads.values()), threads  # none on the event loop
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("receipts: database unavailable (OperationalError") for line in lines), lines
    assert not [r for r in caplog.records if r.name == "tipline.errors"]  # no traceback through the error handler
    text = "\n".join(lines) + "".join(r.exc_text or "" for r in caplog.records)
    assert str(CITIZEN + 5) not in text and code.group(0) not in text
