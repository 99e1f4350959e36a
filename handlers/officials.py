"""Officials in Telegram: /settings, /unsubscribe, /bulletins and their buttons; the office's
Publish / Edit note / Hold buttons on a bulletin draft."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from telegram import CallbackQuery, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest
from sqlalchemy.orm import Session
from telegram.ext import ApplicationHandlerStop

from bot import conversations
from bot.conversations import parse_when, when
from bot.deps import Deps
from bot.services import bulletins as bulletin_service
from bot.services import officials as official_service
from bot.services.outbox import Button
from bot.services.staff import staff_by_user
from handlers.common import Context, checked_text, deps_of, keyboard, person_lang, private, reply
from storage.models import Staff
from storage.models_officials import Bulletin, Subscription

NOTE_MAX_CHARS = 1000
PENDING_NOTES = "pending_notes"  # bot_data: office member's user id -> the NotePrompt they opened


@dataclass
class NotePrompt:
    """An office member pressed "Edit note": their next text in that chat is the note, until
    `expires`. Another member's text, or a text elsewhere or later, is not."""

    bulletin_id: int
    chat: str  # pseudonym of the chat the prompt was sent to
    expires: datetime


def _dump_prompt(p: NotePrompt) -> dict[str, Any]:
    return {"bulletin_id": p.bulletin_id, "chat": p.chat, "expires": when(p.expires)}


def _load_prompt(d: dict[str, Any]) -> NotePrompt:
    expires = parse_when(d["expires"])
    assert expires is not None
    return NotePrompt(int(d["bulletin_id"]), d["chat"], expires)


conversations.register(conversations.Kind(
    "note", "user",
    get=lambda bot_data, user_id: bot_data.get(PENDING_NOTES, {}).get(user_id),
    put=lambda bot_data, user_id, d: bot_data.setdefault(PENDING_NOTES, {}).__setitem__(user_id, _load_prompt(d)),
    dump=_dump_prompt, expires=lambda p, _bot_data: p.expires,
    clear=lambda bot_data, user_id: bot_data.get(PENDING_NOTES, {}).pop(user_id, None),
))


def settings_view(deps: Deps, staff: Staff, sub: Subscription) -> tuple[str, list[list[Button]]]:
    lang = staff.language
    text = deps.texts.msg(lang, "official_settings", summary=sub.daily_summary, bulletins=sub.bulletins,
                          escalations=sub.escalations)
    rows = [[Button(deps.texts.button(lang, "subscription", kind=k, on=getattr(sub, k)), deps.keyring.sign(f"of:t:{k}"))]
            for k in official_service.KINDS]
    rows.append([Button(deps.texts.button(lang, "lang_zh"), deps.keyring.sign("of:l:zh-CN")),
                 Button(deps.texts.button(lang, "lang_en"), deps.keyring.sign("of:l:en"))])
    return text, rows


def _official(session: Session, update: Update) -> Staff | None:
    """The official behind a private-chat command, or None."""
    user = update.effective_user
    if user is None or not private(update):
        return None
    return official_service.official(session, user.id)


async def _refuse(update: Update, context: Context) -> None:
    """Only officials have settings and bulletins (commands in groups pass silently)."""
    if private(update):
        deps = deps_of(context)
        await reply(update, context, deps.texts.msg(person_lang(update, context), "officials_only"))


async def send_settings(update: Update, context: Context, intro: str | None = None) -> bool:
    """Show the official's settings; False if the chat is not an official's."""
    deps = deps_of(context)
    with deps.sessions.begin() as session:
        staff = _official(session, update)
        if staff is None:
            return False
        sub = official_service.ensure_subscription(session, deps, staff, deps.clock.now())
        text, rows = settings_view(deps, staff, sub)
    if intro:
        await reply(update, context, intro)
    await reply(update, context, text, rows)
    return True


async def settings(update: Update, context: Context) -> None:
    if not await send_settings(update, context):
        await _refuse(update, context)


