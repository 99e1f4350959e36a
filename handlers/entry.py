"""Office staff enter a tip received by phone or mail, in their private chat: /enter.

The intake flow of handlers/intake.py with the channel step first: channel → category →
unit → when and where → what was said → attachments (a scanned letter, ...) → review →
submit → the caller's receipt code, shown once. Only active office members may start or
submit. Their state is kept in memory keyed by their Telegram id (staff are not
anonymous), and sealed in the database by bot/conversations.py so that a restart
continues it; nothing about the caller is asked for or kept. While an entry is open, the
member's messages and /cancel come here rather than to the citizens' chat.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session
from telegram import Message, Update
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bot import conversations
from bot.clock import Clock
from bot.deps import Deps
from bot.drafts import ChatSession, Draft, dump_session, load_session
from bot.services import entry as entry_service
from bot.services import intake, receipts
from bot.services.outbox import Button
from handlers import intake as flow
from handlers.common import Context, deps_of, person_lang, private, reply
from handlers.intake import answer, drop_keyboard
from storage.models import Tip


class EntryStore:
    """Open entries by the office member's Telegram id; forgotten after `ttl` untouched."""

    def __init__(self, ttl: timedelta, clock: Clock) -> None:
        self.ttl, self.clock = ttl, clock
        self._entries: dict[int, ChatSession] = {}

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._entries

    def open(self, user_id: int, lang: str) -> ChatSession:
        self.drop(user_id)
        entry = ChatSession(lang=lang, draft=Draft(), touched=self.clock.now())
        self._entries[user_id] = entry
        return entry

    def get(self, user_id: int) -> tuple[ChatSession | None, bool]:
        """The member's open entry (touched), and whether one had expired (and is gone)."""
        entry = self._entries.get(user_id)
        now = self.clock.now()
        if entry is not None and entry.touched is not None and now - entry.touched > self.ttl:
            self.drop(user_id)
            return None, True
        if entry is not None:
            entry.touched = now
        return entry, False

    def peek(self, user_id: int) -> ChatSession | None:
        return self._entries.get(user_id)

    def put(self, user_id: int, entry: ChatSession) -> None:
        self._entries[user_id] = entry

    def drop(self, user_id: int) -> ChatSession | None:
        entry = self._entries.pop(user_id, None)
        if entry is not None:
            flow.cancel_pending(entry)
        return entry

    def sweep(self) -> int:
        now = self.clock.now()
        stale = [uid for uid, e in self._entries.items() if e.touched is None or now - e.touched > self.ttl]
        for uid in stale:
            self.drop(uid)
        return len(stale)


class InEntry(filters.MessageFilter):
    """Messages of a user who has an entry open."""

    def __init__(self, store: EntryStore) -> None:
        super().__init__(name="InEntry")
        self.store = store

    def filter(self, message: Message) -> bool:
        return message.from_user is not None and message.from_user.id in self.store


def register(app: Application[Any, Any, Any, Any, Any, Any]) -> EntryStore:
    """Add the entry flow's handlers; call before the citizens' handlers."""
    deps: Deps = app.bot_data["deps"]
    store = EntryStore(timedelta(minutes=deps.config.intake.draft_ttl_minutes), deps.clock)
    app.bot_data["entries"] = store
    in_entry = InEntry(store)
    app.add_handler(CommandHandler("enter", start))
    app.add_handler(CommandHandler("cancel", cancel, filters=filters.ChatType.PRIVATE & in_entry))
    app.add_handler(CallbackQueryHandler(on_button, pattern=r"^e:"))
    app.add_handler(MessageHandler(filters.ChatType.PRIVATE & ~filters.COMMAND & in_entry, on_message))
    # /start or /help leave an open entry (the citizens' handlers still answer them).
    app.add_handler(CommandHandler(["start", "help"], leave, filters=filters.ChatType.PRIVATE & in_entry), group=-1)
    if app.job_queue is not None:

        async def sweep(_context: Context) -> None:
            store.sweep()

        app.job_queue.run_repeating(sweep, interval=60, first=60, name="sweep-entries",
                                    job_kwargs={"misfire_grace_time": 60, "coalesce": True})
    return store


def store_of(context: Context) -> EntryStore:
    return context.bot_data["entries"]


def _entry_expires(entry: ChatSession, bot_data: dict[str, Any]) -> datetime:
    assert entry.touched is not None
    return entry.touched + bot_data["entries"].ttl


conversations.register(conversations.Kind(
    "entry", "user",
    get=lambda bot_data, user_id: bot_data["entries"].peek(user_id),
    put=lambda bot_data, user_id, d: bot_data["entries"].put(user_id, load_session(d)),
    dump=dump_session, expires=_entry_expires,
    clear=lambda bot_data, user_id: bot_data["entries"].drop(user_id),
))


def _office_lang(deps: Deps, user_id: int) -> str | None:
    """The office member's language, or None if the user is not an active office member."""
    with deps.sessions.begin() as session:
        staff = entry_service.office_member(session, user_id)
        return staff.language if staff is not None else None


