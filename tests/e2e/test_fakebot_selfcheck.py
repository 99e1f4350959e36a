"""Self-check of the fake Bot API server against a real python-telegram-bot ``Bot``.

Every test talks real HTTP to :class:`tests.fakebot.FakeBotAPI` and checks that
PTB turns the fake's answers into the objects and exceptions it would get from
Telegram.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import sys
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import telegram
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter
from telegram.ext import ApplicationBuilder, CallbackQueryHandler, CommandHandler

try:
    from tests.fakebot import FakeBotAPI, button
except ModuleNotFoundError:  # pytest imported this file as a top-level module
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fakebot import FakeBotAPI, button

pytestmark = [
    pytest.mark.asyncio,
    # PTB itself reads RetryAfter.retry_after (int -> timedelta migration warning)
    pytest.mark.filterwarnings("ignore:.*`retry_after`:telegram.warnings.PTBDeprecationWarning"),
]

USER_ID = 1001
GROUP_ID = -1001234567890


def retry_seconds(exc: RetryAfter) -> float:
    """``RetryAfter.retry_after`` as seconds (int or timedelta, without the
    PTB deprecation warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value: Any = exc.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


@asynccontextmanager
async def running(**kwargs: Any) -> AsyncIterator[tuple[FakeBotAPI, telegram.Bot]]:
    async with FakeBotAPI(**kwargs) as server:
        async with telegram.Bot(server.token, base_url=server.base_url,
                                base_file_url=server.base_file_url) as bot:
            yield server, bot
        assert server.internal_errors == []


@pytest_asyncio.fixture
async def env() -> AsyncIterator[tuple[FakeBotAPI, telegram.Bot]]:
    async with running() as pair:
        yield pair


def keyboard(*data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(d, callback_data=d)] for d in data])


# --------------------------------------------------------------------- basics


async def test_get_me(env: tuple[FakeBotAPI, telegram.Bot]) -> None:
    server, bot = env
    me = await bot.get_me()
    assert me.id == 123 and me.is_bot and me.username == server.bot_user["username"]
    assert server.calls_for("getMe")


async def test_send_message_returns_message_and_is_recorded(
    env: tuple[FakeBotAPI, telegram.Bot],
) -> None:
    server, bot = env
    msg = await bot.send_message(USER_ID, "<b>Hello</b> &lt;you&gt;", parse_mode="HTML",
                                 reply_markup=keyboard("yes", "no"), protect_content=True)
    assert isinstance(msg, telegram.Message)
    assert msg.text == "Hello <you>" and msg.text_html == "<b>Hello</b> &lt;you&gt;"
    assert msg.from_user is not None and msg.from_user.id == server.bot_user["id"]
    assert msg.chat.id == USER_ID and msg.reply_markup == keyboard("yes", "no")
    [record] = server.sent_to(USER_ID)
    assert record["message_id"] == msg.message_id and record["method"] == "sendMessage"
    assert record["text"] == "<b>Hello</b> &lt;you&gt;" and record["parse_mode"] == "HTML"
    assert record["protect_content"] is True
    assert button(record, "no")["callback_data"] == "no"
    assert server.calls_for("sendMessage")[0]["params"]["chat_id"] == USER_ID
    second = await server.wait_sent(USER_ID)
    assert second == [record]


async def test_user_and_bot_share_message_id_counter(
    env: tuple[FakeBotAPI, telegram.Bot],
) -> None:
    server, bot = env
    alice = server.user(USER_ID, "Alice")
    update = server.push_message(alice, "hi")
    reply = await bot.send_message(USER_ID, "hello")
    assert reply.message_id == update["message"]["message_id"] + 1
    assert [m["message_id"] for m in server.messages_in(USER_ID)] == [1, 2]
    assert len(server.messages_in(USER_ID, from_bot=True)) == 1


# ----------------------------------------------------------------- validation