async def unsubscribe(update: Update, context: Context) -> None:
    deps = deps_of(context)
    with deps.sessions.begin() as session:
        staff = _official(session, update)
        if staff is not None:
            official_service.unsubscribe_all(session, deps, staff, deps.clock.now())
            lang = staff.language
    if staff is None:
        await _refuse(update, context)
        return
    await reply(update, context, deps.texts.msg(lang, "official_unsubscribed"))


async def list_bulletins(update: Update, context: Context) -> None:
    deps = deps_of(context)
    with deps.sessions.begin() as session:
        staff = _official(session, update)
        if staff is not None:
            lang = staff.language
            rows = [[Button(deps.texts.button(lang, "bulletin_open", number=b.number, date=b.issued_on),
                            deps.keyring.sign(f"of:o:{b.id}"))] for b in bulletin_service.published(session)]
    if staff is None:
        await _refuse(update, context)
        return
    if not rows:
        await reply(update, context, deps.texts.msg(lang, "bulletins_none"))
        return
    await reply(update, context, deps.texts.msg(lang, "bulletins_list", count=len(rows)), rows)


async def on_official_button(update: Update, context: Context) -> None:
    """of:t:<kind> toggles a subscription, of:l:<lang> sets the language, of:o:<id> opens a bulletin."""
    deps = deps_of(context)
    query = update.callback_query
    assert query is not None and query.data is not None
    default = person_lang(update, context)
    payload = deps.keyring.verify(query.data)
    parts = (payload or "").split(":")
    if len(parts) != 3 or parts[0] != "of":
        await _answer(query, deps.texts.msg(default, "button_invalid"))
        return
    _, action, arg = parts
    now = deps.clock.now()
    with deps.sessions.begin() as session:
        staff = official_service.official(session, query.from_user.id)
        if staff is None:
            await _answer(query, deps.texts.msg(default, "officials_only"))
            return
        if action == "t" and arg in official_service.KINDS:
            sub = official_service.toggle(session, deps, staff, arg, now)
        elif action == "l" and arg in ("zh-CN", "en"):
            official_service.set_language(staff, arg)
            sub = official_service.ensure_subscription(session, deps, staff, now)
        elif action == "o" and arg.isdigit():
            chat = query.message.chat.id if query.message is not None else staff.telegram_user_id
            opened = bulletin_service.open_for(session, deps, now, int(arg), chat, staff.language)
            lang = staff.language
            sub = None
        else:
            await _answer(query, deps.texts.msg(staff.language, "button_invalid"))
            return
        view = settings_view(deps, staff, sub) if sub is not None else None
    if view is None:  # a bulletin was opened
        await _answer(query, None if opened else deps.texts.msg(lang, "button_invalid"))
        if opened:
            deps.nudge_sender()
        return
    await _answer(query, None)
    text, rows = view
    with contextlib.suppress(BadRequest):  # "message is not modified" and the like
        await query.edit_message_text(text, parse_mode=ParseMode.HTML, reply_markup=keyboard(rows))


