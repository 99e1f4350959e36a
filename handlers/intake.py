"""One intake flow for both channels: a citizen's private chat and the office's /enter.

category → unit (paged, or other) → when and where → what happened → evidence →
review → submit; the office's flow starts with the channel (phone or mail). The steps,
the checks and the buttons live here once; a `Channel` says what differs: the callback
prefix, the messages' names, the review, how a tip is stored, the receipt, and what a
stale button or a cancel does. handlers/citizen.py and handlers/entry.py hold the rest
of each chat (the citizen's menu and receipt codes; the office's /enter and its store).

Evidence reaches a draft or an addition through one call, `accept_evidence` (cleaned of
hidden information by handlers/evidence.py, or kept after a warning with Withdraw).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from telegram import Bot, CallbackQuery, Message, Update
from telegram.error import BadRequest, Forbidden, TelegramError

from bot import jobs
from bot.conversations import ConversationStore
from bot.deps import Deps
from bot.domain.receipt import format_receipt, new_receipt_code
from bot.domain.text import normalise_opt
from bot.drafts import ChatSession, Draft, EvidenceItem, Step
from bot.services import intake, receipts
from bot.services.outbox import Button
from bot.splitting import TELEGRAM_TEXT_LIMIT
from handlers import evidence as evidence_intake
from handlers.common import (NO_PREVIEW_JSON, Context, checked_text, deps_of, post, replace_keyboard, reply, send,
                             unit_pages, unit_picker)

log = logging.getLogger(__name__)

ALBUM_DEBOUNCE_SECONDS = 0.8
UNSUPPORTED = ("sticker", "location", "venue", "contact", "poll", "dice", "game", "video_note", "animation", "story")
DRAFT_STEPS = (Step.CHANNEL, Step.CATEGORY, Step.UNIT, Step.UNIT_OTHER, Step.PLACE, Step.TEXT, Step.EVIDENCE,
               Step.REVIEW)


class Channel:
    """What differs between the citizen's chat and the office's entry."""

    prefix = ""  # callback data prefix
    kind = ""  # the receipt's kind: citizen | office
    conversation = ""  # the kind its draft is kept as (bot/conversations.py)
    fields: tuple[str, ...] = ("category", "unit", "place", "text", "evidence")  # editable, in order
    messages: dict[str, str] = {}  # the flow's message name -> this channel's macro

    def msg(self, deps: Deps, s: ChatSession, name: str, /, **kw: object) -> str:
        return deps.texts.msg(s.lang, self.messages.get(name, name), **kw)

    def button(self, deps: Deps, lang: str, name: str, payload: str, /, **kw: object) -> Button:
        return Button(deps.texts.button(lang, name, **kw), deps.keyring.sign(f"{self.prefix}:{payload}"))

    def complete(self, s: ChatSession) -> bool:
        return s.draft is not None and s.draft.complete()

    async def review(self, update: Update, context: Context, s: ChatSession, rows: list[list[Button]]) -> None:
        raise NotImplementedError

    def store(self, session: Session, update: Update, context: Context, s: ChatSession, draft: Draft,
              new: intake.NewTip, receipt_hash: str) -> tuple[int, int] | None:
        """Store the tip in the caller's transaction: (its number, its team), or None if
        this person may not (the person is then told by `refused`)."""
        raise NotImplementedError

    async def refused(self, update: Update, context: Context, s: ChatSession) -> None:
        raise NotImplementedError

    def receipt_message(self, deps: Deps, tip_id: int, receipt: receipts.Receipt) -> tuple[str, list[list[Button]]]:
        raise NotImplementedError

    async def stale(self, update: Update, context: Context, s: ChatSession) -> None:
        """A button of a step that is over."""
        raise NotImplementedError

    async def cancel(self, update: Update, context: Context, s: ChatSession) -> None:
        raise NotImplementedError

    def forget(self, update: Update, context: Context, s: ChatSession) -> None:
        """The draft is done with (submitted): a second press finds nothing to submit."""
        s.step = Step.IDLE
        s.draft = None


# --- evidence ----------------------------------------------------------------------------------
def evidence_of(message: Message) -> EvidenceItem | None:
    caption = normalise_opt(message.caption)
    if message.photo:
        return EvidenceItem("photo", message.photo[-1].file_id, caption)
    for kind in ("video", "voice", "audio", "document"):
        media = getattr(message, kind, None)
        if media is not None:
            return EvidenceItem(kind, media.file_id, caption)
    return None


async def accept_evidence(update: Update, context: Context, ch: Channel, s: ChatSession,
                          incoming: evidence_intake.Incoming, number: int) -> EvidenceItem | None:
    """The one place where a file a person sent becomes evidence (of a draft or of an
    addition to a tip): cleaned, or kept after a warning (handlers/evidence.py). Returns
    the item to keep, or None if it cannot be taken (the person has been told)."""
    deps = deps_of(context)
    incoming = dataclasses.replace(incoming, caption=normalise_opt(incoming.caption))
    return await evidence_intake.accept(update, context, s.lang, incoming, number,
                                        lambda label, payload: ch.button(deps, s.lang, label, payload))


def unsupported_kind(message: Message) -> str | None:
    return next((kind for kind in UNSUPPORTED if getattr(message, kind, None)), None)


# --- debounced answers ----------------------------------------------------------------------------
def debounce(s: ChatSession, send: Callable[[], Awaitable[None]]) -> None:
    """An album arrives as several messages: answer once, when they stop coming."""
    if s.pending_ack is not None:
        s.pending_ack.cancel()

    async def later() -> None:
        await asyncio.sleep(ALBUM_DEBOUNCE_SECONDS)
        s.pending_ack = None
        await send()

    s.pending_ack = asyncio.get_running_loop().create_task(later())


def cancel_pending(s: ChatSession) -> None:
    if s.pending_ack is not None:
        s.pending_ack.cancel()
        s.pending_ack = None


# --- messages in a draft step --------------------------------------------------------------------
async def on_draft_message(update: Update, context: Context, ch: Channel, s: ChatSession, message: Message) -> None:
    """A message while a draft is open (s.step in DRAFT_STEPS)."""
    deps = deps_of(context)
    kind = unsupported_kind(message)
    if kind is not None:
        await reply(update, context, ch.msg(deps, s, "unsupported_media", kind=kind))
        return
    incoming = evidence_intake.incoming_of(message)
    if incoming is not None:
        if s.step is Step.EVIDENCE:
            await add_evidence(update, context, ch, s, incoming)
        else:
            await reply(update, context, ch.msg(deps, s, "media_not_now"))
        return
    text = message.text
    if text is None:
        await reply(update, context, ch.msg(deps, s, "unsupported_media", kind="other"))
        return
    cfg = deps.config.intake
    if s.step is Step.UNIT_OTHER:
        await take_text(update, context, ch, s, text, "unit_other", cfg.other_unit_max_chars, 1)
    elif s.step is Step.PLACE:
        await take_text(update, context, ch, s, text, "place", cfg.place_max_chars, 1)
    elif s.step is Step.TEXT:
        await take_text(update, context, ch, s, text, "text", cfg.text_max_chars, cfg.text_min_chars)
    elif s.step is Step.EVIDENCE:
        await reply(update, context, ch.msg(deps, s, "evidence_expects_media"), evidence_buttons(deps, ch, s))
    else:  # CHANNEL, CATEGORY, UNIT, REVIEW: a choice is expected
        await reply(update, context, ch.msg(deps, s, "use_buttons_above"))


async def take_text(update: Update, context: Context, ch: Channel, s: ChatSession, text: str, field: str,
                    maximum: int, minimum: int) -> None:
    value = await checked_text(update, context, s.lang, text, maximum, minimum)
    if value is None:
        return
    draft = s.draft = s.draft or Draft()
    setattr(draft, field, value)
    if draft.editing and ch.complete(s):
        await show_review(update, context, ch, s)
    elif field == "unit_other":
        await ask_place(update, context, ch, s)
    elif field == "place":
        await ask_text(update, context, ch, s)
    else:
        await ask_evidence(update, context, ch, s)


async def add_evidence(update: Update, context: Context, ch: Channel, s: ChatSession,
                       incoming: evidence_intake.Incoming) -> None:
    deps = deps_of(context)
    draft = s.draft
    assert draft is not None
    limit = deps.config.intake.max_evidence
    if len(draft.evidence) >= limit:
        await reply(update, context, ch.msg(deps, s, "evidence_full", limit=limit), evidence_buttons(deps, ch, s))
        return
    # Cleaned (or found uncleanable) before it is taken; the clean copy is shown to the person.
    kept = await accept_evidence(update, context, ch, s, incoming, len(draft.evidence) + 1)
    if kept is None or s.draft is not draft or s.step is not Step.EVIDENCE:
        return
    draft.evidence.append(kept)
    debounce(s, lambda: reply(
        update, context,
        ch.msg(deps, s, "evidence_received", count=len(s.draft.evidence) if s.draft else 0, limit=limit),
        evidence_buttons(deps, ch, s) if s.step is Step.EVIDENCE else None,
    ))


# --- the steps -----------------------------------------------------------------------------------
async def ask_channel(update: Update, context: Context, ch: Channel, s: ChatSession) -> None:
    deps = deps_of(context)
    s.step = Step.CHANNEL
    rows = [[ch.button(deps, s.lang, "entry_phone", "ch:phone"), ch.button(deps, s.lang, "entry_mail", "ch:mail")],
            [ch.button(deps, s.lang, "cancel", "cancel")]]
    await reply(update, context, ch.msg(deps, s, "choose_channel"), rows)


async def ask_category(update: Update, context: Context, ch: Channel, s: ChatSession) -> None:
    deps = deps_of(context)
    s.step = Step.CATEGORY
    rows = [[ch.button(deps, s.lang, "category", f"cat:{c.key}", name=c.name.get(s.lang))]
            for c in deps.config.categories]
    await reply(update, context, ch.msg(deps, s, "choose_category"), rows)


def unit_rows(deps: Deps, ch: Channel, s: ChatSession) -> list[list[Button]]:
    rows, s.unit_page = unit_picker(deps, s.lang, s.unit_page, lambda *a, **kw: ch.button(deps, s.lang, *a, **kw))
    return rows


async def ask_unit(update: Update, context: Context, ch: Channel, s: ChatSession) -> None:
    deps = deps_of(context)
    s.step = Step.UNIT
    s.unit_page = 0
    await reply(update, context, ch.msg(deps, s, "choose_unit", pages=unit_pages(deps)), unit_rows(deps, ch, s))


async def ask_place(update: Update, context: Context, ch: Channel, s: ChatSession) -> None:
    deps = deps_of(context)
    s.step = Step.PLACE
    await reply(update, context, ch.msg(deps, s, "ask_place", limit=deps.config.intake.place_max_chars))


async def ask_text(update: Update, context: Context, ch: Channel, s: ChatSession) -> None:
    deps = deps_of(context)
    s.step = Step.TEXT
    cfg = deps.config.intake
    await reply(update, context, ch.msg(deps, s, "ask_text", minimum=cfg.text_min_chars, limit=cfg.text_max_chars))


def evidence_buttons(deps: Deps, ch: Channel, s: ChatSession) -> list[list[Button]]:
    count = len(s.draft.evidence) if s.draft else 0
    return [[ch.button(deps, s.lang, "evidence_done" if count else "evidence_skip", "evdone")]]


async def ask_evidence(update: Update, context: Context, ch: Channel, s: ChatSession) -> None:
    deps = deps_of(context)
    if deps.config.intake.max_evidence == 0:
        await show_review(update, context, ch, s)
        return
    s.step = Step.EVIDENCE
    prompt = ch.msg(deps, s, "ask_evidence", limit=deps.config.intake.max_evidence)
    await reply(update, context, f"{prompt}\n\n{evidence_intake.notice(context, s.lang)}",
                evidence_buttons(deps, ch, s))


async def show_review(update: Update, context: Context, ch: Channel, s: ChatSession) -> None:
    deps = deps_of(context)
    assert s.draft is not None
    s.step = Step.REVIEW
    s.draft.editing = False
    rows = [
        [ch.button(deps, s.lang, "submit", f"submit:{s.draft.nonce}")],
        [ch.button(deps, s.lang, "edit", "edit"), ch.button(deps, s.lang, "cancel", "cancel")],
    ]
    await ch.review(update, context, s, rows)


# --- buttons ---------------------------------------------------------------------------------------
async def answer(query: CallbackQuery, text: str | None = None, alert: bool = False) -> None:
    # An answer after a restart may be "too old": harmless, the action still runs.
    with contextlib.suppress(BadRequest):
        await post(query.get_bot(), "answerCallbackQuery",
                   {"callback_query_id": query.id, "text": text, "show_alert": alert})


async def drop_keyboard(update: Update) -> None:
    query = update.callback_query
    if query is not None and query.message is not None:
        with contextlib.suppress(BadRequest):
            await post(query.get_bot(), "editMessageReplyMarkup",
                       {"chat_id": query.message.chat.id, "message_id": query.message.message_id})


async def settle(update: Update, context: Context, question: str, chosen: str) -> None:
    """The pressed step's message shows the answer under its question, its buttons gone: one
    edit, where a dropped keyboard and a message "Chosen: ..." were two calls and one more
    message in the chat. The question is rendered again (the journal keeps no formatting).
    If the message cannot be edited (deleted, too old), the answer comes as a message."""
    query = update.callback_query
    text = f"{question}\n\n{chosen}"
    if query is not None and query.message is not None and len(text) <= TELEGRAM_TEXT_LIMIT:
        try:
            await post(query.get_bot(), "editMessageText", {
                "chat_id": query.message.chat.id, "message_id": query.message.message_id, "text": text,
                "parse_mode": "HTML", "link_preview_options": NO_PREVIEW_JSON})
            return
        except BadRequest:
            await drop_keyboard(update)
    await reply(update, context, chosen)


def _draft(s: ChatSession, *steps: Step) -> Draft | None:
    """The open draft if the session is at one of `steps`."""
    return s.draft if s.step in steps else None


async def btn_channel(update: Update, context: Context, ch: Channel, s: ChatSession, arg: str) -> None:
    deps = deps_of(context)
    draft = _draft(s, Step.CHANNEL)
    if draft is None or arg not in ("phone", "mail"):
        await ch.stale(update, context, s)
        return
    draft.channel = arg
    await settle(update, context, ch.msg(deps, s, "choose_channel"),
                 ch.msg(deps, s, "chosen", value=deps.texts.button(s.lang, f"entry_{arg}")))
    if draft.editing and ch.complete(s):
        await show_review(update, context, ch, s)
    else:
        await ask_category(update, context, ch, s)


async def btn_category(update: Update, context: Context, ch: Channel, s: ChatSession, arg: str) -> None:
    deps = deps_of(context)
    draft = _draft(s, Step.CATEGORY)
    if draft is None:
        await ch.stale(update, context, s)
        return
    if arg not in {c.key for c in deps.config.categories}:
        await reply(update, context, ch.msg(deps, s, "button_invalid"))
        return
    draft.category = arg
    await settle(update, context, ch.msg(deps, s, "choose_category"),
                 ch.msg(deps, s, "chosen", value=deps.texts.category_name(arg, s.lang)))
    if draft.editing and ch.complete(s):
        await show_review(update, context, ch, s)
    else:
        await ask_unit(update, context, ch, s)


async def btn_unit_page(update: Update, context: Context, ch: Channel, s: ChatSession, arg: str) -> None:
    deps = deps_of(context)
    if _draft(s, Step.UNIT) is None or not arg.isdigit():
        await ch.stale(update, context, s)
        return
    s.unit_page = int(arg)
    await replace_keyboard(update, unit_rows(deps, ch, s))


async def btn_unit(update: Update, context: Context, ch: Channel, s: ChatSession, arg: str) -> None:
    deps = deps_of(context)
    draft = _draft(s, Step.UNIT)
    if draft is None:
        await ch.stale(update, context, s)
        return
    if arg != "other" and deps.config.unit(arg) is None:
        await reply(update, context, ch.msg(deps, s, "button_invalid"))
        return
    if arg == "other":
        await drop_keyboard(update)
        draft.unit = "other"
        s.step = Step.UNIT_OTHER
        await reply(update, context, ch.msg(deps, s, "ask_other_unit", limit=deps.config.intake.other_unit_max_chars))
        return
    draft.unit, draft.unit_other = arg, None
    await settle(update, context, ch.msg(deps, s, "choose_unit", pages=unit_pages(deps)),
                 ch.msg(deps, s, "chosen", value=deps.texts.unit_name(arg, s.lang)))
    if draft.editing and ch.complete(s):
        await show_review(update, context, ch, s)
    else:
        await ask_place(update, context, ch, s)


async def btn_evidence_done(update: Update, context: Context, ch: Channel, s: ChatSession, _arg: str) -> None:
    if _draft(s, Step.EVIDENCE) is None:
        await ch.stale(update, context, s)
        return
    await drop_keyboard(update)
    await show_review(update, context, ch, s)


async def btn_edit(update: Update, context: Context, ch: Channel, s: ChatSession, arg: str) -> None:
    deps = deps_of(context)
    draft = _draft(s, Step.REVIEW)
    if draft is None:
        await ch.stale(update, context, s)
        return
    await drop_keyboard(update)
    if not arg:
        rows = [[ch.button(deps, s.lang, f"edit_{f}", f"edit:{f}")] for f in ch.fields]
        rows.append([ch.button(deps, s.lang, "back", "review")])
        await reply(update, context, ch.msg(deps, s, "edit_which"), rows)
        return
    if arg not in ch.fields:
        await reply(update, context, ch.msg(deps, s, "button_invalid"))
        return
    draft.editing = True
    if arg == "evidence":
        draft.evidence.clear()
        draft.editing = False
        await ask_evidence(update, context, ch, s)
        return
    ask = {"channel": ask_channel, "category": ask_category, "unit": ask_unit, "place": ask_place,
           "text": ask_text}[arg]
    await ask(update, context, ch, s)


async def btn_review(update: Update, context: Context, ch: Channel, s: ChatSession, _arg: str) -> None:
    if _draft(s, Step.REVIEW) is None:
        await ch.stale(update, context, s)
        return
    await drop_keyboard(update)
    await show_review(update, context, ch, s)


async def btn_withdraw(update: Update, context: Context, ch: Channel, s: ChatSession, arg: str) -> None:
    """Withdraw a file that could not be cleaned, before it is sent (from the draft or the
    addition being written)."""
    deps = deps_of(context)
    await drop_keyboard(update)
    gone = evidence_intake.withdraw(s.draft.evidence, arg) if s.draft is not None else False
    gone = evidence_intake.withdraw(s.addition_evidence, arg) or gone
    await reply(update, context, ch.msg(deps, s, "evidence_withdrawn" if gone else "evidence_withdraw_gone"))
    if gone and s.step is Step.REVIEW and s.draft is not None:  # the review on screen counted it: show it again
        await show_review(update, context, ch, s)


async def btn_keep(update: Update, context: Context, ch: Channel, s: ChatSession, arg: str) -> None:
    """Keep, knowingly, a file that could not be cleaned."""
    deps = deps_of(context)
    await drop_keyboard(update)
    items = [*(s.draft.evidence if s.draft else []), *s.addition_evidence]
    kept = any(i.token == arg for i in items if i.token)
    await reply(update, context, ch.msg(deps, s, "evidence_kept" if kept else "evidence_withdraw_gone"))


async def btn_cancel(update: Update, context: Context, ch: Channel, s: ChatSession, _arg: str) -> None:
    await drop_keyboard(update)
    await ch.cancel(update, context, s)


async def btn_submit(update: Update, context: Context, ch: Channel, s: ChatSession, nonce: str) -> None:
    """Submit: the tip and its pending receipt are committed, then the receipt is sent.
    The button carries the draft's random token: a second press, or this press handled
    again after a crash, finds the tip it made and answers with its receipt (or says the
    tip is in), never "expired, start again"."""
    deps = deps_of(context)
    draft = _draft(s, Step.REVIEW)
    if draft is None or not ch.complete(s) or (nonce and nonce != draft.nonce):
        if not (nonce and await already_submitted(update, context, ch, s, nonce)):
            await ch.stale(update, context, s)
        return
    await drop_keyboard(update)
    ch.forget(update, context, s)  # a second press finds nothing to submit
    code = new_receipt_code()
    digest = await deps.receipt_hash(code)
    new = intake.NewTip(
        category=draft.category or "", unit=draft.unit or "", unit_other=draft.unit_other,
        place=draft.place or "", text=draft.text or "", evidence=tuple(draft.evidence),
        channel=draft.channel or "telegram", submit_key=receipts.submit_key(deps, draft.nonce),
    )
    chat = update.effective_chat
    assert chat is not None
    now = deps.clock.now()

    def commit() -> tuple[int, receipts.Receipt] | None:
        # Committed before the person hears of it; the receipt is kept until it has been sent.
        with deps.sessions.begin() as session:
            stored = ch.store(session, update, context, s, draft, new, digest)
            # The draft goes with the tip it became: a restart after this commit finds no draft.
            ConversationStore.erase(session, ch.conversation, deps.keyring.pseudonym("chat", chat.id))
            if stored is None:
                return None
            tip_id, team = stored
            receipt = receipts.Receipt(chat_id=chat.id, code=format_receipt(code), lang=s.lang, kind=ch.kind,
                                       notify=draft.notify, channel=new.channel, team=team)
            receipts.keep(session, deps, tip_id, receipt, now)
            return tip_id, receipt

    try:
        # In a worker thread: a dozen statements and a commit (a flush to disk) would hold up
        # every other chat's update on the event loop meanwhile.
        done = await asyncio.to_thread(commit)
    except IntegrityError:  # the same draft submitted at the same moment elsewhere
        if not await already_submitted(update, context, ch, s, draft.nonce):
            raise
        return
    if done is None:
        await ch.refused(update, context, s)
        return
    tip_id, receipt = done
    deps.nudge_sender()
    await deliver_receipt(context.bot, deps, tip_id, receipt)


async def already_submitted(update: Update, context: Context, ch: Channel, s: ChatSession, nonce: str) -> bool:
    """If the draft with this token was submitted: its receipt (again, if it has not
    reached the chat yet) or "it is in"; True. False if it never became a tip."""
    deps = deps_of(context)

    def find() -> tuple[int | None, receipts.Receipt | None]:
        with deps.sessions.begin() as session:
            tip_id = receipts.find_submitted(session, deps, nonce)
            return tip_id, receipts.take(session, deps, tip_id, deps.clock.now(), force=True) if tip_id else None

    tip_id, receipt = await asyncio.to_thread(find)  # off the event loop, as the submit's commit
    if tip_id is None:
        return False
    await drop_keyboard(update)
    if receipt is not None:
        await deliver_receipt(context.bot, deps, tip_id, receipt)
    else:
        await reply(update, context, ch.msg(deps, s, "already_submitted", tip_id=tip_id))
    return True


# --- the receipt: delivered, or re-delivered by a job -------------------------------------------
CHANNELS: dict[str, Channel] = {}  # by receipt kind; each channel's module adds itself


async def deliver_receipt(bot: Bot, deps: Deps, tip_id: int, receipt: receipts.Receipt) -> bool:
    """Send a claimed receipt; erase it once sent, else leave it for the job (or give up)."""
    text, rows = CHANNELS[receipt.kind].receipt_message(deps, tip_id, receipt)
    try:
        await send(bot, receipt.chat_id, text, rows, protect=True)
    except (Forbidden, BadRequest) as exc:  # blocked, chat gone: it will never arrive
        permanent, reason = True, type(exc).__name__
    except TelegramError as exc:  # 5xx, timeouts, flood control: the job tries again
        permanent, reason = False, type(exc).__name__
    else:
        await asyncio.to_thread(_delivered, deps, tip_id)  # off the event loop, as the submit's commit
        return True
    gave_up = await asyncio.to_thread(_failed, deps, tip_id, permanent, reason)
    if gave_up:
        deps.nudge_sender()
    else:
        log.warning("receipt of tip %s not delivered (%s): will try again", tip_id, reason)
    return False


def _delivered(deps: Deps, tip_id: int) -> None:
    with deps.sessions.begin() as session:
        receipts.delivered(session, tip_id)


def _failed(deps: Deps, tip_id: int, permanent: bool, reason: str) -> bool:
    with deps.sessions.begin() as session:
        return receipts.failed(session, deps, tip_id, deps.clock.now(), permanent=permanent, reason=reason)


async def redeliver_receipts(context: Context) -> None:
    """The job: receipts whose send failed (or whose sender died) are sent again. Its
    database work runs in a worker thread; an error is logged (once a minute, no person's
    data) and a later run tries again, with back-off."""
    deps = deps_of(context)
    await jobs.guard(context, "receipts").run(lambda: _redeliver(context.bot, deps))


async def _redeliver(bot: Bot, deps: Deps) -> None:
    now = deps.clock.now()
    for tip_id in await asyncio.to_thread(_due, deps, now):
        receipt = await asyncio.to_thread(_take, deps, tip_id, now)
        if receipt is not None:
            await deliver_receipt(bot, deps, tip_id, receipt)


def _due(deps: Deps, now: datetime) -> list[int]:
    with deps.sessions.begin() as session:
        return receipts.due(session, now)


def _take(deps: Deps, tip_id: int, now: datetime) -> receipts.Receipt | None:
    with deps.sessions.begin() as session:
        return receipts.take(session, deps, tip_id, now)


Handler = Callable[[Update, Context, Channel, ChatSession, str], Awaitable[None]]

BUTTONS: dict[str, Handler] = {
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
