"""Staff who leave: the office deactivates a lead from the bot (/staff); the lead's press
on a card sent before is refused, and the next tip's card goes to the other lead only."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.services import outbox, staff_admin
from storage.models import AuditEntry, OutboxMessage, Staff, Tip
from tests.e2e.conftest import Harness, plain

CITIZEN = 5_690_001
LEAD_A = 7_600_001
LEAD_B = 7_600_002
OFFICE = 7_600_009


def _staff_id(h: Harness, user_id: int) -> int:
    with h.deps.sessions.begin() as session:
        return session.scalar(select(Staff.id).where(Staff.telegram_user_id == user_id))  # type: ignore[return-value]


async def test_removed_lead_is_refused_on_an_old_card_and_gets_no_new_card(harness: Harness) -> None:
    h = harness
    srv = h.server
    lead_a, lead_b = srv.user(LEAD_A, "Lead Zhao"), srv.user(LEAD_B, "Lead Sun")
    office = srv.user(OFFICE, "Office Qian")
    h.add_staff(lead_a, "lead", 1)
    h.add_staff(lead_b, "lead", 1)
    h.add_staff(office, "office", None)
    citizen = srv.user(CITIZEN, "Tipster")

    await h.report(citizen)
    old_card = await h.expect(LEAD_A, "举报 #1")
    await h.expect(LEAD_B, "举报 #1")

    # The office removes lead A from the bot: /staff, the person, Deactivate.
    listing = await h.say(office, "/staff", expect="工作人员")
    assert listing is not None
    await h.press(office, listing, "Lead Zhao")  # the message turns into the member's page
    await srv.wait_for(lambda: "角色" in (srv.message(OFFICE, listing["message_id"]) or {}).get("text", ""),
                       5.0, message="the member's page")
    page = listing
    answers = len(srv.callback_answers)
    await h.press(office, page, "停用")
    done = await h.alert_for(answers)
    assert "已完成" in done["text"]
    # Back to the list; an office member cannot deactivate themselves.
    answers = len(srv.callback_answers)
    await h.press(office, page, "返回")
    await h.alert_for(answers)

    def text_now() -> str:
        return (srv.message(OFFICE, listing["message_id"]) or {}).get("text", "")

    await srv.wait_for(lambda: "工作人员" in text_now(), 5.0, message="the list again")
    await h.press(office, listing, "Office Qian")
    await srv.wait_for(lambda: text_now().startswith("Office Qian"), 5.0, message="the office member's own page")
    answers = len(srv.callback_answers)
    await h.press(office, listing, "停用")
    assert "不能对自己" in (await h.alert_for(answers))["text"]

    # Invite codes from the bot: listed by number, revoked with a button.
    lost_code = h.invite(role="member", team=2)
    answers = len(srv.callback_answers)
    await h.press(office, listing, "返回")
    await h.alert_for(answers)
    await srv.wait_for(lambda: "工作人员" in text_now(), 5.0, message="the list again")
    await h.press(office, listing, "邀请码")
    await srv.wait_for(lambda: "未使用的邀请码" in text_now(), 5.0, message="the invite codes")
    assert "组员，2组" in text_now() and lost_code not in text_now()
    answers = len(srv.callback_answers)
    await h.press(office, listing, "作废 #")
    assert "已作废" in (await h.alert_for(answers))["text"]
    mark = h.mark(LEAD_B + 1)
    srv.push_message(srv.user(LEAD_B + 1, "Finder"), f"/join {lost_code}")
    await h.expect(LEAD_B + 1, "无效", after=mark)

    # Lead A presses Acknowledge on the card sent before: refused, nothing changes.
    answers = len(srv.callback_answers)
    h.server.press(lead_a, old_card, "签收")
    refused = await h.alert_for(answers)
    assert "只有登记的督查组成员" in refused["text"]
    with h.deps.sessions.begin() as session:
        assert session.get(Tip, 1).state == "routed"  # type: ignore[union-attr]

    # The next tip goes to lead B only; nothing at all is queued for lead A.
    await h.report(citizen, text="另一件事：窗口人员中午饮酒后上班，态度很差。")
    await h.expect(LEAD_B, "举报 #2")
    with h.deps.sessions.begin() as session:
        to_a = session.scalars(select(OutboxMessage).where(OutboxMessage.chat_id == LEAD_A,
                                                           OutboxMessage.tip_id == 2)).all()
        assert to_a == []
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "staff_deactivated")).one()
        assert entry.staff_id == _staff_id(h, OFFICE)  # who did it
        assert "Lead Zhao" in (entry.detail or "")
    assert not any("举报 #2" in plain(r) for r in srv.sent_to(LEAD_A))


async def test_deactivation_gives_up_what_is_queued_and_ends_a_guided_flow(harness: Harness) -> None:
    h = harness
    srv = h.server
    lead = srv.user(LEAD_A, "Lead Zhao")
    h.add_staff(lead, "lead", 1)
    citizen = srv.user(CITIZEN, "Tipster")
    await h.report(citizen)
    card = await h.expect(LEAD_A, "举报 #1")
    answers = len(srv.callback_answers)
    srv.press(lead, card, "签收")
    await h.alert_for(answers)
    card = await srv.wait_for(lambda: "询问举报人" in str(srv.message(LEAD_A, card["message_id"])["reply_markup"])
                              and srv.message(LEAD_A, card["message_id"]))
    answers = len(srv.callback_answers)
    await h.press(lead, card, "录入结果")  # the guided flow begins
    choice = await h.expect(LEAD_A, "的办理结果")
    await h.alert_for(answers)  # that press is answered

    # Deactivated from the shell (another process in real life: only the database changes,
    # so the flow this process keeps in memory is not touched: the check at its next step is).
    sid = _staff_id(h, LEAD_A)
    flows = dict(h.deps.staff_flows)
    assert LEAD_A in flows
    with h.deps.sessions.begin() as session:
        # A message queued for the lead but not due yet is given up with the deactivation.
        row = outbox.enqueue(session, h.deps.keyring, h.deps.clock.now(), dedupe_key="test:queued", chat_id=LEAD_A,
                             method="send_message", payload={"text": "queued before"}, purpose="team_note")
        row.next_attempt_at = h.deps.clock.now() + timedelta(days=1)
    with h.deps.sessions.begin() as session:
        result = staff_admin.deactivate(session, h.deps, sid, staff_admin.Actor(None, "root"), h.deps.clock.now())
        assert result.status is staff_admin.Change.DONE and result.cancelled == 1
    h.deps.staff_flows.update(flows)
    mark = h.mark(LEAD_A)
    answers = len(srv.callback_answers)
    srv.press(lead, choice, "属实")  # the flow's next button: refused, the flow is over
    assert "已过期" in (await h.alert_for(answers))["text"]
    srv.push_message(lead, "/help")  # something to wait for: whatever came before it is there
    await srv.wait_for(lambda: len(srv.sent_to(LEAD_A)) > mark, 5.0, message="an answer")
    assert not any("所在单位" in plain(r) for r in srv.sent_to(LEAD_A)[mark:])
    with h.deps.sessions.begin() as session:
        assert session.get(Tip, 1).state == "acknowledged"  # type: ignore[union-attr]
        queued = session.scalars(select(OutboxMessage).where(OutboxMessage.dedupe_key == "test:queued")).one()
        assert queued.status == "failed"
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "staff_deactivated")).one()
        assert entry.staff_id is None and (entry.detail or "").startswith("cli (root)")
    assert LEAD_A not in h.deps.staff_flows
