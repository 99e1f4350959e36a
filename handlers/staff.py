"""Staff in Telegram: /join with an invite code, binding a team group, the Acknowledge button."""

from __future__ import annotations

import contextlib
import math
from datetime import timedelta

from sqlalchemy import update as sql_update
from telegram import CallbackQuery, Update
from telegram.error import BadRequest

from bot.config import LANGUAGES
from bot.drafts import Backoff, backoff_wait
from bot.services import staff as staff_service
from bot.services.office import OFFICE_TEAM
from bot.services.outbox import Button
from bot.services.staff import AckStatus, JoinStatus
from handlers.common import Context, deps_of, person_lang, private, reply
from storage.directory import is_team_chat
from storage.models import TeamChat


def _lang(context: Context, update: Update) -> str:
    return person_lang(update, context)


async def join(update: Update, context: Context) -> None:
    deps = deps_of(context)
    user, chat = update.effective_user, update.effective_chat
    if user is None or chat is None:
        return
    lang = person_lang(update, context)
    code = " ".join(context.args or [])
    if not code.strip():
        await reply(update, context, deps.texts.msg(lang, "join_usage"))
        return
    # Wrong codes slow the chat down; the counter is keyed by a pseudonym, in memory.
    now = deps.clock.now()
    key = deps.keyring.pseudonym("join", chat.id)
    backoff = deps.chats.backoffs.get(key)
    if backoff and backoff.not_before and now < backoff.not_before:
        await reply(update, context, deps.texts.msg(lang, "join_wait",
                                                    seconds=math.ceil((backoff.not_before - now).total_seconds())))
        return
    with deps.sessions.begin() as session:
        if private(update):
            result = staff_service.join(session, deps, code, user.id, user.full_name, lang, now)
        else:
            result = staff_service.bind_group(session, deps, code, chat.id, chat.title or "", now,
                                                  by_user_id=user.id)
    if result.status is JoinStatus.BURNED:
        await reply(update, context, deps.texts.msg(lang, "join_person_code_burned"))
        return
    if result.status in (JoinStatus.INVALID, JoinStatus.WRONG_KIND):
        b = deps.chats.backoffs.setdefault(key, Backoff())
        b.failures += 1
        b.last = now
        cfg = deps.config.intake
        wait = backoff_wait(b.failures, cfg.receipt_free_attempts, cfg.receipt_backoff_base_seconds,
                            cfg.receipt_backoff_max_seconds)
        b.not_before = now + timedelta(seconds=wait) if wait else None
        name = "join_invalid" if result.status is JoinStatus.INVALID else (
            "join_group_code_in_private" if private(update) else "join_person_code_in_group")
        await reply(update, context, deps.texts.msg(lang, name))
        return
    deps.chats.backoffs.pop(key, None)
    if result.redelivered:
        deps.nudge_sender()
    if result.status is JoinStatus.BOUND and result.team_number == OFFICE_TEAM:
        await reply(update, context, deps.texts.msg(lang, "office_group_bound"))
        return
    if result.role == "official":
        from handlers.officials import send_settings

        await send_settings(update, context, intro=deps.texts.msg(lang, "official_joined"))
        return
    if result.status is JoinStatus.BOUND:
        await reply(update, context, deps.texts.msg(lang, "group_bound", team=result.team_number,
                                                    waiting=result.redelivered))
    else:
        await reply(update, context, deps.texts.msg(lang, "joined", role=result.role, team=result.team_number,
                                                    waiting=result.redelivered))


async def on_ack(update: Update, context: Context) -> None:
    """The Acknowledge (签收) button on a team card."""
    deps = deps_of(context)
    query = update.callback_query
    assert query is not None and query.data is not None
    lang = _lang(context, update)
    payload = deps.keyring.verify(query.data)
    tip_id = _tip_id(payload, "ack")
    if tip_id is None:
        await _answer(query, deps.texts.msg(lang, "button_invalid"))
        return
    with deps.sessions.begin() as session:
        result = staff_service.acknowledge(session, deps, tip_id, query.from_user.id, deps.clock.now())
    if result.status is AckStatus.ACKNOWLEDGED:
        deps.nudge_sender()
    text = {
        AckStatus.ACKNOWLEDGED: lambda: deps.texts.msg(lang, "ack_done", tip_id=tip_id),
        AckStatus.NOT_STAFF: lambda: deps.texts.msg(lang, "ack_not_staff"),
        AckStatus.WRONG_TEAM: lambda: deps.texts.msg(lang, "ack_wrong_team", team=result.team_number),
        AckStatus.ALREADY: lambda: deps.texts.msg(lang, "ack_already", tip_id=tip_id, by=result.by or "?",
                                                  at=deps.texts.local_time(result.at) if result.at else "?"),
        AckStatus.NO_TIP: lambda: deps.texts.msg(lang, "button_invalid"),
        AckStatus.NOT_ROUTED: lambda: deps.texts.msg(lang, "ack_not_routed", tip_id=tip_id),
    }[result.status]()
    await _answer(query, text)


def _tip_id(payload: str | None, action: str) -> int | None:
    if payload is None:
        return None
    name, _, arg = payload.partition(":")
    if name != action or not arg.isdigit():
        return None
    return int(arg)


async def _answer(query: CallbackQuery, text: str) -> None:
    with contextlib.suppress(BadRequest):
        await query.answer(text=text[:200], show_alert=True)


async def chat_member(update: Update, context: Context) -> None:
    """The bot was removed from a bound group: stop sending cards there. A citizen who
    blocks the bot (a private chat) touches no table; nor does any group that is not bound."""
    change = update.my_chat_member
    if change is None or change.new_chat_member.status not in ("left", "kicked") or change.chat.type == "private":
        return
    deps = deps_of(context)
    with deps.sessions.begin() as session:
        if is_team_chat(session, change.chat.id):
            session.execute(sql_update(TeamChat).where(TeamChat.chat_id == change.chat.id).values(active=False))


# --- a staff member's language ---------------------------------------------------------------
async def language_command(update: Update, context: Context) -> None:
    """/language: a staff member chooses the language tipline addresses them in (cards,
    reminders, answers); anyone else gets the chat's language choice."""
    if not private(update) or update.effective_user is None:
        return
    deps = deps_of(context)
    with deps.sessions.begin() as session:
        member = staff_service.staff_by_user(session, update.effective_user.id)
        lang = member.language if member is not None else None
    if lang is None:
        from handlers.citizen import choose_language

        await choose_language(update, context)
        return
    rows = [[Button(deps.texts.button(lang, "lang_zh"), deps.keyring.sign("sl:zh-CN")),
             Button(deps.texts.button(lang, "lang_en"), deps.keyring.sign("sl:en"))]]
    await reply(update, context, deps.texts.msg(lang, "choose_language"), rows)


async def on_language_button(update: Update, context: Context) -> None:
    deps = deps_of(context)
    query = update.callback_query
    assert query is not None and query.data is not None
    payload = deps.keyring.verify(query.data) or ""
    _, _, lang = payload.partition(":")
    with deps.sessions.begin() as session:
        member = staff_service.staff_by_user(session, query.from_user.id)
        if member is not None and payload.startswith("sl:") and lang in LANGUAGES:
            member.language = lang
        else:
            member = None
    if member is None:
        await _answer(query, deps.texts.msg(person_lang(update, context), "button_invalid"))
        return
    with contextlib.suppress(BadRequest):
        await query.answer()
        await query.edit_message_reply_markup(reply_markup=None)
    await reply(update, context, deps.texts.msg(lang, "language_set"))