async def on_bulletin_button(update: Update, context: Context) -> None:
    """bl:pub|note|hold:<id> on a draft sent to the office."""
    deps = deps_of(context)
    query = update.callback_query
    assert query is not None and query.data is not None
    default = person_lang(update, context)
    payload = deps.keyring.verify(query.data)
    parts = (payload or "").split(":")
    if len(parts) != 3 or parts[0] != "bl" or not parts[2].isdigit() or parts[1] not in ("pub", "note", "hold"):
        await _answer(query, deps.texts.msg(default, "button_invalid"))
        return
    action, bulletin_id = parts[1], int(parts[2])
    now = deps.clock.now()
    with deps.sessions.begin() as session:
        member = staff_by_user(session, query.from_user.id)
        if member is None or member.role != "office":
            await _answer(query, deps.texts.msg(default, "office_only"))
            return
        lang = member.language
        if action == "pub":
            decision, b, sent = bulletin_service.publish(session, deps, now, bulletin_id, member.id)
            text = {
                bulletin_service.Decision.DONE: lambda: deps.texts.msg(
                    lang, "bulletin_published", number=b.number, recipients=sent.recipients if sent else 0),
                bulletin_service.Decision.ALREADY: lambda: deps.texts.msg(lang, "bulletin_already", number=b.number),
                bulletin_service.Decision.NOT_FOUND: lambda: deps.texts.msg(lang, "button_invalid"),
            }[decision]()
        elif action == "hold":
            decision, b = bulletin_service.hold(session, bulletin_id)
            text = {
                bulletin_service.Decision.DONE: lambda: deps.texts.msg(lang, "bulletin_held", number=b.number),
                bulletin_service.Decision.ALREADY: lambda: deps.texts.msg(lang, "bulletin_already", number=b.number),
                bulletin_service.Decision.NOT_FOUND: lambda: deps.texts.msg(lang, "button_invalid"),
            }[decision]()
        else:
            b = session.get(Bulletin, bulletin_id)
            if b is None or b.status == "published":
                text = deps.texts.msg(lang, "bulletin_already", number=b.number) if b else \
                    deps.texts.msg(lang, "button_invalid")
            elif query.message is None:
                text = deps.texts.msg(lang, "button_invalid")
            else:
                minutes = deps.config.officials.note_prompt_minutes
                context.bot_data.setdefault(PENDING_NOTES, {})[query.from_user.id] = NotePrompt(
                    bulletin_id, deps.keyring.pseudonym("chat", query.message.chat.id),
                    now + timedelta(minutes=minutes))
                text = deps.texts.msg(lang, "bulletin_note_prompt", number=b.number, minutes=minutes)
    deps.nudge_sender()
    await _answer(query, text)
    if action == "note" and query.message is not None:
        with contextlib.suppress(BadRequest):
            await context.bot.send_message(query.message.chat.id, text, parse_mode=ParseMode.HTML)


async def on_note_text(update: Update, context: Context) -> None:
    """The next text from the office member who pressed "Edit note", in the chat where they
    pressed it and before the prompt expires, becomes the note."""
    user, message, chat = update.effective_user, update.effective_message, update.effective_chat
    pending: dict[int, NotePrompt] = context.bot_data.get(PENDING_NOTES, {})
    if user is None or message is None or chat is None or message.text is None or user.id not in pending:
        return  # not ours: the other handlers see it
    deps = deps_of(context)
    now = deps.clock.now()
    prompt = pending[user.id]
    if now >= prompt.expires:
        del pending[user.id]  # expired: the text is somebody's message, not a note
        return
    if deps.keyring.pseudonym("chat", chat.id) != prompt.chat:
        return  # written elsewhere: the prompt still waits in its own chat
    bulletin_id = prompt.bulletin_id
    del pending[user.id]
    with deps.sessions.begin() as session:
        member = staff_by_user(session, user.id)
        lang = member.language if member else deps.config.campaign.default_language
        office = member is not None and member.role == "office"
    if not office:
        raise ApplicationHandlerStop
    if message.text.strip() == "/cancel":
        await reply(update, context, deps.texts.msg(lang, "bulletin_note_cancelled"))
        raise ApplicationHandlerStop
    note = await checked_text(update, context, lang, message.text, NOTE_MAX_CHARS)
    if note is None:  # empty or too long: said so; the next text is still the note
        pending[user.id] = prompt
        raise ApplicationHandlerStop
    with deps.sessions.begin() as session:
        # the prompt ends with the note it asked for, in one transaction
        conversations.ConversationStore.erase(session, "note", deps.keyring.pseudonym("chat", user.id))
        decision, b = bulletin_service.set_note(session, deps, bulletin_id, note)
        if decision is bulletin_service.Decision.DONE and b is not None:
            bulletin_service.send_draft(session, deps, now, b)
            text = deps.texts.msg(lang, "bulletin_note_saved", number=b.number)
        elif b is not None:
            text = deps.texts.msg(lang, "bulletin_already", number=b.number)
        else:
            text = deps.texts.msg(lang, "button_invalid")
    deps.nudge_sender()
    await reply(update, context, text)
    raise ApplicationHandlerStop


async def _answer(query: CallbackQuery, text: str | None, **_: Any) -> None:
    with contextlib.suppress(BadRequest):
        await query.answer(text=text[:200] if text else None, show_alert=bool(text))