async def test_text_length_counts_visible_utf16_units(
    env: tuple[FakeBotAPI, telegram.Bot],
) -> None:
    server, bot = env
    with pytest.raises(BadRequest, match="(?i)too long"):
        await bot.send_message(USER_ID, "<i>" + "x" * 4097 + "</i>", parse_mode="HTML")
    ok = await bot.send_message(USER_ID + 1, "<b>" + "x" * 4096 + "</b>", parse_mode="HTML")
    assert len(ok.text or "") == 4096
    # an emoji outside the BMP counts 2 UTF-16 units, like on Telegram
    await bot.send_message(USER_ID + 2, "😀" * 2048)
    with pytest.raises(BadRequest, match="(?i)too long"):
        await bot.send_message(USER_ID + 3, "😀" * 2048 + "x")
    with pytest.raises(BadRequest, match="(?i)caption is too long"):
        await bot.send_photo(USER_ID + 4, b"img", caption="c" * 1025)
    with pytest.raises(BadRequest, match="(?i)text is empty"):
        await bot.send_message(USER_ID + 5, "<b></b>", parse_mode="HTML")
    assert len(server.sent) == 2


@pytest.mark.parametrize("bad", ["a < b", "<br>", "<b>bold", "<b><i>x</b></i>", "Q&A"])
async def test_bad_html_is_rejected(env: tuple[FakeBotAPI, telegram.Bot], bad: str) -> None:
    server, bot = env
    with pytest.raises(BadRequest, match="(?i)can't parse entities"):
        await bot.send_message(USER_ID, bad, parse_mode="HTML")
    assert server.sent == []


async def test_callback_data_limit_is_64_bytes(env: tuple[FakeBotAPI, telegram.Bot]) -> None:
    server, bot = env
    await bot.send_message(USER_ID, "ok", reply_markup=keyboard("x" * 64))
    with pytest.raises(BadRequest, match="(?i)BUTTON_DATA_INVALID"):
        await bot.send_message(USER_ID + 1, "too long", reply_markup=keyboard("x" * 65))
    with pytest.raises(BadRequest, match="(?i)BUTTON_DATA_INVALID"):  # 22 chars, 66 bytes
        await bot.send_message(USER_ID + 2, "utf-8", reply_markup=keyboard("举" * 22))
    assert len(server.sent) == 1


# --------------------------------------------------------------------- limits


async def test_per_chat_rate_limit_answers_retry_after() -> None:
    async with running(per_chat_per_second=1) as (server, bot):
        await bot.send_message(USER_ID, "one")
        with pytest.raises(RetryAfter) as info:
            await bot.send_message(USER_ID, "two")
        assert retry_seconds(info.value) >= 1
        await bot.send_message(USER_ID + 1, "another chat is fine")
        [violation] = server.rate_violations
        assert violation["kind"] == "chat" and violation["chat_id"] == USER_ID
        assert server.count_429 == 1 and len(server.sent) == 2


async def test_group_rate_limit_is_20_per_minute() -> None:
    async with running(global_per_second=None) as (server, bot):
        server.group(GROUP_ID, "Moderators")
        for i in range(20):
            await bot.send_message(GROUP_ID, f"msg {i}")
        with pytest.raises(RetryAfter) as info:
            await bot.send_message(GROUP_ID, "msg 21")
        assert 1 <= retry_seconds(info.value) <= 60
        assert server.rate_violations[-1]["kind"] == "group"
        assert len(server.sent_to(GROUP_ID)) == 20


async def test_global_rate_limit_and_force_retry_after() -> None:
    async with running(global_per_second=3, per_chat_per_second=None) as (server, bot):
        for chat in range(3):
            await bot.send_message(USER_ID + chat, "x")
        with pytest.raises(RetryAfter):
            await bot.send_message(USER_ID + 9, "x")
        assert server.rate_violations[-1]["kind"] == "global"
        server.reset_limits()
        server.force_retry_after(7)
        with pytest.raises(RetryAfter) as info:
            await bot.send_message(USER_ID, "x")
        assert retry_seconds(info.value) == 7
        await bot.send_message(USER_ID, "x")


