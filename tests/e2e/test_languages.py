"""Every answer in the person's language; staff choose theirs; the small things a tipster
and a team see (every open question, the outcome note's lines)."""

from __future__ import annotations

from sqlalchemy import select

from storage.models import Question, Staff
from tests.e2e.conftest import Harness, plain
from tests.e2e.test_workflow import LEAD1, _setup, _verify

EN_CITIZEN = 5_630_001
EN_NEWCOMER = 5_630_002


async def test_an_english_citizen_is_answered_in_english_everywhere(harness: Harness) -> None:
    h, srv = harness, harness.server
    user = srv.user(EN_CITIZEN, "Eve", language_code="en")
    await h.say(user, "/frobnicate", expect="Unknown command")
    await h.say(user, "/join", expect="Usage: /join CODE")
    await h.say(user, "/settings", expect="registered officials only")
    await h.say(user, "/bulletins", expect="registered officials only")
    menu = await h.say(user, "/start", expect="receipt code")
    for forged in ("c:submit~AAAAAAAAAA", "ack:1~AAAAAAAAAA", "of:l:en~AAAAAAAAAA", "e:cat:x~AAAAAAAAAA",
                   "ask:1~AAAAAAAAAA", "anything at all"):
        before = len(srv.callback_answers)
        srv.push_callback(user, menu, forged)
        alert = await h.alert_for(before)
        assert "not valid" in alert["text"], (forged, alert)
    assert not any(ch in plain(r) for r in srv.sent_to(EN_CITIZEN) for ch in "请您的")


async def test_a_citizen_who_chose_english_is_answered_in_english(harness: Harness) -> None:
    h, srv = harness, harness.server
    user = srv.user(EN_CITIZEN + 1, "Wang")  # a Chinese app
    menu = await h.say(user, "/start", expect="查询码")
    langs = await h.press(user, menu, "Language", expect="Choose a language")
    await h.press(user, langs, "English", expect="Language set to English")
    await h.say(user, "/frobnicate", expect="Unknown command")


async def test_staff_choose_their_language_and_are_addressed_in_it(harness: Harness) -> None:
    h, srv = harness, harness.server
    lead = srv.user(LEAD1, "Lead Zhao")
    h.add_staff(lead, "lead", 1)  # zh-CN
    await h.say(lead, "/frobnicate", expect="不认识这个命令")
    choice = await h.say(lead, "/language", expect="Choose a language")
    await h.press(lead, choice, "English", expect="Language set to English")
    with h.deps.sessions.begin() as session:
        assert session.scalar(select(Staff.language).where(Staff.telegram_user_id == LEAD1)) == "en"
    await h.say(lead, "/frobnicate", expect="Unknown command")
    await h.say(lead, "/help", expect="Staff")
    await h.report(srv.user(EN_CITIZEN + 2, "Citizen"))
    card = await h.expect(LEAD1, "Tip #1")
    assert "举报 #1" not in plain(card)
    # a newcomer whose app is in English joins in English
    newcomer = srv.user(EN_NEWCOMER, "New Member", language_code="en")
    code = h.invite(role="member", team=1)
    await h.say(newcomer, f"/join {code}", expect="Welcome")
    with h.deps.sessions.begin() as session:
        assert session.scalar(select(Staff.language).where(Staff.telegram_user_id == EN_NEWCOMER)) == "en"


async def test_the_tipster_sees_every_open_question_and_answers_each(harness: Harness) -> None:
    h, srv = harness, harness.server
    lead, _office, citizen = await _setup(h)
    code = await h.report(citizen)
    card = await h.expect(LEAD1, "举报 #1")
    card = await h.acknowledge(lead, card)
    for question in ("第一个问题：是哪个窗口？", "第二个问题：大约几点？"):
        srv.press(lead, card, "询问举报人")
        await h.expect(LEAD1, "请输入要问举报人的问题")
        await h.say(lead, question, expect="问题已记录")
    timeline = await h.say(citizen, code, expect="督查组的问题")
    text = plain(timeline)
    assert "第一个问题" in text and "第二个问题" in text
    labels = [b["text"] for row in timeline["reply_markup"]["inline_keyboard"] for b in row]
    assert [label for label in labels if "回答" in label] == ["💬 回答督查组的问题 1", "💬 回答督查组的问题 2"]
    await h.press(citizen, timeline, "回答督查组的问题 2", expect="回答")
    await h.say(citizen, "大约九点四十。", expect="文字 1 条")
    last = await h.expect_button(citizen["id"], "发送给督查组")
    await h.press(citizen, last, "发送给督查组", expect="已送达")
    answer = await h.expect(LEAD1, "举报人回答了问题")
    assert "第二个问题" in plain(answer)
    with h.deps.sessions.begin() as session:
        answered = [(h.deps.keyring.decrypt(q.text_enc)[:5], q.answered_at is not None)
                    for q in session.scalars(select(Question).order_by(Question.id))]
    assert answered == [("第一个问题", False), ("第二个问题", True)]
    timeline = await h.say(citizen, code, expect="督查组的问题")
    assert "第一个问题" in plain(timeline) and "第二个问题" not in plain(timeline)


async def test_the_outcome_note_puts_the_person_on_a_line_of_their_own(harness: Harness) -> None:
    h = harness
    lead, _office, citizen = await _setup(h)
    await h.report(citizen)
    card = await h.expect(LEAD1, "举报 #1")
    before = h.mark(LEAD1)
    await _verify(h, lead, card)
    # The note comes through the outbox, the lead's "已办结" answer directly: either may be first.
    note = await h.expect(LEAD1, "录入）：", after=before)
    assert "属实\n当事人：张某（窗口科员）\n" in plain(note)
