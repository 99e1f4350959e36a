"""Working a case inside Telegram: deadlines, reminders, escalation, questions to the
tipster, reassignment, outcomes and the penalty ladder. Time travels with the clock."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from storage.models import Breach, DueStep, NotifyContact, OutboxMessage, RequiredAction, Tip
from tests.e2e.conftest import Harness, plain

CITIZEN = 5_590_001
LEAD1 = 7_500_001
MEMBER1 = 7_500_002
LEAD2 = 7_500_003
OFFICE = 7_500_009
STRANGER = 9_500_001


def count(srv, chat: int, text: str) -> int:  # type: ignore[no-untyped-def]
    return sum(text in plain(r) for r in srv.sent_to(chat))


async def _setup(h: Harness) -> tuple[dict, dict, dict]:
    srv = h.server
    lead, office = srv.user(LEAD1, "Lead Zhao"), srv.user(OFFICE, "Office Qian")
    h.add_staff(lead, "lead", 1)
    h.add_staff(office, "office", None)
    citizen = srv.user(CITIZEN, "Tipster")
    return lead, office, citizen


async def test_unacknowledged_tip_is_reminded_then_escalated_once_across_a_restart(harness: Harness) -> None:
    h = harness
    srv = h.server
    lead, office, citizen = await _setup(h)
    await h.report(citizen)
    await h.expect(LEAD1, "举报 #1")

    h.clock.advance(hours=3, minutes=1)  # one hour before the 4 h acknowledgement deadline
    await h.expect(LEAD1, "提醒：举报 #1")
    # Crash once the reminder is recorded as sent (a crash between Telegram's answer and
    # that commit would send it again at the restart: the outbox's one duplicate window).
    await srv.wait_for(lambda: not _in_flight(h) or None)
    await h.crash()  # the bot is down when the deadline passes
    h.clock.advance(hours=1)
    await h.start()
    escalation = await h.expect(OFFICE, "督办：举报 #1")
    assert "第一督查组未在" in plain(escalation)
    labels = [b["text"] for row in escalation["reply_markup"]["inline_keyboard"] for b in row]
    assert labels == ["↪ 改派", "⏳ 延期"]
    await h.restart()
    h.clock.advance(minutes=5)
    await srv.wait_for(lambda: _steps_done(h) >= 2)
    assert count(srv, LEAD1, "提醒：举报 #1") == 1
    assert count(srv, OFFICE, "督办：举报 #1") == 1


def _in_flight(h: Harness) -> int:
    with h.deps.sessions.begin() as session:
        return len(session.scalars(select(OutboxMessage).where(OutboxMessage.status == "sending")).all())


def _steps_done(h: Harness) -> int:
    with h.deps.sessions.begin() as session:
        return len(session.scalars(select(DueStep).where(DueStep.done_at.is_not(None))).all())


async def test_acknowledged_tip_is_not_escalated_for_acknowledgement(harness: Harness) -> None:
    h = harness
    srv = h.server
    lead, office, citizen = await _setup(h)
    await h.report(citizen)
    card = await h.expect(LEAD1, "举报 #1")
    srv.press(lead, card, "签收")
    await srv.wait_for(lambda: _ack_steps_cancelled(h))
    h.clock.advance(hours=5)
    await srv.wait_for(lambda: _due_done_or_cancelled(h, "ack"))
    assert count(srv, OFFICE, "督办") == 0 and count(srv, LEAD1, "提醒") == 0


def _ack_steps_cancelled(h: Harness) -> bool:
    with h.deps.sessions.begin() as session:
        rows = session.scalars(select(DueStep).where(DueStep.deadline_kind == "ack")).all()
        return bool(rows) and all(r.cancelled_at is not None for r in rows)


def _due_done_or_cancelled(h: Harness, kind: str) -> bool:
    with h.deps.sessions.begin() as session:
        rows = session.scalars(select(DueStep).where(DueStep.deadline_kind == kind)).all()
        return all(r.cancelled_at is not None or r.done_at is not None for r in rows)


async def test_office_extends_a_deadline_from_the_escalation(harness: Harness) -> None:
    h = harness
    srv = h.server
    lead, office, citizen = await _setup(h)
    await h.report(citizen)
    h.clock.advance(hours=4, minutes=1)
    escalation = await h.expect(OFFICE, "督办：举报 #1")
    # a team lead may not extend
    n = len(srv.callback_answers)
    srv.press(lead, escalation, "延期")
    assert "只有县问责办" in (await h.alert_for(n))["text"]
    srv.press(office, escalation, "延期")
    hours = await h.expect(OFFICE, "延长多少")
    await h.press(office, hours, "+24 小时", expect="理由")
    await h.say(office, "组长出差，明天上午处理", expect="期限已延长")
    note = await h.expect(LEAD1, "签收期限已延长")
    assert "组长出差" in plain(note)
    with h.deps.sessions.begin() as session:
        tip = session.scalar(select(Tip))
        assert tip is not None and tip.ack_due_at - h.clock.now() > timedelta(hours=23)
    h.clock.advance(hours=24)
    await h.expect(OFFICE, "督办：举报 #1")  # the new deadline escalates again, once
    await srv.wait_for(lambda: _due_done_or_cancelled(h, "ack"))
    assert count(srv, OFFICE, "督办：举报 #1") == 2


async def test_question_to_the_tipster_and_the_answer_without_identity(harness: Harness) -> None:
    h = harness
    srv = h.server
    lead, office, citizen = await _setup(h)
    # the tipster opts in to news at the review
    menu = await h.say(citizen, "/start", expect="查询码")
    cats = await h.press(citizen, menu, "📝", expect="1")
    units = await h.press(citizen, cats, "迟到早退脱岗", expect="2")
    await h.press(citizen, units, "定昌镇", expect="3")
    await h.say(citizen, "周一上午", expect="4")
    ev = await h.say(citizen, "便民大厅九点还没有人上班，电话也没人接。", expect="5")
    await h.press(citizen, ev, "跳过", expect="核对")
    review = await h.expect_button(CITIZEN, "通知我")
    await h.press(citizen, review, "通知我", expect="核对")
    review = await h.expect_button(CITIZEN, "通知我：开")
    receipt = await h.press(citizen, review, "提交", expect="查询码")
    code = plain(receipt).split("您的查询码：")[1].split()[0:4]
    code = " ".join(code)
    with h.deps.sessions.begin() as session:
        contact = session.scalar(select(NotifyContact))
        assert contact is not None and str(CITIZEN) not in contact.chat_enc + contact.token

    card = await h.expect(LEAD1, "举报 #1")
    srv.press(lead, card, "签收")
    await h.expect(CITIZEN, "有新进展")  # news of the acknowledgement, nothing more
    card = await srv.wait_for(lambda: "询问举报人" in str(srv.message(LEAD1, card["message_id"])["reply_markup"])
                              and srv.message(LEAD1, card["message_id"]))
    # a stranger cannot ask
    n = len(srv.callback_answers)
    srv.press(srv.user(STRANGER, "S"), card, "询问举报人")
    assert "只有登记的" in (await h.alert_for(n))["text"]
    srv.press(lead, card, "询问举报人")
    await h.expect(LEAD1, "请输入要问举报人的问题")
    await h.say(lead, "请问您看到的是哪个窗口？", expect="问题已记录")
    await h.expect(LEAD1, "向举报人提问")
    await h.expect(CITIZEN, "有新进展")

    timeline = await h.say(citizen, code, expect="督查组的问题")
    assert "哪个窗口" in plain(timeline)
    await h.press(citizen, timeline, "回答", expect="回答")
    await h.say(citizen, "是3号窗口，不动产登记。", expect="文字 1 条")
    last = await h.expect_button(CITIZEN, "发送给督查组")
    await h.press(citizen, last, "发送给督查组", expect="已送达")
    answer = await h.expect(LEAD1, "举报人回答了问题")
    assert "3号窗口" in plain(answer) and "哪个窗口" in plain(answer)
    assert answer["reply_to_message_id"] == card["message_id"]
    assert "Tipster" not in str(srv.sent_to(LEAD1)) and str(CITIZEN) not in str(srv.sent_to(LEAD1))


async def test_reassign_by_the_lead_moves_the_card_to_the_new_team(harness: Harness) -> None:
    h = harness
    srv = h.server
    lead, office, citizen = await _setup(h)
    lead2 = srv.user(LEAD2, "Lead Sun")
    h.add_staff(lead2, "lead", 2)
    member = srv.user(MEMBER1, "Member Li")
    h.add_staff(member, "member", 1)
    await h.report(citizen)
    card = await h.expect(LEAD1, "举报 #1")
    n = len(srv.callback_answers)
    srv.press(member, card, "改派")  # a member is not the lead
    assert "组长" in (await h.alert_for(n))["text"]
    srv.press(lead, card, "改派")
    teams = await h.expect(LEAD1, "改派给哪个督查组")
    await h.press(lead, teams, "第二督查组", expect="理由")
    await h.say(lead, "该单位由第二组负责", expect="已改派给第二督查组")
    new_card = await h.expect(LEAD2, "举报 #1")
    assert "reassigned from team 1" in plain(new_card)
    old = await srv.wait_for(lambda: "改由" in plain(srv.message(LEAD1, card["message_id"])) or
                             not srv.message(LEAD1, card["message_id"]).get("reply_markup") and
                             srv.message(LEAD1, card["message_id"]))
    assert not (old.get("reply_markup") or {}).get("inline_keyboard")
    # the old card is stale now: its button refuses and changes nothing
    n = len(srv.callback_answers)
    srv.push_callback(lead, card, card["reply_markup"]["inline_keyboard"][0][0]["callback_data"])  # 签收
    assert "第二督查组" in (await h.alert_for(n))["text"]
    with h.deps.sessions.begin() as session:
        tip = session.scalar(select(Tip))
        assert tip is not None and (tip.team_number, tip.state) == (2, "routed")


async def _verify(h: Harness, lead: dict, card: dict, person: str = "张某", post: str = "窗口科员",
                  attach: bool = False) -> None:
    results = await h.open_outcome(lead, card)
    units = await h.press(lead, results, "属实", expect="所在单位")
    await h.press(lead, units, "定昌镇", expect="姓名")
    await h.say(lead, person, expect="职务")
    breach = await h.say(lead, post, expect="违纪类别")
    await h.press(lead, breach, "迟到早退脱岗", expect="核查情况")
    files = await h.say(lead, "经调取考勤记录，情况属实。", expect="如有附件")
    if attach:
        h.server.push_message(lead, document="考勤记录.pdf")
        files = await h.expect(LEAD1, "已收到附件 1 个")
    confirm = await h.press(lead, files, "完成", expect="请核对")
    await h.press(lead, confirm, "确认", expect="已办结")


async def test_third_verified_breach_refers_the_person_and_tells_the_office(harness: Harness) -> None:
    h = harness
    srv = h.server
    lead, office, citizen = await _setup(h)
    for i in range(1, 4):
        code = await h.report(citizen, text=f"第{i}次：工作时间不在岗，电话无人接听。")
        card = await h.expect(LEAD1, f"举报 #{i}")
        await _verify(h, lead, card)
        notice = await h.expect(OFFICE, f"举报 #{i} 查实")
        assert f"本期第 {i} 次违纪" in plain(notice)
    assert "移送县纪委" in plain(notice) and "问责" in plain(notice)
    timeline = await h.say(citizen, code, expect="已办结")
    assert "举报属实" in plain(timeline) and "张某" not in plain(timeline)
    with h.deps.sessions.begin() as session:
        breaches = session.scalars(select(Breach).order_by(Breach.id)).all()
        assert [(b.breach_number, b.referral, b.leader_accountable) for b in breaches] == [
            (1, False, False), (2, False, False), (3, True, True)]
        kinds = sorted(a.kind for a in session.scalars(select(RequiredAction).where(
            RequiredAction.breach_id == breaches[2].id)))
        assert kinds == ["discipline_referral", "leader_accountability", "rectification_report", "self_criticism"]
    # the office marks the self-criticism received; pressing again says so
    received = next(b["callback_data"] for row in notice["reply_markup"]["inline_keyboard"] for b in row
                    if "书面检查" in b["text"])
    n = len(srv.callback_answers)
    srv.push_callback(office, notice, received)
    assert "已登记" in (await h.alert_for(n))["text"]
    left = await srv.wait_for(lambda: len(srv.message(OFFICE, notice["message_id"])["reply_markup"]
                                          ["inline_keyboard"]) == 1 and srv.message(OFFICE, notice["message_id"]))
    assert "整改报告" in str(left["reply_markup"])  # the other requirement's button stays
    n = len(srv.callback_answers)
    srv.push_callback(office, notice, received)  # pressed again from an old copy
    assert "无需重复" in (await h.alert_for(n))["text"]
    # a closed case refuses further outcomes (a press on an old copy of the card)
    n = len(srv.callback_answers)
    srv.push_callback(lead, card, h.deps.keyring.sign(f"out:{3}"))
    assert "不能这样操作" in (await h.alert_for(n))["text"]


async def test_overdue_rectification_report_is_escalated_to_the_office(harness: Harness) -> None:
    h = harness
    lead, office, citizen = await _setup(h)
    await h.report(citizen)
    card = await h.expect(LEAD1, "举报 #1")
    await _verify(h, lead, card, attach=True)
    await h.expect(OFFICE, "举报 #1 查实")
    doc = await h.server.wait_for(lambda: next((r for r in h.server.sent_to(LEAD1)
                                                if r["method"] == "sendDocument"), None))
    assert "举报 #1" in plain(doc)  # the lead's attachment reached the card's thread
    h.clock.advance(days=6, minutes=1)
    await h.expect(OFFICE, "提醒")
    h.clock.advance(days=1)
    overdue = await h.expect(OFFICE, "逾期")
    assert "张某" in plain(overdue)


async def test_transferred_outcome_tells_the_tipster_where(harness: Harness) -> None:
    h = harness
    srv = h.server
    lead, office, citizen = await _setup(h)
    code = await h.report(citizen)
    card = await h.expect(LEAD1, "举报 #1")
    results = await h.open_outcome(lead, card)
    await h.press(lead, results, "移交", expect="移交给哪个部门")
    await h.say(lead, "县市场监管局", expect="核查情况")
    files = await h.say(lead, "属于市场监管事项。", expect="如有附件")
    confirm = await h.press(lead, files, "完成", expect="请核对")
    await h.press(lead, confirm, "确认", expect="已办结")
    closed = await srv.wait_for(lambda: "已办结" in plain(srv.message(LEAD1, card["message_id"]))
                                and srv.message(LEAD1, card["message_id"]))
    assert not (closed.get("reply_markup") or {}).get("inline_keyboard")
    timeline = await h.say(citizen, code, expect="已办结")
    assert "已移交 县市场监管局" in plain(timeline)
    assert not [b for row in timeline["reply_markup"]["inline_keyboard"] for b in row if "补充" in b["text"]]
    with h.deps.sessions.begin() as session:
        assert session.scalar(select(Breach)) is None  # only verified breaches climb the ladder