async def test_pacing_at_the_limit_passes_with_tolerance() -> None:
    async with running(per_chat_per_second=5, burst_tolerance=0.02) as (server, bot):
        for _ in range(7):
            await bot.send_message(USER_ID, "paced")
            await asyncio.sleep(0.2)
        assert server.rate_violations == []


# ------------------------------------------------------------------ faults


async def test_blocked_chat_is_forbidden(env: tuple[FakeBotAPI, telegram.Bot]) -> None:
    server, bot = env
    server.block_chat(USER_ID)
    with pytest.raises(Forbidden, match="(?i)blocked by the user"):
        await bot.send_message(USER_ID, "hello?")
    assert server.sent == []


async def test_fail_next_is_a_network_error(env: tuple[FakeBotAPI, telegram.Bot]) -> None:
    server, bot = env
    server.fail_next()
    with pytest.raises(NetworkError) as info:
        await bot.send_message(USER_ID, "lost")
    assert not isinstance(info.value, (BadRequest, Forbidden, RetryAfter))
    assert server.sent == [] and server.count_5xx == 1
    await bot.send_message(USER_ID + 1, "delivered")
    # a lost *response*: the message exists, the bot sees an error
    server.fail_next("sendMessage", status=504, after_commit=True)
    with pytest.raises(NetworkError):
        await bot.send_message(USER_ID + 2, "twice?")
    assert [r["text"] for r in server.sent] == ["delivered", "twice?"]


async def test_transient_errors_are_seeded() -> None:
    async def run() -> list[bool]:
        async with running(transient_error_rate=0.5, seed=42, per_chat_per_second=None,
                           global_per_second=None) as (server, bot):
            outcome = []
            for i in range(12):
                try:
                    await bot.send_message(USER_ID, f"m{i}")
                    outcome.append(True)
                except NetworkError:
                    outcome.append(False)
            assert len(server.sent) == sum(outcome)
            return outcome

    first, second = await run(), await run()
    assert first == second and True in first and False in first


# ----------------------------------------------------------------- updates


async def test_get_updates_and_offset_confirmation(env: tuple[FakeBotAPI, telegram.Bot]) -> None:
    server, bot = env
    alice = server.user(USER_ID, "Alice", username="alice")
    sent = await bot.send_message(USER_ID, "Pick", reply_markup=keyboard("a", "b"))
    pushed = server.push_message(alice, "/start ref")
    server.push_callback(alice, server.sent[0], "b")
    updates = await bot.get_updates(timeout=0)
    assert [u.update_id for u in updates] == [pushed["update_id"], pushed["update_id"] + 1]
    message = updates[0].message
    assert message is not None and message.text == "/start ref"
    assert message.entities[0].type == "bot_command" and message.entities[0].length == 6
    query = updates[1].callback_query
    assert query is not None and query.data == "b" and query.message is not None
    assert query.message.message_id == sent.message_id and query.chat_instance
    # not confirmed yet: delivered again
    assert len(await bot.get_updates(timeout=0)) == 2
    last = updates[-1].update_id
    assert await bot.get_updates(offset=last + 1, timeout=0) == ()
    assert server.confirmed_offset == last + 1 and server.pending_updates == []


async def test_long_poll_wakes_up_on_push(env: tuple[FakeBotAPI, telegram.Bot]) -> None:
    server, bot = env
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, server.push_message, USER_ID, "wake up")
    started = time.monotonic()
    updates = await bot.get_updates(timeout=5)
    assert len(updates) == 1 and time.monotonic() - started < 2


