"""Office staff enter a tip received by phone or mail, in their private chat: /enter.

channel → category → unit (paged, or other) → when and where → what was said →
attachments (a scanned letter, ...) → review → submit → the caller's receipt code, shown
once. Only active office members may start or submit. Their state is kept in memory
keyed by their Telegram id (staff are not anonymous); nothing about the caller is asked
for or kept. While an entry is open, the member's messages and /cancel come here rather
than to the citizens' flow (handlers/citizen.py), which is left as it is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from telegram import Message, Update
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bot.clock import Clock
from bot.deps import Deps
from bot.domain.receipt import format_receipt, new_receipt_code
from bot.drafts import Draft
from bot.services import entry as entry_service
from bot.services import intake
from bot.services.outbox import Button
from handlers import evidence as evidence_intake
from handlers.citizen import UNSUPPORTED, answer, drop_keyboard
from handlers.common import (
    Context,
    checked_text,
    deps_of,
    private,
    replace_keyboard,
    reply,
    unit_pages,
    unit_picker,
)
from storage.models import Tip

ALBUM_DEBOUNCE_SECONDS = 0.8
FIELDS = ("channel", "category", "unit", "place", "text", "evidence")


class EntryStep(StrEnum):
    CHANNEL = "channel"
    CATEGORY = "category"
    UNIT = "unit"
    UNIT_OTHER = "unit_other"
    PLACE = "place"
    TEXT = "text"
    EVIDENCE = "evidence"
    REVIEW = "review"


@dataclass
class Entry:
    lang: str
    touched: datetime
    step: EntryStep = EntryStep.CHANNEL
    channel: str | None = None
    draft: Draft = field(default_factory=Draft)
    unit_page: int = 0

    def complete(self) -> bool:
        return self.channel is not None and self.draft.complete()


class EntryStore:
    """Open entries by the office member's Telegram id; forgotten after `ttl` untouched."""

    def __init__(self, ttl: timedelta, clock: Clock) -> None:
        self.ttl, self.clock = ttl, clock
        self._entries: dict[int, Entry] = {}
        self._pending: dict[int, asyncio.Task[None]] = {}

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._entries

    def open(self, user_id: int, lang: str) -> Entry:
        entry = Entry(lang=lang, touched=self.clock.now())
        self._entries[user_id] = entry
        return entry

    def get(self, user_id: int) -> tuple[Entry | None, bool]:
        """The member's open entry (touched), and whether one had expired (and is gone)."""
        entry = self._entries.get(user_id)
        now = self.clock.now()
        if entry is not None and now - entry.touched > self.ttl:
            self.drop(user_id)
            return None, True
        if entry is not None:
            entry.touched = now
        return entry, False

    def drop(self, user_id: int) -> Entry | None:
        task = self._pending.pop(user_id, None)
        if task is not None:
            task.cancel()
        return self._entries.pop(user_id, None)

    def sweep(self) -> int:
        now = self.clock.now()
        stale = [uid for uid, e in self._entries.items() if now - e.touched > self.ttl]
        for uid in stale:
            self.drop(uid)
        return len(stale)

    def later(self, user_id: int, send: Any) -> None:
        """Answer an album once, when its messages stop coming."""
        old = self._pending.pop(user_id, None)
        if old is not None:
            old.cancel()

        async def run() -> None:
            await asyncio.sleep(ALBUM_DEBOUNCE_SECONDS)
            self._pending.pop(user_id, None)
            await send()

        self._pending[user_id] = asyncio.get_running_loop().create_task(run())


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


def b(deps: Deps, lang: str, name: str, payload: str, /, **kw: object) -> Button:
    return Button(deps.texts.button(lang, name, **kw), deps.keyring.sign(f"e:{payload}"))


def _office_lang(deps: Deps, user_id: int) -> str | None:
    """The office member's language, or None if the user is not an active office member."""
    with deps.sessions.begin() as session:
        staff = entry_service.office_member(session, user_id)
        return staff.language if staff is not None else None


