"""The accountability office enters a phone or mail tip in its private chat with the bot."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from bot.services import audit, followup
from storage.models import Evidence, Staff, Tip
from tests.e2e.conftest import Harness, plain

OFFICE = 7_300_001
LEAD1 = 7_300_002
LEAD2 = 7_300_003
STRANGER = 9_300_001


async def test_office_member_enters_a_phone_tip_and_the_team_gets_it(harness: Harness) -> None:
    h, srv = harness, harness.server
    office = srv.user(OFFICE, "Office Wu")
    lead = srv.user(LEAD1, "Lead One")
    h.add_staff(office, "office", None)
    h.add_staff(lead, "lead", 1)

    channel = await h.say(office, "/enter", expect="怎么收到的")
    assert "不要" in plain(channel) or "请勿" in plain(channel)  # the caller's identity is not to be typed
    cats = await h.press(office, channel, "举报电话", expect="举报类别")
    units = await h.press(office, cats, "迟到早退脱岗", expect="哪个单位")
    await h.press(office, units, "定昌镇", expect="时间和地点")
    await h.say(office, "来电称：3月2日上午9点，定昌镇便民服务大厅", expect="反映了什么情况")
    ev = await h.say(office, "来电人反映窗口工作人员九点半仍未到岗，群众排队很久。", expect="附件")
    srv.push_message(office, document="letter-scan.pdf", caption="来信扫描件")
    await h.expect(OFFICE, "已收到 1 个")
    ev = srv.sent_to(OFFICE)[-1]
    review = await h.press(office, ev, "完成", expect="请核对录入的电话举报")
    assert "举报电话" in plain(review) and "定昌镇" in plain(review) and "附件：1 个" in plain(review)
    submit = next(b["callback_data"] for row in review["reply_markup"]["inline_keyboard"] for b in row
                  if "提交" in b["text"])
    receipt = await h.press(office, review, "提交", expect="查询码")
    assert receipt is not None and receipt["protect_content"] is True
    assert "#1" in plain(receipt) and "第一督查组" in plain(receipt)
    code = re.search(r"\d{4} \d{4} \d{4} \d{4}", plain(receipt)).group(0)  # type: ignore[union-attr]

    card = await h.expect(LEAD1, "举报 #1")
    assert "（电话举报）" in plain(card) and "窗口工作人员九点半仍未到岗" in plain(card)
    doc = await srv.wait_for(lambda: next((r for r in srv.sent_to(LEAD1) if r["method"] == "sendDocument"), None))
    assert doc["reply_to_message_id"] == card["message_id"]
    assert "Office Wu" not in str(srv.sent_to(LEAD1))  # the card says nothing of who entered it

    digest = h.deps.keyring.receipt_hash(code.replace(" ", ""))
    with h.deps.sessions.begin() as session:
        tip = followup.find_tip(session, digest)
        assert tip is not None and (tip.id, tip.channel, tip.team_number, tip.category) == (1, "phone", 1, "absence")
        assert session.scalar(select(func.count(Evidence.id))) == 1
        office_id = session.scalar(select(Staff.id).where(Staff.telegram_user_id == OFFICE))
        entries = audit.trail(session, tip.id)
        assert [(e.staff_id, e.action, e.detail) for e in entries] == [(office_id, "entered", "bot; channel=phone")]

    # a second press of Submit enters nothing more
    srv.push_callback(office, review, submit)
    await h.expect(OFFICE, "已经提交为举报 #1")  # not "expired, start again"
    with h.deps.sessions.begin() as session:
        assert session.scalar(select(func.count(Tip.id))) == 1


async def test_a_mail_tip_in_english_with_edit_and_other_unit(harness: Harness) -> None:
    h, srv = harness, harness.server
    office = srv.user(OFFICE, "Office Wu", language_code="en")
    h.add_staff(office, "office", None, lang="en")
    channel = await h.say(office, "/enter", expect="how did the tip come in")
    assert "Do not type the caller's" in plain(channel)
    cats = await h.press(office, channel, "Mail", expect="Step 2 of 6")
    units = await h.press(office, cats, "Private use of an official car", expect="Step 3 of 6")
    await h.press(office, units, "Other", expect="unit's name")
    await h.say(office, "County Water Bureau", expect="Step 4 of 6")
    await h.say(office, "x" * (h.config.intake.place_max_chars + 1), expect="Too long")
    await h.say(office, "Letter of 3 March: weekend, county car park", expect="Step 5 of 6")
    await h.say(office, "short", expect="Too short")
    ev = await h.say(office, "The letter says an official car was used for a family trip on Sunday.",
                     expect="Step 6 of 6")
    review = await h.press(office, ev, "Skip", expect="Please check the mail tip")
    assert "County Water Bureau" in plain(review) and "Attachments: none" in plain(review)
    which = await h.press(office, review, "Edit", expect="change")
    again = await h.press(office, which, "Channel", expect="Step 1 of 6")
    review = await h.press(office, again, "Phone", expect="Please check the phone tip")
    receipt = await h.press(office, review, "Submit", expect="receipt code")
    assert receipt is not None and receipt["protect_content"] is True and "Inspection Team 7" in plain(receipt)
    with h.deps.sessions.begin() as session:
        tip = session.scalar(select(Tip))
        assert tip is not None and (tip.channel, tip.unit_key, tip.team_number) == ("phone", "other", 7)
        assert h.deps.keyring.decrypt(tip.unit_other_enc or "") == "County Water Bureau"


async def test_enter_is_refused_to_anyone_but_the_office(harness: Harness) -> None:
    h, srv = harness, harness.server
    lead = srv.user(LEAD2, "Lead Two")
    h.add_staff(lead, "lead", 2)
    stranger = srv.user(STRANGER, "Stranger")
    await h.say(lead, "/enter", expect="只有县问责办工作人员")
    await h.say(stranger, "/enter", expect="只有县问责办工作人员")
    # their messages still go to the citizens' flow, untouched
    await h.say(stranger, "hello", expect="请用下面的按钮")
    # /enter in a group is refused too
    group = srv.group(-1_001_300_000_001, "某群")
    srv.push_message(lead, "/enter", chat=group)
    await h.expect(-1_001_300_000_001, "私聊")
    with h.deps.sessions.begin() as session:
        assert session.scalar(select(func.count(Tip.id))) == 0


async def test_cancel_ends_the_entry_and_the_member_is_a_citizen_again(harness: Harness) -> None:
    h, srv = harness, harness.server
    office = srv.user(OFFICE, "Office Wu")
    h.add_staff(office, "office", None)
    channel = await h.say(office, "/enter", expect="怎么收到的")
    cats = await h.press(office, channel, "举报电话", expect="举报类别")
    await h.say(office, "随便打字", expect="请点击上面消息中的按钮")
    await h.say(office, "/cancel", expect="已取消录入")
    await h.say(office, "随便打字", expect="请用下面的按钮")  # the citizens' flow answers now
    srv.press(office, cats, "迟到早退脱岗")
    await h.expect(OFFICE, "按钮已过期")


async def test_start_leaves_an_entry_and_an_idle_entry_expires(harness: Harness) -> None:
    h, srv = harness, harness.server
    office = srv.user(OFFICE, "Office Wu")
    h.add_staff(office, "office", None)
    await h.say(office, "/enter", expect="怎么收到的")
    await h.say(office, "/start", expect="查询码")  # the citizens' menu, and the entry is gone
    await h.say(office, "随便打字", expect="请用下面的按钮")
    channel = await h.say(office, "/enter", expect="怎么收到的")
    h.clock.advance(minutes=h.config.intake.draft_ttl_minutes + 1)
    srv.press(office, channel, "举报电话")
    await h.expect(OFFICE, "超过 60 分钟未操作")
    await h.say(office, "随便打字", expect="请用下面的按钮")
    assert not any("按钮已过期" in plain(r) for r in srv.sent_to(OFFICE))  # told once, not twice