async def test_push_duplicate_redelivers_same_update_id(
    env: tuple[FakeBotAPI, telegram.Bot],
) -> None:
    server, bot = env
    update = server.push_message(USER_ID, "once")
    [first] = await bot.get_updates(timeout=0)
    assert await bot.get_updates(offset=first.update_id + 1, timeout=0) == ()
    server.push_duplicate(update)
    [again] = await bot.get_updates(offset=first.update_id + 1, timeout=0)
    assert again.update_id == first.update_id == update["update_id"]
    assert again.message is not None and again.message.text == "once"
    assert await bot.get_updates(offset=again.update_id + 1, timeout=0) == ()


# ------------------------------------------------------------ edits, answers


async def test_edit_message_text(env: tuple[FakeBotAPI, telegram.Bot]) -> None:
    server, bot = env
    sent = await bot.send_message(USER_ID, "draft", reply_markup=keyboard("ok"))
    edited = await bot.edit_message_text("<i>final</i>", USER_ID, sent.message_id,
                                         parse_mode="HTML", reply_markup=keyboard("ok"))
    assert isinstance(edited, telegram.Message) and edited.text == "final"
    [current] = server.messages_in(USER_ID)
    assert current["text"] == "final" and current["entities"][0]["type"] == "italic"
    assert server.sent[0]["text"] == "draft"  # the creation record is a snapshot
    with pytest.raises(BadRequest, match="(?i)not modified"):
        await bot.edit_message_text("<i>final</i>", USER_ID, sent.message_id,
                                    parse_mode="HTML", reply_markup=keyboard("ok"))
    with pytest.raises(BadRequest, match="(?i)message to edit not found"):
        await bot.edit_message_text("x", USER_ID, 999)
    # like Telegram, an edit without reply_markup removes the inline keyboard
    await bot.edit_message_text("final", USER_ID, sent.message_id)
    assert "reply_markup" not in server.messages_in(USER_ID)[0]
    assert [e["method"] for e in server.edits] == ["editMessageText", "editMessageText"]


async def test_answer_callback_query_is_recorded(env: tuple[FakeBotAPI, telegram.Bot]) -> None:
    server, bot = env
    await bot.send_message(USER_ID, "Vote", reply_markup=keyboard("up", "down"))
    update = server.press(USER_ID, server.sent[0], "down")
    assert update["callback_query"]["data"] == "down"
    [received] = await bot.get_updates(timeout=0)
    assert received.callback_query is not None
    assert await received.callback_query.answer("Thanks!", show_alert=True)
    [answer] = server.callback_answers
    assert answer == {**answer, "callback_query_id": update["callback_query"]["id"],
                      "text": "Thanks!", "show_alert": True}
    with pytest.raises(BadRequest, match="(?i)query ID is invalid"):
        await received.callback_query.answer("twice")


async def test_forward_and_copy_are_recorded(env: tuple[FakeBotAPI, telegram.Bot]) -> None:
    server, bot = env
    report = server.push_message(USER_ID, caption="evidence", photo=True)["message"]
    forwarded = await bot.forward_message(GROUP_ID, USER_ID, report["message_id"])
    assert forwarded.forward_origin is not None and forwarded.photo
    copied = await bot.copy_message(GROUP_ID, USER_ID, report["message_id"], caption="case #1")
    assert copied.message_id == forwarded.message_id + 1
    assert [c["params"]["from_chat_id"] for c in server.calls_for("forwardMessage")] == [USER_ID]
    fwd, cpy = server.sent_to(GROUP_ID)
    assert fwd["method"] == "forwardMessage" and fwd["source_message_id"] == report["message_id"]
    assert cpy["caption"] == "case #1" and cpy["file_id"] == report["photo"][-1]["file_id"]
    with pytest.raises(BadRequest, match="(?i)message to copy not found"):
        await bot.copy_message(GROUP_ID, USER_ID, 12345)