# --- commands ------------------------------------------------------------------------------
async def start(update: Update, context: Context) -> None:
    deps = deps_of(context)
    user = update.effective_user
    lang = deps.config.campaign.default_language
    if user is None:
        return
    if not private(update):
        await reply(update, context, deps.texts.msg(lang, "entry_private_only"))
        return
    office_lang = _office_lang(deps, user.id)
    if office_lang is None:
        await reply(update, context, deps.texts.msg(lang, "entry_refused"))
        return
    entry = store_of(context).open(user.id, office_lang)
    await ask_channel(update, context, entry)


async def cancel(update: Update, context: Context) -> None:
    deps = deps_of(context)
    assert update.effective_user is not None
    entry = store_of(context).drop(update.effective_user.id)
    lang = entry.lang if entry else deps.config.campaign.default_language
    await reply(update, context, deps.texts.msg(lang, "entry_cancelled"))


async def leave(update: Update, context: Context) -> None:
    if update.effective_user is not None:
        store_of(context).drop(update.effective_user.id)


async def _current(update: Update, context: Context) -> tuple[Entry | None, bool]:
    """The member's open entry; if it had expired, they are told so (and it is gone)."""
    deps = deps_of(context)
    assert update.effective_user is not None
    entry, expired = store_of(context).get(update.effective_user.id)
    if expired:
        lang = _office_lang(deps, update.effective_user.id) or deps.config.campaign.default_language
        await reply(update, context, deps.texts.msg(lang, "entry_expired",
                                                    minutes=deps.config.intake.draft_ttl_minutes))
    return entry, expired


# --- messages ------------------------------------------------------------------------------
async def on_message(update: Update, context: Context) -> None:
    message = update.effective_message
    if message is None or update.effective_user is None:
        return
    entry, _ = await _current(update, context)
    if entry is None:
        return
    deps = deps_of(context)
    lang = entry.lang
    unsupported = next((kind for kind in UNSUPPORTED if getattr(message, kind, None)), None)
    if unsupported is not None:
        await reply(update, context, deps.texts.msg(lang, "entry_unsupported", kind=unsupported))
        return
    incoming = evidence_intake.incoming_of(message)
    if incoming is not None:
        if entry.step is EntryStep.EVIDENCE:
            await add_evidence(update, context, entry, incoming)
        else:
            await reply(update, context, deps.texts.msg(lang, "entry_media_not_now"))
        return
    if message.text is None:
        await reply(update, context, deps.texts.msg(lang, "entry_unsupported", kind="other"))
        return
    cfg = deps.config.intake
    if entry.step is EntryStep.UNIT_OTHER:
        await take_text(update, context, entry, message.text, "unit_other", cfg.other_unit_max_chars, 1)
    elif entry.step is EntryStep.PLACE:
        await take_text(update, context, entry, message.text, "place", cfg.place_max_chars, 1)
    elif entry.step is EntryStep.TEXT:
        await take_text(update, context, entry, message.text, "text", cfg.text_max_chars, cfg.text_min_chars)
    elif entry.step is EntryStep.EVIDENCE:
        await reply(update, context, deps.texts.msg(lang, "entry_expects_media"), evidence_buttons(deps, entry))
    else:
        await reply(update, context, deps.texts.msg(lang, "entry_use_buttons"))


async def take_text(update: Update, context: Context, entry: Entry, text: str, name: str, maximum: int,
                    minimum: int) -> None:
    value = await checked_text(update, context, entry.lang, text, maximum, minimum)
    if value is None:
        return
    setattr(entry.draft, name, value)
    if entry.draft.editing and entry.complete():
        await show_review(update, context, entry)
    elif name == "unit_other":
        await ask_place(update, context, entry)
    elif name == "place":
        await ask_text(update, context, entry)
    else:
        await ask_evidence(update, context, entry)


