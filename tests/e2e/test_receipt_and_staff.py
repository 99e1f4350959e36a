"""Receipt codes, follow-up information, staff joining, the Acknowledge button."""

from __future__ import annotations

from sqlalchemy import select

from storage.models import Staff, TeamChat, Tip
from tests.e2e.conftest import Harness, plain

CITIZEN = 5_560_001
LEAD1 = 7_100_001
MEMBER1 = 7_100_002
LEAD2 = 7_100_003
STRANGER = 9_999_001
GROUP1 = -1_001_234_000_001


async def test_receipt_flow_with_added_information(harness: Harness) -> None:
    h = harness
    srv = h.server
    lead = srv.user(LEAD1, "Lead One")
    h.add_staff(lead, "lead", 1)
    citizen = srv.user(CITIZEN, "Tipster")
    code = await h.report(citizen)
    card = await h.expect(LEAD1, "举报 #1")

    timeline = await h.say(citizen, code.replace(" ", ""), expect="举报 #1")
    assert "已收到" in plain(timeline) and "已交办第一督查组" in plain(timeline)
    assert timeline["protect_content"] is True
    prompt = await h.press(citizen, timeline, "补充", expect="发送给督查组")
    await h.say(citizen, "补充：当天是第二次发生。", expect="文字 1 条")
    srv.push_message(citizen, document="scan.pdf", caption="考勤表")
    await h.expect(CITIZEN, "证据 1 个")
    last = srv.sent_to(CITIZEN)[-1]
    await h.press(citizen, last, "发送给督查组", expect="已送达督查组")
    assert prompt is not None

    note = await h.expect(LEAD1, "举报人补充了情况")
    assert "当天是第二次发生" in plain(note) and note["reply_to_message_id"] == card["message_id"]
    doc = await srv.wait_for(lambda: next((r for r in srv.sent_to(LEAD1) if r["method"] == "sendDocument"), None))
    assert "考勤表" in plain(doc)


async def test_wrong_receipt_codes_are_refused_and_slowed_down(harness: Harness) -> None:
    h = harness
    citizen = h.server.user(CITIZEN + 1, "Guesser")
    free = h.config.intake.receipt_free_attempts
    for i in range(free - 1):
        reply = await h.say(citizen, f"0000 0000 0000 000{i}", expect="查询码不正确")
        assert "秒后再试" not in plain(reply)
    reply = await h.say(citizen, "0000 0000 0000 0009", expect="查询码不正确")
    assert "秒后再试" in plain(reply)
    # the next try inside the wait is not even checked
    await h.say(citizen, "1111 1111 1111 1111", expect="尝试次数过多")


async def test_join_with_invite_code_in_chat(harness: Harness) -> None:
    h = harness
    srv = h.server
    user = srv.user(LEAD2, "Lead Two", username="lead_two")
    await h.say(user, "/join", expect="用法")
    await h.say(user, "/join AAAA-BBBB-CCCC", expect="邀请码无效")
    code = h.invite(role="lead", team=2)
    reply = await h.say(user, f"/join {code.lower()}", expect="欢迎")
    assert "第二督查组组长" in plain(reply)
    await h.say(user, f"/join {code}", expect="邀请码无效")  # one-time
    with h.deps.sessions.begin() as session:
        staff = session.scalar(select(Staff).where(Staff.telegram_user_id == LEAD2))
        assert staff is not None and (staff.role, staff.team_number) == ("lead", 2)
        assert staff.display_name == "Lead Two"  # staff are named; the journal kept it for the join