async def test_unknown_file_id_and_media_upload(env: tuple[FakeBotAPI, telegram.Bot]) -> None:
    server, bot = env
    photo = server.push_message(USER_ID, photo=True)["message"]["photo"]
    resent = await bot.send_photo(GROUP_ID, photo[-1]["file_id"])
    assert resent.photo[-1].file_unique_id == photo[-1]["file_unique_id"]
    with pytest.raises(BadRequest, match="(?i)wrong file identifier"):
        await bot.send_photo(GROUP_ID, photo[-1]["file_unique_id"])
    doc = await bot.send_document(USER_ID, b"report body", filename="report.txt")
    assert doc.document is not None and doc.document.file_name == "report.txt"
    file = await bot.get_file(doc.document.file_id)
    assert await file.download_as_bytearray() == b"report body"
    assert server.file_content(doc.document.file_id) == b"report body"
    assert server.file_info(doc.document.file_id) == {"kind": "document", "file_name": "report.txt",
                                                      "mime_type": "text/plain", "file_size": 11}


async def test_files_pushed_with_content_download_and_the_20_mb_limit(env: tuple[FakeBotAPI, telegram.Bot]) -> None:
    server, bot = env
    msg = server.push_message(USER_ID, document="a.pdf", content=b"%PDF-1.4 body", mime_type="application/pdf")
    file = await bot.get_file(msg["message"]["document"]["file_id"])
    assert await file.download_as_bytearray() == b"%PDF-1.4 body"
    photo = server.push_message(USER_ID, photo=True)["message"]["photo"][-1]
    data = await (await bot.get_file(photo["file_id"])).download_as_bytearray()
    assert bytes(data[:3]) == b"\xff\xd8\xff"  # a photo without given content is still a real JPEG
    big = server.push_message(USER_ID, document="big.pdf", file_size=21 * 1024 * 1024)
    with pytest.raises(BadRequest, match="(?i)file is too big"):
        await bot.get_file(big["message"]["document"]["file_id"])


# ------------------------------------------------------- PTB Application, threads


async def test_application_polling_round_trip(env: tuple[FakeBotAPI, telegram.Bot]) -> None:
    server, _ = env

    async def start(update: telegram.Update, context: Any) -> None:
        assert update.effective_chat is not None
        await update.effective_chat.send_message("Welcome", reply_markup=keyboard("go"))

    async def pressed(update: telegram.Update, context: Any) -> None:
        query = update.callback_query
        assert query is not None
        await query.answer()
        await query.edit_message_text(f"pressed {query.data}")

    app = ApplicationBuilder().token(server.token).base_url(server.base_url).build()
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CallbackQueryHandler(pressed))
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=1)
        alice = server.user(USER_ID, "Alice")
        server.push_message(alice, "/start")
        [welcome] = await server.wait_sent(USER_ID)
        server.press(alice, welcome, "go")
        await server.wait_for(lambda: server.callback_answers and server.edits)
        assert server.messages_in(USER_ID, from_bot=True)[0]["text"] == "pressed go"
        await app.updater.stop()
        await app.stop()
    assert server.pending_updates == []  # PTB confirmed everything on shutdown


async def test_server_in_background_thread() -> None:
    server = FakeBotAPI()
    base_url = server.start_in_thread()
    try:
        async with telegram.Bot(server.token, base_url=base_url) as bot:
            server.push_message(USER_ID, "from another thread")
            [update] = await bot.get_updates(timeout=2)
            assert update.message is not None
            await bot.send_message(USER_ID, "reply")
        server.wait_for_sync(lambda: server.sent, timeout=2)
    finally:
        server.stop_thread()


async def test_wait_for_timeout_describes_traffic(env: tuple[FakeBotAPI, telegram.Bot]) -> None:
    server, bot = env
    await bot.send_message(USER_ID, "something else")
    with pytest.raises(AssertionError, match="something else"):
        await server.wait_for(lambda: server.sent_to(USER_ID + 1), timeout=0.05)