# --- the intake flow, as the office's entry runs it ----------------------------------------------
class OfficeChannel(flow.Channel):
    prefix = "e"
    kind = "office"
    conversation = "entry"
    fields = ("channel", "category", "unit", "place", "text", "evidence")
    messages = {name: f"entry_{name}" for name in (
        "choose_channel", "choose_category", "choose_unit", "ask_place", "ask_text", "ask_evidence",
        "media_not_now", "already_submitted")} | {"use_buttons_above": "entry_use_buttons", "unsupported_media": "entry_unsupported",
                             "evidence_expects_media": "entry_expects_media", "cancelled": "entry_cancelled"}

    def complete(self, s: ChatSession) -> bool:
        return s.draft is not None and s.draft.channel is not None and s.draft.complete()

    async def review(self, update: Update, context: Context, s: ChatSession, rows: list[list[Button]]) -> None:
        deps = deps_of(context)
        assert s.draft is not None
        await reply(update, context, deps.texts.msg(s.lang, "entry_review", channel=s.draft.channel, draft=s.draft),
                    rows)

    def forget(self, update: Update, context: Context, s: ChatSession) -> None:
        super().forget(update, context, s)
        assert update.effective_user is not None
        store_of(context).drop(update.effective_user.id)

    def store(self, session: Session, update: Update, context: Context, s: ChatSession, draft: Draft,
              new: intake.NewTip, receipt_hash: str) -> tuple[int, int] | None:
        deps = deps_of(context)
        assert update.effective_user is not None
        # The role is checked again: it may have been revoked while the entry was open.
        staff = entry_service.office_member(session, update.effective_user.id)
        if staff is None:
            return None
        tip_id = entry_service.enter(session, deps, new, receipt_hash, deps.clock.now(), staff=staff, via="bot")
        return tip_id, session.get(Tip, tip_id).team_number  # type: ignore[union-attr]

    async def refused(self, update: Update, context: Context, s: ChatSession) -> None:
        await reply(update, context, deps_of(context).texts.msg(s.lang, "entry_refused"))

    def receipt_message(self, deps: Deps, tip_id: int, receipt: receipts.Receipt) -> tuple[str, list[list[Button]]]:
        return deps.texts.msg(receipt.lang, "entry_receipt", code=receipt.code, tip_id=tip_id,
                              channel=receipt.channel, team=receipt.team), []

    async def stale(self, update: Update, context: Context, s: ChatSession) -> None:
        deps = deps_of(context)
        await drop_keyboard(update)
        await reply(update, context, deps.texts.msg(s.lang, "entry_use_buttons"))

    async def cancel(self, update: Update, context: Context, s: ChatSession) -> None:
        deps = deps_of(context)
        assert update.effective_user is not None
        super().forget(update, context, s)
        store_of(context).drop(update.effective_user.id)
        await reply(update, context, deps.texts.msg(s.lang, "entry_cancelled"))


OFFICE = OfficeChannel()
flow.CHANNELS[OFFICE.kind] = OFFICE


# --- commands ------------------------------------------------------------------------------
async def start(update: Update, context: Context) -> None:
    deps = deps_of(context)
    user = update.effective_user
    if user is None:
        return
    lang = person_lang(update, context)
    if not private(update):
        await reply(update, context, deps.texts.msg(lang, "entry_private_only"))
        return
    office_lang = _office_lang(deps, user.id)
    if office_lang is None:
        await reply(update, context, deps.texts.msg(lang, "entry_refused"))
        return
    entry = store_of(context).open(user.id, office_lang)
    await flow.ask_channel(update, context, OFFICE, entry)


async def cancel(update: Update, context: Context) -> None:
    deps = deps_of(context)
    assert update.effective_user is not None
    entry = store_of(context).drop(update.effective_user.id)
    lang = entry.lang if entry else person_lang(update, context)
    await reply(update, context, deps.texts.msg(lang, "entry_cancelled"))


async def leave(update: Update, context: Context) -> None:
    if update.effective_user is not None:
        store_of(context).drop(update.effective_user.id)


async def _current(update: Update, context: Context) -> tuple[ChatSession | None, bool]:
    """The member's open entry; if it had expired, they are told so (and it is gone)."""
    deps = deps_of(context)
    assert update.effective_user is not None
    entry, expired = store_of(context).get(update.effective_user.id)
    if expired:
        lang = _office_lang(deps, update.effective_user.id) or deps.config.campaign.default_language
        await reply(update, context, deps.texts.msg(lang, "entry_expired",
                                                    minutes=deps.config.intake.draft_ttl_minutes))
    return entry, expired


async def on_message(update: Update, context: Context) -> None:
    message = update.effective_message
    if message is None or update.effective_user is None:
        return
    entry, _ = await _current(update, context)
    if entry is None:
        return
    await flow.on_draft_message(update, context, OFFICE, entry, message)


async def on_button(update: Update, context: Context) -> None:
    query = update.callback_query
    assert query is not None and query.data is not None
    deps = deps_of(context)
    payload = deps.keyring.verify(query.data)
    lang = person_lang(update, context)
    if payload is None or not payload.startswith("e:") or not private(update):
        await answer(query, deps.texts.msg(lang, "button_invalid"), alert=True)
        return
    await answer(query)
    action, _, arg = payload[2:].partition(":")
    entry, expired = await _current(update, context)
    if entry is None:
        if action == "submit" and arg and update.effective_user is not None:  # pressed again, or after a crash
            member = ChatSession(lang=_office_lang(deps, update.effective_user.id) or lang)
            if await flow.already_submitted(update, context, OFFICE, member, arg):
                return
        await drop_keyboard(update)
        if not expired:
            await reply(update, context, deps.texts.msg(lang, "entry_stale"))
        return
    handler = flow.BUTTONS.get(action)
    if handler is None:
        await reply(update, context, deps.texts.msg(entry.lang, "button_invalid"))
        return
    await handler(update, context, OFFICE, entry, arg)