async def test_group_binding_delivers_waiting_tips_and_members_acknowledge_there(harness: Harness) -> None:
    h = harness
    srv = h.server
    citizen = srv.user(CITIZEN + 2, "Someone")
    await h.report(citizen)  # team 1 has no group and no lead yet: the tip waits
    group = srv.group(GROUP1, "第一督查组工作群")
    member = srv.user(MEMBER1, "Member One")
    person_code = h.invite(role="member", team=1)
    srv.push_message(member, f"/join {person_code}", chat=group)
    await h.expect(GROUP1, "已作废")  # a personal code seen by a whole group is burned
    srv.push_message(member, f"/join {person_code}")
    await h.expect(MEMBER1, "无效")  # not even its owner can use it now
    code = h.invite(group=True, team=1)
    srv.push_message(member, f"/join {code}", chat=group)
    bound = await h.expect(GROUP1, "已绑定")
    assert "1 条待交办" in plain(bound)
    card = await h.expect(GROUP1, "举报 #1")
    with h.deps.sessions.begin() as session:
        assert session.scalar(select(TeamChat.team_number).where(TeamChat.chat_id == GROUP1)) == 1

    # a stranger, then a member of another team, then the right member
    stranger = srv.user(STRANGER, "Stranger")
    other = srv.user(LEAD2, "Other Lead")
    h.add_staff(other, "lead", 2)
    h.add_staff(member, "member", 1)
    n = len(srv.callback_answers)
    srv.press(stranger, card, "签收")
    assert "只有登记的督查组成员" in (await h.alert_for(n))["text"]
    n = len(srv.callback_answers)
    srv.press(other, card, "签收")
    assert "第一督查组" in (await h.alert_for(n))["text"]
    with h.deps.sessions.begin() as session:
        assert session.scalar(select(Tip.state)) == "routed"
    n = len(srv.callback_answers)
    srv.press(member, card, "签收")
    assert "已签收" in (await h.alert_for(n))["text"]
    # a double press (the old card, before the edit lands) changes nothing and says so
    n = len(srv.callback_answers)
    srv.push_callback(member, card, card["reply_markup"]["inline_keyboard"][0][0]["callback_data"])
    assert "无需重复" in (await h.alert_for(n))["text"]
    with h.deps.sessions.begin() as session:
        tip = session.scalar(select(Tip))
        assert tip is not None and tip.state == "acknowledged"


async def test_forged_ack_button_is_refused_and_nothing_changes(harness: Harness) -> None:
    h = harness
    srv = h.server
    lead = srv.user(LEAD1, "Lead One")
    h.add_staff(lead, "lead", 1)
    await h.report(srv.user(CITIZEN + 3, "X"))
    card = await h.expect(LEAD1, "举报 #1")
    await h.report(srv.user(CITIZEN + 4, "Y"))
    await h.expect(LEAD1, "举报 #2")  # both tips exist: the forgeries below aim at real ones
    n = len(srv.callback_answers)
    srv.push_callback(lead, card, "ack:1")  # right shape, no signature
    assert "无效" in (await h.alert_for(n))["text"]
    genuine = card["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    action, sep, signature = genuine.rpartition("~")
    assert sep and action == "ack:1"
    wrong = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    for forged in (f"ack:1~{wrong}",  # the existing tip, a wrong signature
                   genuine.replace("ack:1", "ack:2")):  # tip 1's signature on the existing tip 2
        n = len(srv.callback_answers)
        srv.push_callback(lead, card, forged)
        assert "无效" in (await h.alert_for(n))["text"], forged
    with h.deps.sessions.begin() as session:
        assert list(session.scalars(select(Tip.state).order_by(Tip.id))) == ["routed", "routed"]


async def test_help_shows_staff_their_own_page(harness: Harness) -> None:
    h = harness
    lead = h.server.user(LEAD1, "Lead One")
    h.add_staff(lead, "lead", 1)
    await h.say(lead, "/help", expect="怎么用")
    page = await h.expect(LEAD1, "工作人员")
    assert "第一督查组组长" in plain(page)
    citizen = h.server.user(CITIZEN + 9, "Citizen")
    await h.say(citizen, "/help", expect="怎么用")
    await h.say(citizen, "/cancel", expect="没有需要取消")
    assert not any("工作人员（" in plain(r) for r in h.server.sent_to(CITIZEN + 9))