async def add_evidence(update: Update, context: Context, entry: Entry, incoming: evidence_intake.Incoming) -> None:
    deps = deps_of(context)
    assert update.effective_user is not None
    limit = deps.config.intake.max_evidence
    if len(entry.draft.evidence) >= limit:
        await reply(update, context, deps.texts.msg(entry.lang, "evidence_full", limit=limit),
                    evidence_buttons(deps, entry))
        return
    # Cleaned (or found uncleanable) before it is taken, like a citizen's evidence.
    item = await evidence_intake.accept(update, context, entry.lang, incoming, len(entry.draft.evidence) + 1,
                                        lambda label, payload: b(deps, entry.lang, label, payload))
    if item is None or entry.step is not EntryStep.EVIDENCE or update.effective_user.id not in store_of(context):
        return
    entry.draft.evidence.append(item)
    store_of(context).later(update.effective_user.id, lambda: reply(
        update, context,
        deps.texts.msg(entry.lang, "evidence_received", count=len(entry.draft.evidence), limit=limit),
        evidence_buttons(deps, entry) if entry.step is EntryStep.EVIDENCE else None,
    ))


# --- the steps -----------------------------------------------------------------------------
async def ask_channel(update: Update, context: Context, entry: Entry) -> None:
    deps = deps_of(context)
    entry.step = EntryStep.CHANNEL
    rows = [[b(deps, entry.lang, "entry_phone", "ch:phone"), b(deps, entry.lang, "entry_mail", "ch:mail")],
            [b(deps, entry.lang, "cancel", "cancel")]]
    await reply(update, context, deps.texts.msg(entry.lang, "entry_choose_channel"), rows)


async def ask_category(update: Update, context: Context, entry: Entry) -> None:
    deps = deps_of(context)
    entry.step = EntryStep.CATEGORY
    rows = [[b(deps, entry.lang, "category", f"cat:{c.key}", name=c.name.get(entry.lang))]
            for c in deps.config.categories]
    await reply(update, context, deps.texts.msg(entry.lang, "entry_choose_category"), rows)


def unit_rows(deps: Deps, entry: Entry) -> list[list[Button]]:
    rows, entry.unit_page = unit_picker(deps, entry.lang, entry.unit_page,
                                        lambda *a, **kw: b(deps, entry.lang, *a, **kw))
    return rows


async def ask_unit(update: Update, context: Context, entry: Entry) -> None:
    deps = deps_of(context)
    entry.step = EntryStep.UNIT
    entry.unit_page = 0
    await reply(update, context, deps.texts.msg(entry.lang, "entry_choose_unit", pages=unit_pages(deps)),
                unit_rows(deps, entry))


async def ask_place(update: Update, context: Context, entry: Entry) -> None:
    deps = deps_of(context)
    entry.step = EntryStep.PLACE
    await reply(update, context, deps.texts.msg(entry.lang, "entry_ask_place",
                                                limit=deps.config.intake.place_max_chars))


async def ask_text(update: Update, context: Context, entry: Entry) -> None:
    deps = deps_of(context)
    entry.step = EntryStep.TEXT
    cfg = deps.config.intake
    await reply(update, context, deps.texts.msg(entry.lang, "entry_ask_text", minimum=cfg.text_min_chars,
                                                limit=cfg.text_max_chars))


def evidence_buttons(deps: Deps, entry: Entry) -> list[list[Button]]:
    return [[b(deps, entry.lang, "evidence_done" if entry.draft.evidence else "evidence_skip", "evdone")]]


async def ask_evidence(update: Update, context: Context, entry: Entry) -> None:
    deps = deps_of(context)
    if deps.config.intake.max_evidence == 0:
        await show_review(update, context, entry)
        return
    entry.step = EntryStep.EVIDENCE
    prompt = deps.texts.msg(entry.lang, "entry_ask_evidence", limit=deps.config.intake.max_evidence)
    await reply(update, context, f"{prompt}\n\n{evidence_intake.notice(context, entry.lang)}",
                evidence_buttons(deps, entry))


async def show_review(update: Update, context: Context, entry: Entry) -> None:
    deps = deps_of(context)
    entry.step = EntryStep.REVIEW
    entry.draft.editing = False
    rows = [
        [b(deps, entry.lang, "submit", "submit")],
        [b(deps, entry.lang, "edit", "edit"), b(deps, entry.lang, "cancel", "cancel")],
    ]
    await reply(update, context, deps.texts.msg(entry.lang, "entry_review", channel=entry.channel,
                                                draft=entry.draft), rows)


