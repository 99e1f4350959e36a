"""Input that looks empty is empty, in every flow: invisible characters are not content,
and the limits are enforced on what is left."""

from __future__ import annotations

from sqlalchemy import func, select

from storage.models import Evidence, Question, Tip, TipAddition
from tests.e2e.conftest import Harness, plain

CITIZEN = 5_610_001
OFFICE = 7_610_001
LEAD = 7_610_002
ZW = "\u200b\u200c\u2060\ufeff\u202e\u2066\u3164"  # zero-width, BOM, bidi override and isolate, a filler


async def test_invisible_place_unit_and_text_are_empty_and_stored_text_is_clean(harness: Harness) -> None:
    h = harness
    user = h.server.user(CITIZEN, "A")
    menu = await h.say(user, "/start", expect="查询码")
    cats = await h.press(user, menu, "📝", expect="1")
    units = await h.press(user, cats, "公款吃喝", expect="2")
    await h.press(user, units, "其他", expect="单位名称")
    await h.say(user, ZW * 3, expect="不能为空")
    await h.say(user, f"县\u200b水利局{ZW}", expect="3")
    await h.say(user, ZW + " \u3000 " + ZW, expect="不能为空")
    await h.say(user, f"\u202e昨天中午，某酒店{ZW}", expect="4")
    await h.say(user, ZW * 40, expect="不能为空")
    short = "喝酒" + "\u200b" * 40  # long only with the invisible characters
    reply = await h.say(user, short, expect="太短")
    assert "您发送了 2 字" in plain(reply)
    ev = await h.say(user, "工作日中午在酒店喝酒，\u200b开的是公车。", expect="5")
    await h.press(user, ev, "跳过", expect="核对")
    review = await h.expect_button(CITIZEN, "提交")
    await h.press(user, review, "提交", expect="您的查询码")
    k = h.deps.keyring
    with h.deps.sessions.begin() as session:
        tip = session.scalar(select(Tip))
        assert tip is not None
        assert k.decrypt(tip.unit_other_enc or "") == "县水利局"
        assert k.decrypt(tip.place_enc) == "昨天中午，某酒店"
        assert k.decrypt(tip.text_enc) == "工作日中午在酒店喝酒，开的是公车。"


async def test_the_office_entry_uses_the_same_normalisation(harness: Harness) -> None:
    h = harness
    office = h.server.user(OFFICE, "Office")
    h.add_staff(office, "office", None)
    channel = await h.say(office, "/enter", expect="怎么收到的")
    cats = await h.press(office, channel, "举报电话", expect="举报类别")
    units = await h.press(office, cats, "迟到早退脱岗", expect="哪个单位")
    await h.press(office, units, "定昌镇", expect="时间和地点")
    await h.say(office, ZW * 5, expect="不能为空")
    await h.say(office, "来电称：3月2日上午", expect="反映了什么情况")


async def test_a_staff_question_of_invisible_characters_is_refused(harness: Harness) -> None:
    h, srv = harness, harness.server
    lead = srv.user(LEAD, "Lead")
    h.add_staff(lead, "lead", 1)
    await h.report(srv.user(CITIZEN + 1, "B"))
    card = await h.expect(LEAD, "举报 #1")
    card = await h.acknowledge(lead, card)
    srv.press(lead, card, "询问举报人")
    await h.expect(LEAD, "请输入要问举报人的问题")
    await h.say(lead, ZW * 10, expect="不能为空")
    await h.say(lead, "\u200b请问是哪个窗口？\u200b", expect="问题已记录")
    with h.deps.sessions.begin() as session:
        questions = [h.deps.keyring.decrypt(q.text_enc) for q in session.scalars(select(Question))]
    assert questions == ["请问是哪个窗口？"]


async def test_the_evidence_limit_of_an_addition_is_enforced(harness: Harness) -> None:
    h, srv = harness, harness.server
    user = srv.user(CITIZEN + 2, "C")
    code = await h.report(user)
    limit = h.config.intake.max_evidence
    timeline = await h.say(user, code, expect="举报 #1")
    await h.press(user, timeline, "补充", expect=str(limit))
    await h.say(user, ZW, expect="不能为空")  # an invisible text is not an addition
    for _ in range(limit + 5):
        srv.push_message(user, photo=True)
    await h.expect(CITIZEN + 2, "上限")
    await h.expect(CITIZEN + 2, f"证据 {limit} 个")
    last = await h.expect_button(CITIZEN + 2, "发送给督查组")
    await h.press(user, last, "发送给督查组", expect="已送达")
    with h.deps.sessions.begin() as session:
        addition = session.scalar(select(TipAddition))
        assert addition is not None and addition.text_enc is None
        stored = session.scalar(select(func.count(Evidence.id)).where(Evidence.addition_id == addition.id))
    assert stored == limit
