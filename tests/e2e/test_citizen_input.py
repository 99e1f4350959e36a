"""Bad input from citizens gets a clear answer, never a crash or silence."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from storage.models import Tip
from tests.e2e.conftest import Harness, plain

U = 5_550_100


async def _to_text_step(h: Harness, user: dict) -> None:
    menu = await h.say(user, "/start", expect="查询码")
    cats = await h.press(user, menu, "📝", expect="1")
    units = await h.press(user, cats, "公款吃喝", expect="2")
    await h.press(user, units, "郭村镇", expect="3")
    await h.say(user, "昨天中午，某酒店", expect="4")


async def test_overlong_text_is_refused_with_the_limit_not_cut(harness: Harness) -> None:
    user = harness.server.user(U, "A")
    await _to_text_step(harness, user)
    limit = harness.config.intake.text_max_chars
    reply = await harness.say(user, "字" * (limit + 1), expect="太长")
    assert f"最多 {limit} 字" in plain(reply) and f"{limit + 1} 字" in plain(reply)
    # still at the same step: a good text moves on
    await harness.say(user, "短" * 20, expect="5")


async def test_too_short_and_blank_text_are_refused(harness: Harness) -> None:
    user = harness.server.user(U + 1, "B")
    await _to_text_step(harness, user)
    reply = await harness.say(user, "太短", expect="太短")
    assert f"至少需要 {harness.config.intake.text_min_chars} 字" in plain(reply)
    await harness.say(user, "     ", expect="不能为空")


async def test_unsupported_media_gets_a_clear_answer(harness: Harness) -> None:
    user = harness.server.user(U + 2, "C")
    await harness.say(user, "/start", expect="查询码")
    reply = await harness.say(user, sticker=True, expect="不支持")
    assert "sticker" in plain(reply)
    reply = await harness.say(user, contact=True, expect="不支持")
    assert "可能暴露您的身份" in plain(reply)
    await harness.say(user, location=True, expect="不支持")


async def test_evidence_outside_the_evidence_step_is_explained(harness: Harness) -> None:
    user = harness.server.user(U + 3, "D")
    await harness.say(user, "/start", expect="查询码")
    await harness.say(user, photo=True, expect="还不能接收附件")


async def test_evidence_limit_is_enforced(harness: Harness) -> None:
    h = harness
    user = h.server.user(U + 4, "E")
    await _to_text_step(h, user)
    await h.say(user, "工作日中午在酒店喝酒，开的是公车。", expect="5")
    for _ in range(h.config.intake.max_evidence + 1):
        h.server.push_message(user, photo=True)
    await h.expect(U + 4, "上限")
    await h.expect(U + 4, f"已收到 {h.config.intake.max_evidence} 个证据")


async def test_typed_text_where_a_button_is_expected(harness: Harness) -> None:
    user = harness.server.user(U + 5, "F")
    menu = await harness.say(user, "/start", expect="查询码")
    await harness.press(user, menu, "📝", expect="1")
    await harness.say(user, "我要举报", expect="点击上面消息中的按钮")


async def test_text_when_idle_shows_the_menu(harness: Harness) -> None:
    user = harness.server.user(U + 6, "G")
    reply = await harness.say(user, "你好", expect="请用下面的按钮")
    assert reply["reply_markup"]["inline_keyboard"]


async def test_forged_and_stale_buttons_are_refused(harness: Harness) -> None:
    srv = harness.server
    user = srv.user(U + 7, "H")
    menu = await harness.say(user, "/start", expect="查询码")
    before = len(srv.callback_answers)
    srv.push_callback(user, menu, "c:submit~AAAAAAAAAA")
    answer = await harness.alert_for(before)
    assert answer["show_alert"] and "无效" in answer["text"]
    before = len(srv.callback_answers)
    srv.push_callback(user, menu, "anything at all")
    assert "无效" in (await harness.alert_for(before))["text"]
    # a genuine button from an old step: stale, said so
    cats = await harness.press(user, menu, "📝", expect="1")
    await harness.say(user, "/cancel", expect="已取消")
    await harness.press(user, cats, "公款吃喝", expect="已过期")


async def test_unknown_command_and_cancel_without_draft(harness: Harness) -> None:
    user = harness.server.user(U + 8, "I")
    await harness.say(user, "/frobnicate", expect="不认识这个命令")
    await harness.say(user, "/cancel", expect="没有需要取消")


async def test_abandoned_draft_expires_and_is_forgotten(harness: Harness) -> None:
    h = harness
    user = h.server.user(U + 9, "J")
    await _to_text_step(h, user)
    h.clock.advance(timedelta(minutes=h.config.intake.draft_ttl_minutes + 1))
    await h.say(user, "这是一段足够长的描述文字，但草稿已经过期了。", expect="已超过")
    with h.deps.sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(Tip)) == 0


async def test_flood_is_answered_once_then_ignored(harness: Harness) -> None:
    h = harness
    user = h.server.user(U + 10, "K")
    limit = h.config.intake.flood_messages_per_minute
    for i in range(limit + 5):
        h.server.push_message(user, f"msg {i}")
    await h.expect(U + 10, "消息太多")
    replies = await h.server.wait_for(lambda: len(h.server.sent_to(U + 10)) >= limit + 1 and h.server.sent_to(U + 10))
    assert sum("消息太多" in plain(r) for r in replies) == 1
    assert len(replies) == limit + 1


async def test_group_chat_is_told_tips_are_private(harness: Harness) -> None:
    srv = harness.server
    group = srv.group(-100_200, "某工作群")
    user = srv.user(U + 11, "L")
    srv.push_message(user, "/start", chat=group)
    reply = await harness.expect(-100_200, "私聊")
    assert "@tipline_test_bot" in plain(reply)


async def test_english_and_language_switch(harness: Harness) -> None:
    srv = harness.server
    user = srv.user(U + 12, "M", language_code="en")
    menu = await harness.say(user, "/start", expect="receipt code")
    langs = await harness.press(user, menu, "Language", expect="Choose a language")
    await harness.press(user, langs, "中文", expect="语言已设为中文")
    await harness.expect(U + 12, "查询码")