# --- buttons -------------------------------------------------------------------------------
async def on_button(update: Update, context: Context) -> None:
    query = update.callback_query
    assert query is not None and query.data is not None
    deps = deps_of(context)
    payload = deps.keyring.verify(query.data)
    lang = deps.config.campaign.default_language
    if payload is None or not payload.startswith("e:") or not private(update):
        await answer(query, deps.texts.msg(lang, "button_invalid"), alert=True)
        return
    await answer(query)
    entry, expired = await _current(update, context)
    if entry is None:
        await drop_keyboard(update)
        if not expired:
            await reply(update, context, deps.texts.msg(lang, "entry_stale"))
        return
    action, _, arg = payload[2:].partition(":")
    handler = BUTTONS.get(action)
    if handler is None:
        await reply(update, context, deps.texts.msg(entry.lang, "button_invalid"))
        return
    await handler(update, context, entry, arg)


async def _stale(update: Update, context: Context, entry: Entry) -> None:
    deps = deps_of(context)
    await drop_keyboard(update)
    await reply(update, context, deps.texts.msg(entry.lang, "entry_use_buttons"))


async def btn_channel(update: Update, context: Context, entry: Entry, arg: str) -> None:
    deps = deps_of(context)
    if entry.step is not EntryStep.CHANNEL or arg not in entry_service.CHANNELS:
        await _stale(update, context, entry)
        return
    entry.channel = arg
    await drop_keyboard(update)
    label = deps.texts.button(entry.lang, f"entry_{arg}")
    await reply(update, context, deps.texts.msg(entry.lang, "chosen", value=label))
    if entry.draft.editing and entry.complete():
        await show_review(update, context, entry)
    else:
        await ask_category(update, context, entry)


async def btn_category(update: Update, context: Context, entry: Entry, arg: str) -> None:
    deps = deps_of(context)
    if entry.step is not EntryStep.CATEGORY or arg not in {c.key for c in deps.config.categories}:
        await _stale(update, context, entry)
        return
    entry.draft.category = arg
    await drop_keyboard(update)
    await reply(update, context, deps.texts.msg(entry.lang, "chosen",
                                                value=deps.texts.category_name(arg, entry.lang)))
    if entry.draft.editing and entry.complete():
        await show_review(update, context, entry)
    else:
        await ask_unit(update, context, entry)


async def btn_unit_page(update: Update, context: Context, entry: Entry, arg: str) -> None:
    deps = deps_of(context)
    if entry.step is not EntryStep.UNIT or not arg.isdigit():
        await _stale(update, context, entry)
        return
    entry.unit_page = int(arg)
    await replace_keyboard(update, unit_rows(deps, entry))


async def btn_unit(update: Update, context: Context, entry: Entry, arg: str) -> None:
    deps = deps_of(context)
    if entry.step is not EntryStep.UNIT or (arg != "other" and deps.config.unit(arg) is None):
        await _stale(update, context, entry)
        return
    await drop_keyboard(update)
    if arg == "other":
        entry.draft.unit = "other"
        entry.step = EntryStep.UNIT_OTHER
        await reply(update, context, deps.texts.msg(entry.lang, "ask_other_unit",
                                                    limit=deps.config.intake.other_unit_max_chars))
        return
    entry.draft.unit, entry.draft.unit_other = arg, None
    await reply(update, context, deps.texts.msg(entry.lang, "chosen", value=deps.texts.unit_name(arg, entry.lang)))
    if entry.draft.editing and entry.complete():
        await show_review(update, context, entry)
    else:
        await ask_place(update, context, entry)


async def btn_evidence_done(update: Update, context: Context, entry: Entry, _arg: str) -> None:
    if entry.step is not EntryStep.EVIDENCE:
        await _stale(update, context, entry)
        return
    await drop_keyboard(update)
    await show_review(update, context, entry)


