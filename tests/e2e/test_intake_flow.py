"""A citizen reports a tip; the team receives the card; the lead acknowledges it."""

from __future__ import annotations

from tests.e2e.conftest import Harness, plain

CITIZEN = 5_550_001
LEAD = 7_000_001
GROUP = -1_001_000_000_001


async def test_full_tip_flow_with_evidence_and_acknowledgement(harness: Harness) -> None:
    srv = harness.server
    lead = srv.user(LEAD, "王组长", username="lead_wang")
    harness.add_staff(lead, "lead", 1)
    citizen = srv.user(CITIZEN, "Citizen", username="citizen_x")

    code = await harness.report(citizen, evidence=2)
    assert len(code) == 19

    card = await harness.expect(LEAD, "举报 #1")
    assert "窗口工作人员九点半还没有到岗" in plain(card)
    assert "第一督查组" in plain(card) and "rule dingchang" in plain(card)
    photos = await srv.wait_for(lambda: [r for r in srv.sent_to(LEAD) if r["method"] == "sendPhoto"][:2]
                                if len([r for r in srv.sent_to(LEAD) if r["method"] == "sendPhoto"]) >= 2 else None)
    assert all(p["reply_to_message_id"] == card["message_id"] for p in photos)
    assert "Citizen" not in str(srv.sent_to(LEAD)) and str(CITIZEN) not in str(srv.sent_to(LEAD))

    before = len(srv.callback_answers)
    srv.press(lead, card, "签收")
    answer = await harness.alert_for(before)
    assert "已签收" in answer["text"]
    edited = await srv.wait_for(lambda: "已由 王组长" in plain(srv.message(LEAD, card["message_id"]) or {})
                                and srv.message(LEAD, card["message_id"]))
    labels = [b["text"] for row in edited["reply_markup"]["inline_keyboard"] for b in row]
    assert labels == ["❓ 询问举报人", "↪ 改派", "🏁 录入结果"]  # no second acknowledgement

    # The tipster comes back with the receipt code and sees the acknowledgement.
    timeline = await harness.say(citizen, code, expect="督查组已签收")
    assert "已交办第一督查组" in plain(timeline)


async def test_command_menu_is_set_in_both_languages(harness: Harness) -> None:
    srv = harness.server
    await srv.wait_for(lambda: len(srv.calls_for("setMyCommands")) >= 2)
    assert [c["command"] for c in srv.commands()] == ["start", "cancel", "help"]
    assert srv.commands()[0]["description"] == "开始 / 举报"
    assert srv.commands(language_code="en")[0]["description"] == "Start / report a tip"