async def btn_edit(update: Update, context: Context, entry: Entry, arg: str) -> None:
    deps = deps_of(context)
    if entry.step is not EntryStep.REVIEW:
        await _stale(update, context, entry)
        return
    await drop_keyboard(update)
    if not arg:
        rows = [[b(deps, entry.lang, f"edit_{f}", f"edit:{f}")] for f in FIELDS]
        rows.append([b(deps, entry.lang, "back", "review")])
        await reply(update, context, deps.texts.msg(entry.lang, "edit_which"), rows)
        return
    entry.draft.editing = True
    ask = {"channel": ask_channel, "category": ask_category, "unit": ask_unit, "place": ask_place,
           "text": ask_text}.get(arg)
    if ask is not None:
        await ask(update, context, entry)
    elif arg == "evidence":
        entry.draft.evidence.clear()
        entry.draft.editing = False
        await ask_evidence(update, context, entry)
    else:
        await reply(update, context, deps.texts.msg(entry.lang, "button_invalid"))


async def btn_review(update: Update, context: Context, entry: Entry, _arg: str) -> None:
    if entry.step is not EntryStep.REVIEW:
        await _stale(update, context, entry)
        return
    await drop_keyboard(update)
    await show_review(update, context, entry)


async def btn_cancel(update: Update, context: Context, entry: Entry, _arg: str) -> None:
    deps = deps_of(context)
    assert update.effective_user is not None
    await drop_keyboard(update)
    store_of(context).drop(update.effective_user.id)
    await reply(update, context, deps.texts.msg(entry.lang, "entry_cancelled"))


async def btn_submit(update: Update, context: Context, entry: Entry, _arg: str) -> None:
    deps = deps_of(context)
    user = update.effective_user
    assert user is not None
    if entry.step is not EntryStep.REVIEW or not entry.complete() or entry.channel is None:
        await _stale(update, context, entry)
        return
    await drop_keyboard(update)
    store_of(context).drop(user.id)  # a second press finds nothing to submit
    draft = entry.draft
    new = intake.NewTip(
        category=draft.category or "", unit=draft.unit or "", unit_other=draft.unit_other,
        place=draft.place or "", text=draft.text or "", evidence=tuple(draft.evidence), channel=entry.channel,
    )
    code = new_receipt_code()
    digest = await asyncio.to_thread(deps.keyring.receipt_hash, code)
    # Committed before the code is shown. The role is checked again: it may have been revoked.
    with deps.sessions.begin() as session:
        staff = entry_service.office_member(session, user.id)
        if staff is None:
            tip_id = None
        else:
            tip_id = entry_service.enter(session, deps, new, digest, deps.clock.now(), staff=staff, via="bot")
            team = session.get(Tip, tip_id).team_number  # type: ignore[union-attr]
    if tip_id is None:
        await reply(update, context, deps.texts.msg(entry.lang, "entry_refused"))
        return
    deps.nudge_sender()
    await reply(update, context, deps.texts.msg(entry.lang, "entry_receipt", code=format_receipt(code), tip_id=tip_id,
                                                channel=entry.channel, team=team), protect=True)


async def btn_withdraw(update: Update, context: Context, entry: Entry, arg: str) -> None:
    deps = deps_of(context)
    await drop_keyboard(update)
    gone = evidence_intake.withdraw(entry.draft.evidence, arg)
    await reply(update, context, deps.texts.msg(entry.lang, "evidence_withdrawn" if gone else "evidence_withdraw_gone"))
    if gone and entry.step is EntryStep.REVIEW:  # the review on screen counted it: show it again
        await show_review(update, context, entry)


async def btn_keep(update: Update, context: Context, entry: Entry, arg: str) -> None:
    deps = deps_of(context)
    await drop_keyboard(update)
    kept = any(i.token == arg for i in entry.draft.evidence if i.token)
    await reply(update, context, deps.texts.msg(entry.lang, "evidence_kept" if kept else "evidence_withdraw_gone"))


BUTTONS = {
    "wd": btn_withdraw,
    "keep": btn_keep,
    "ch": btn_channel,
    "cat": btn_category,
    "upage": btn_unit_page,
    "unit": btn_unit,
    "evdone": btn_evidence_done,
    "edit": btn_edit,
    "review": btn_review,
    "cancel": btn_cancel,
    "submit": btn_submit,
}
