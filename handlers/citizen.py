"""Citizens' private chat: report a tip step by step, come back with a receipt code.

Thin by design: parse the update, keep the step in the pseudonymous SessionStore,
call a service, render a template, reply. Nothing about the citizen is written anywhere:
the session key is an HMAC of the chat id and lives in memory only.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from datetime import timedelta

from telegram import CallbackQuery, Message, Update
from telegram.error import BadRequest

from bot.deps import Deps
from bot.domain.receipt import format_receipt, new_receipt_code, parse_receipt
from bot.drafts import Backoff, ChatSession, Draft, EvidenceItem, Flood, Step, backoff_wait
from bot.services import followup, intake, notify
from bot.services import staff as staff_service
from bot.services.outbox import Button
from handlers import evidence as evidence_intake
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

EVIDENCE_DEBOUNCE_SECONDS = 0.8
UNSUPPORTED = ("sticker", "location", "venue", "contact", "poll", "dice", "game", "video_note", "animation", "story")


# --- session & small helpers -------------------------------------------------------------
def chat_key(deps: Deps, update: Update) -> str:
    assert update.effective_chat is not None
    return deps.keyring.pseudonym("chat", update.effective_chat.id)


def initial_lang(deps: Deps, update: Update) -> str:
    code = (update.effective_user.language_code or "") if update.effective_user else ""
    if code.startswith("en"):
        return "en"
    if code.startswith("zh"):
        return "zh-CN"
    return deps.config.campaign.default_language


def session_for(deps: Deps, update: Update) -> tuple[ChatSession, bool]:
    return deps.chats.get(chat_key(deps, update), deps.clock.now(), initial_lang(deps, update))


def b(deps: Deps, lang: str, name: str, payload: str, /, **kw: object) -> Button:
    return Button(deps.texts.button(lang, name, **kw), deps.keyring.sign(f"c:{payload}"))


def menu_buttons(deps: Deps, lang: str) -> list[list[Button]]:
    return [
        [b(deps, lang, "report", "new")],
        [b(deps, lang, "have_receipt", "rcpt")],
        [b(deps, lang, "language", "lang")],
    ]


async def send_menu(update: Update, context: Context, s: ChatSession) -> None:
    deps = deps_of(context)
    await reply(update, context, deps.texts.render(s.lang, "start"), menu_buttons(deps, s.lang))


def flooded(deps: Deps, update: Update) -> tuple[bool, bool]:
    """(over the limit, first time over it in this window)."""
    now = deps.clock.now()
    key = chat_key(deps, update)
    f = deps.chats.floods.get(key)
    if f is None or now - f.window_start >= timedelta(minutes=1):
        f = Flood(window_start=now)
        deps.chats.floods[key] = f
    f.count += 1
    if f.count <= deps.config.intake.flood_messages_per_minute:
        return False, False
    first = not f.warned
    f.warned = True
    return True, first


async def guard(update: Update, context: Context) -> ChatSession | None:
    """Common entry for citizens' messages: flood control and draft expiry."""
    deps = deps_of(context)
    over, first = flooded(deps, update)
    s, expired = session_for(deps, update)
    if over:
        if first:
            await reply(update, context, deps.texts.msg(s.lang, "flood"))
        return None
    if expired:
        await reply(update, context, deps.texts.msg(s.lang, "draft_expired", minutes=deps.config.intake.draft_ttl_minutes))
    return s


# --- commands -------------------------------------------------------------------------------
async def start(update: Update, context: Context) -> None:
    if not private(update):
        await group_hint(update, context)
        return
    s = await guard(update, context)
    if s is None:
        return
    reset(s)
    await send_menu(update, context, s)


async def help_command(update: Update, context: Context) -> None:
    if not private(update):
        await group_hint(update, context)
        return
    s = await guard(update, context)
    if s is None:
        return
    deps = deps_of(context)
    await reply(update, context, deps.texts.render(s.lang, "help"), menu_buttons(deps, s.lang))
    user = update.effective_user
    if user is not None:  # staff also get their own page (reading the staff table writes nothing)
        with deps.sessions.begin() as session:
            member = staff_service.staff_by_user(session, user.id)
            role, team, lang = (member.role, member.team_number, member.language) if member else (None, None, "")
        if role is not None:
            await reply(update, context, deps.texts.render(lang, "help_staff", role=role, team=team or 0))


async def cancel(update: Update, context: Context) -> None:
    if not private(update):
        return
    s = await guard(update, context)
    if s is None:
        return
    deps = deps_of(context)
    had = s.step is not Step.IDLE
    reset(s)
    await reply(update, context, deps.texts.msg(s.lang, "cancelled" if had else "nothing_to_cancel"),
                menu_buttons(deps, s.lang))


async def group_hint(update: Update, context: Context) -> None:
    deps = deps_of(context)
    lang = deps.config.campaign.default_language
    username = context.bot.username
    await reply(update, context, deps.texts.msg(lang, "private_only", bot_username=username))


def reset(s: ChatSession) -> None:
    s.step = Step.IDLE
    s.draft = None
    s.tip_id = None
    s.question_id = None
    s.unit_page = 0
    s.addition_text.clear()
    s.addition_evidence.clear()


# --- messages ---------------------------------------------------------------------------
async def on_message(update: Update, context: Context) -> None:
    message = update.effective_message
    if message is None or not private(update):
        return
    s = await guard(update, context)
    if s is None:
        return
    deps = deps_of(context)
    lang = s.lang
    unsupported = next((kind for kind in UNSUPPORTED if getattr(message, kind, None)), None)
    if unsupported is not None:
        await reply(update, context, deps.texts.msg(lang, "unsupported_media", kind=unsupported))
        return
    incoming = evidence_intake.incoming_of(message)
    text = message.text

    if incoming is not None:
        if s.step is Step.EVIDENCE:
            await add_evidence(update, context, s, incoming)
        elif s.step is Step.ADD_INFO:
            await add_addition_evidence(update, context, s, incoming)
        else:
            await reply(update, context, deps.texts.msg(lang, "media_not_now"))
        return
    if text is None:
        await reply(update, context, deps.texts.msg(lang, "unsupported_media", kind="other"))
        return

    step = s.step
    if step in (Step.IDLE, Step.RECEIPT, Step.FOLLOWUP):
        code = parse_receipt(text)
        if code is not None:
            await open_receipt(update, context, s, code)
        elif step is Step.RECEIPT:
            await reply(update, context, deps.texts.msg(lang, "receipt_format"))
        else:
            await reply(update, context, deps.texts.msg(lang, "use_buttons"), menu_buttons(deps, lang))
    elif step is Step.UNIT_OTHER:
        await take_text(update, context, s, text, "unit_other", deps.config.intake.other_unit_max_chars, 1)
    elif step is Step.PLACE:
        await take_text(update, context, s, text, "place", deps.config.intake.place_max_chars, 1)
    elif step is Step.TEXT:
        cfg = deps.config.intake
        await take_text(update, context, s, text, "text", cfg.text_max_chars, cfg.text_min_chars)
    elif step is Step.EVIDENCE:
        await reply(update, context, deps.texts.msg(lang, "evidence_expects_media"), evidence_buttons(deps, s))
    elif step is Step.ADD_INFO:
        if len(text) > deps.config.intake.text_max_chars:
            await reply(update, context, deps.texts.msg(lang, "too_long", limit=deps.config.intake.text_max_chars,
                                                        length=len(text)))
            return
        s.addition_text.append(text)
        await ack_addition(update, context, s)
    else:  # CATEGORY, UNIT, REVIEW: a choice is expected
        await reply(update, context, deps.texts.msg(lang, "use_buttons_above"))


def evidence_of(message: Message) -> EvidenceItem | None:
    caption = message.caption
    if message.photo:
        return EvidenceItem("photo", message.photo[-1].file_id, caption)
    for kind in ("video", "voice", "audio", "document"):
        media = getattr(message, kind, None)
        if media is not None:
            return EvidenceItem(kind, media.file_id, caption)
    return None


async def take_text(
    update: Update, context: Context, s: ChatSession, text: str, field: str, maximum: int, minimum: int
) -> None:
    value = await checked_text(update, context, s.lang, text, maximum, minimum)
    if value is None:
        return
    draft = s.draft or Draft()
    s.draft = draft
    setattr(draft, field, value)
    if draft.editing and draft.complete():
        await show_review(update, context, s)
        return
    if field == "unit_other":
        await ask_place(update, context, s)
    elif field == "place":
        await ask_text(update, context, s)
    else:
        await ask_evidence(update, context, s)


# --- the steps ----------------------------------------------------------------------------
async def ask_category(update: Update, context: Context, s: ChatSession) -> None:
    deps = deps_of(context)
    s.step = Step.CATEGORY
    rows = [[b(deps, s.lang, "category", f"cat:{c.key}", name=c.name.get(s.lang))] for c in deps.config.categories]
    await reply(update, context, deps.texts.msg(s.lang, "choose_category"), rows)


def unit_rows(deps: Deps, s: ChatSession) -> list[list[Button]]:
    rows, s.unit_page = unit_picker(deps, s.lang, s.unit_page, lambda *a, **kw: b(deps, s.lang, *a, **kw))
    return rows


async def ask_unit(update: Update, context: Context, s: ChatSession) -> None:
    deps = deps_of(context)
    s.step = Step.UNIT
    s.unit_page = 0
    await reply(update, context, deps.texts.msg(s.lang, "choose_unit", pages=unit_pages(deps)), unit_rows(deps, s))


async def ask_place(update: Update, context: Context, s: ChatSession) -> None:
    deps = deps_of(context)
    s.step = Step.PLACE
    await reply(update, context, deps.texts.msg(s.lang, "ask_place", limit=deps.config.intake.place_max_chars))


async def ask_text(update: Update, context: Context, s: ChatSession) -> None:
    deps = deps_of(context)
    s.step = Step.TEXT
    cfg = deps.config.intake
    await reply(update, context, deps.texts.msg(s.lang, "ask_text", minimum=cfg.text_min_chars, limit=cfg.text_max_chars))


def evidence_buttons(deps: Deps, s: ChatSession) -> list[list[Button]]:
    count = len(s.draft.evidence) if s.draft else 0
    return [[b(deps, s.lang, "evidence_done" if count else "evidence_skip", "evdone")]]


async def ask_evidence(update: Update, context: Context, s: ChatSession) -> None:
    deps = deps_of(context)
    if deps.config.intake.max_evidence == 0:
        await show_review(update, context, s)
        return
    s.step = Step.EVIDENCE
    prompt = deps.texts.msg(s.lang, "ask_evidence", limit=deps.config.intake.max_evidence)
    await reply(update, context, f"{prompt}\n\n{evidence_intake.notice(context, s.lang)}", evidence_buttons(deps, s))


async def add_evidence(update: Update, context: Context, s: ChatSession, incoming: evidence_intake.Incoming) -> None:
    deps = deps_of(context)
    assert s.draft is not None
    limit = deps.config.intake.max_evidence
    if len(s.draft.evidence) >= limit:
        await reply(update, context, deps.texts.msg(s.lang, "evidence_full", limit=limit), evidence_buttons(deps, s))
        return
    draft = s.draft
    # Cleaned (or found uncleanable) before it is taken; the clean copy is shown to the tipster.
    item = await evidence_intake.accept(update, context, s.lang, incoming, len(draft.evidence) + 1,
                                        lambda label, payload: b(deps, s.lang, label, payload))
    if item is None or s.draft is not draft or s.step is not Step.EVIDENCE:
        return
    draft.evidence.append(item)
    # An album arrives as several messages: answer once, when they stop coming.
    debounce(s, lambda: reply(
        update, context,
        deps.texts.msg(s.lang, "evidence_received", count=len(s.draft.evidence) if s.draft else 0, limit=limit),
        evidence_buttons(deps, s) if s.step is Step.EVIDENCE else None,
    ))


_pending_acks: dict[int, asyncio.Task[None]] = {}


def debounce(s: ChatSession, send: object) -> None:
    key = id(s)
    old = _pending_acks.pop(key, None)
    if old is not None:
        old.cancel()

    async def later() -> None:
        await asyncio.sleep(EVIDENCE_DEBOUNCE_SECONDS)
        _pending_acks.pop(key, None)
        await send()  # type: ignore[operator]

    _pending_acks[key] = asyncio.get_running_loop().create_task(later())


async def show_review(update: Update, context: Context, s: ChatSession) -> None:
    deps = deps_of(context)
    assert s.draft is not None
    s.step = Step.REVIEW
    s.draft.editing = False
    rows = [
        [b(deps, s.lang, "submit", "submit")],
        [b(deps, s.lang, "edit", "edit"), b(deps, s.lang, "cancel", "cancel")],
    ]
    offer = bool(deps.config.security.contact_key.get_secret_value())
    if offer:  # only where a contact key is configured; off unless the tipster turns it on
        rows.insert(1, [b(deps, s.lang, "notify_on" if s.draft.notify else "notify_off", "notify")])
    await reply(update, context, deps.texts.render(s.lang, "review", draft=s.draft, offer_notify=offer), rows)


async def add_addition_evidence(update: Update, context: Context, s: ChatSession,
                                incoming: evidence_intake.Incoming) -> None:
    deps = deps_of(context)
    tip_id = s.tip_id
    item = await evidence_intake.accept(update, context, s.lang, incoming, len(s.addition_evidence) + 1,
                                        lambda label, payload: b(deps, s.lang, label, payload))
    if item is None or s.step is not Step.ADD_INFO or s.tip_id != tip_id:
        return
    s.addition_evidence.append(item)
    await ack_addition(update, context, s)


async def ack_addition(update: Update, context: Context, s: ChatSession) -> None:
    deps = deps_of(context)
    rows = [[b(deps, s.lang, "send_addition", "addsend")], [b(deps, s.lang, "cancel", "cancel")]]
    debounce(s, lambda: reply(
        update, context,
        deps.texts.msg(s.lang, "addition_received", texts=len(s.addition_text), items=len(s.addition_evidence)),
        rows,
    ))


# --- receipt codes --------------------------------------------------------------------------
async def open_receipt(update: Update, context: Context, s: ChatSession, code: str) -> None:
    deps = deps_of(context)
    cfg = deps.config.intake
    now = deps.clock.now()
    key = chat_key(deps, update)
    backoff = deps.chats.backoffs.get(key)
    if backoff and backoff.not_before and now < backoff.not_before:
        wait = math.ceil((backoff.not_before - now).total_seconds())
        await reply(update, context, deps.texts.msg(s.lang, "receipt_wait", seconds=wait))
        return
    digest = await asyncio.to_thread(deps.keyring.receipt_hash, code)
    with deps.sessions.begin() as session:
        tip = followup.find_tip(session, digest)
        view = None
        if tip is not None:
            question = followup.open_question(session, deps.keyring, tip.id)
            view = {
                "id": tip.id,
                "category": tip.category,
                "unit_key": tip.unit_key,
                "unit_other": deps.keyring.decrypt_opt(tip.unit_other_enc),
                "state": tip.state,
                "team_number": tip.team_number,
                "created_at": tip.created_at,
                "events": followup.public_timeline(tip, deps.keyring),
                "question": question[1] if question else None,
                "question_id": question[0] if question else None,
            }
    if view is None:
        backoff = deps.chats.backoffs.setdefault(key, Backoff())
        backoff.failures += 1
        backoff.last = now
        wait = backoff_wait(backoff.failures, cfg.receipt_free_attempts, cfg.receipt_backoff_base_seconds,
                            cfg.receipt_backoff_max_seconds)
        backoff.not_before = now + timedelta(seconds=wait) if wait else None
        s.step = Step.RECEIPT
        await reply(update, context, deps.texts.msg(s.lang, "receipt_unknown", wait=math.ceil(wait)),
                    [[b(deps, s.lang, "menu", "menu")]])
        return
    deps.chats.backoffs.pop(key, None)
    s.step = Step.FOLLOWUP
    s.tip_id = view["id"]
    s.question_id = view["question_id"]
    closed = view["state"].startswith("closed")
    rows = [] if closed else [[b(deps, s.lang, "add_info", "add")]]
    if view["question_id"] is not None and not closed:
        rows.insert(0, [b(deps, s.lang, "answer_question", "answer")])
    rows.append([b(deps, s.lang, "menu", "menu")])
    await reply(update, context, deps.texts.render(s.lang, "timeline", tip=view), rows, protect=True)


# --- buttons --------------------------------------------------------------------------------
async def on_button(update: Update, context: Context) -> None:
    query = update.callback_query
    assert query is not None and query.data is not None
    deps = deps_of(context)
    payload = deps.keyring.verify(query.data)
    lang = deps.config.campaign.default_language
    if payload is None or not payload.startswith("c:"):
        await answer(query, deps.texts.msg(lang, "button_invalid"), alert=True)
        return
    if not private(update):
        await answer(query, deps.texts.msg(lang, "button_invalid"), alert=True)
        return
    s = await guard(update, context)
    if s is None:
        await answer(query)
        return
    await answer(query)
    action, _, arg = payload[2:].partition(":")
    handler = BUTTONS.get(action)
    if handler is None:
        await reply(update, context, deps.texts.msg(s.lang, "button_invalid"))
        return
    await handler(update, context, s, arg)


async def answer(query: CallbackQuery, text: str | None = None, alert: bool = False) -> None:
    # An answer after a restart may be "too old": harmless, the action still runs.
    with contextlib.suppress(BadRequest):
        await query.answer(text=text, show_alert=alert)


async def drop_keyboard(update: Update) -> None:
    query = update.callback_query
    if query is not None and query.message is not None:
        with contextlib.suppress(BadRequest):
            await query.edit_message_reply_markup(reply_markup=None)


def stale(s: ChatSession, *steps: Step) -> bool:
    return s.step not in steps


async def say_stale(update: Update, context: Context, s: ChatSession) -> None:
    deps = deps_of(context)
    await drop_keyboard(update)
    await reply(update, context, deps.texts.msg(s.lang, "button_stale"), menu_buttons(deps, s.lang))


async def btn_new(update: Update, context: Context, s: ChatSession, _arg: str) -> None:
    await drop_keyboard(update)
    reset(s)
    s.draft = Draft()
    await ask_category(update, context, s)


async def btn_receipt(update: Update, context: Context, s: ChatSession, _arg: str) -> None:
    deps = deps_of(context)
    await drop_keyboard(update)
    reset(s)
    s.step = Step.RECEIPT
    await reply(update, context, deps.texts.msg(s.lang, "ask_receipt"))


async def btn_language(update: Update, context: Context, s: ChatSession, arg: str) -> None:
    deps = deps_of(context)
    if arg in ("zh-CN", "en"):
        s.lang = arg
        await drop_keyboard(update)
        await reply(update, context, deps.texts.msg(s.lang, "language_set"))
        await send_menu(update, context, s)
        return
    rows = [[b(deps, s.lang, "lang_zh", "lang:zh-CN"), b(deps, s.lang, "lang_en", "lang:en")]]
    await reply(update, context, deps.texts.msg(s.lang, "choose_language"), rows)


async def btn_menu(update: Update, context: Context, s: ChatSession, _arg: str) -> None:
    await drop_keyboard(update)
    reset(s)
    await send_menu(update, context, s)


async def btn_category(update: Update, context: Context, s: ChatSession, arg: str) -> None:
    deps = deps_of(context)
    if stale(s, Step.CATEGORY) or s.draft is None:
        await say_stale(update, context, s)
        return
    if arg not in {c.key for c in deps.config.categories}:
        await reply(update, context, deps.texts.msg(s.lang, "button_invalid"))
        return
    s.draft.category = arg
    await drop_keyboard(update)
    await reply(update, context, deps.texts.msg(s.lang, "chosen", value=deps.texts.category_name(arg, s.lang)))
    if s.draft.editing and s.draft.complete():
        await show_review(update, context, s)
    else:
        await ask_unit(update, context, s)


async def btn_unit_page(update: Update, context: Context, s: ChatSession, arg: str) -> None:
    deps = deps_of(context)
    if stale(s, Step.UNIT) or not arg.isdigit():
        await say_stale(update, context, s)
        return
    s.unit_page = int(arg)
    await replace_keyboard(update, unit_rows(deps, s))


async def btn_unit(update: Update, context: Context, s: ChatSession, arg: str) -> None:
    deps = deps_of(context)
    if stale(s, Step.UNIT) or s.draft is None:
        await say_stale(update, context, s)
        return
    await drop_keyboard(update)
    if arg == "other":
        s.draft.unit = "other"
        s.step = Step.UNIT_OTHER
        await reply(update, context, deps.texts.msg(s.lang, "ask_other_unit",
                                                    limit=deps.config.intake.other_unit_max_chars))
        return
    if deps.config.unit(arg) is None:
        await reply(update, context, deps.texts.msg(s.lang, "button_invalid"))
        return
    s.draft.unit = arg
    s.draft.unit_other = None
    await reply(update, context, deps.texts.msg(s.lang, "chosen", value=deps.texts.unit_name(arg, s.lang)))
    if s.draft.editing and s.draft.complete():
        await show_review(update, context, s)
    else:
        await ask_place(update, context, s)


async def btn_evidence_done(update: Update, context: Context, s: ChatSession, _arg: str) -> None:
    if stale(s, Step.EVIDENCE) or s.draft is None:
        await say_stale(update, context, s)
        return
    await drop_keyboard(update)
    await show_review(update, context, s)


async def btn_edit(update: Update, context: Context, s: ChatSession, arg: str) -> None:
    deps = deps_of(context)
    if stale(s, Step.REVIEW) or s.draft is None:
        await say_stale(update, context, s)
        return
    await drop_keyboard(update)
    if not arg:
        rows = [[b(deps, s.lang, f"edit_{f}", f"edit:{f}")] for f in ("category", "unit", "place", "text", "evidence")]
        rows.append([b(deps, s.lang, "back", "review")])
        await reply(update, context, deps.texts.msg(s.lang, "edit_which"), rows)
        return
    s.draft.editing = True
    if arg == "category":
        await ask_category(update, context, s)
    elif arg == "unit":
        await ask_unit(update, context, s)
    elif arg == "place":
        await ask_place(update, context, s)
    elif arg == "text":
        await ask_text(update, context, s)
    elif arg == "evidence":
        s.draft.evidence.clear()
        s.draft.editing = False
        await ask_evidence(update, context, s)
    else:
        await reply(update, context, deps.texts.msg(s.lang, "button_invalid"))


async def btn_review(update: Update, context: Context, s: ChatSession, _arg: str) -> None:
    if stale(s, Step.REVIEW) or s.draft is None:
        await say_stale(update, context, s)
        return
    await drop_keyboard(update)
    await show_review(update, context, s)


async def btn_cancel(update: Update, context: Context, s: ChatSession, _arg: str) -> None:
    deps = deps_of(context)
    await drop_keyboard(update)
    had = s.step is not Step.IDLE
    reset(s)
    await reply(update, context, deps.texts.msg(s.lang, "cancelled" if had else "nothing_to_cancel"),
                menu_buttons(deps, s.lang))


async def btn_submit(update: Update, context: Context, s: ChatSession, _arg: str) -> None:
    deps = deps_of(context)
    draft = s.draft
    if stale(s, Step.REVIEW) or draft is None or not draft.complete():
        await say_stale(update, context, s)
        return
    await drop_keyboard(update)
    s.step = Step.IDLE  # a second press finds nothing to submit
    s.draft = None
    code = new_receipt_code()
    digest = await asyncio.to_thread(deps.keyring.receipt_hash, code)
    new = intake.NewTip(
        category=draft.category or "", unit=draft.unit or "", unit_other=draft.unit_other,
        place=draft.place or "", text=draft.text or "", evidence=tuple(draft.evidence),
    )
    # Committed before the tipster hears of it: the receipt is shown only after this block.
    with deps.sessions.begin() as session:
        tip_id = intake.submit(session, deps, new, digest, deps.clock.now())
        if draft.notify and update.effective_chat is not None:
            notify.opt_in(session, deps, tip_id, update.effective_chat.id, deps.clock.now())
    deps.nudge_sender()
    await reply(update, context, deps.texts.render(s.lang, "receipt", code=format_receipt(code), tip_id=tip_id,
                                                   notify=draft.notify),
                menu_buttons(deps, s.lang), protect=True)


async def btn_add(update: Update, context: Context, s: ChatSession, arg: str) -> None:
    deps = deps_of(context)
    if stale(s, Step.FOLLOWUP) or s.tip_id is None:
        await say_stale(update, context, s)
        return
    await drop_keyboard(update)
    answering = arg == "answer" and s.question_id is not None
    if not answering:
        s.question_id = None
    s.step = Step.ADD_INFO
    s.addition_text.clear()
    s.addition_evidence.clear()
    prompt = deps.texts.msg(s.lang, "answer_prompt" if answering else "add_info_prompt",
                            limit=deps.config.intake.max_evidence)
    await reply(update, context, f"{prompt}\n\n{evidence_intake.notice(context, s.lang)}",
                [[b(deps, s.lang, "cancel", "cancel")]])


async def btn_answer(update: Update, context: Context, s: ChatSession, _arg: str) -> None:
    await btn_add(update, context, s, "answer")


async def btn_notify(update: Update, context: Context, s: ChatSession, _arg: str) -> None:
    if stale(s, Step.REVIEW) or s.draft is None:
        await say_stale(update, context, s)
        return
    s.draft.notify = not s.draft.notify
    await drop_keyboard(update)
    await show_review(update, context, s)


async def btn_add_send(update: Update, context: Context, s: ChatSession, _arg: str) -> None:
    deps = deps_of(context)
    if stale(s, Step.ADD_INFO) or s.tip_id is None:
        await say_stale(update, context, s)
        return
    if not s.addition_text and not s.addition_evidence:
        await reply(update, context, deps.texts.msg(s.lang, "addition_empty"))
        return
    await drop_keyboard(update)
    with deps.sessions.begin() as session:
        ok = followup.add_information(session, deps, s.tip_id, list(s.addition_text), list(s.addition_evidence),
                                      deps.clock.now(), question_id=s.question_id)
    deps.nudge_sender()
    tip_id = s.tip_id
    reset(s)
    await reply(update, context, deps.texts.msg(s.lang, "addition_sent" if ok else "addition_closed", tip_id=tip_id),
                menu_buttons(deps, s.lang))


async def btn_withdraw(update: Update, context: Context, s: ChatSession, arg: str) -> None:
    """Withdraw (or knowingly keep) a file that could not be cleaned, before it is sent."""
    deps = deps_of(context)
    await drop_keyboard(update)
    items = [*(s.draft.evidence if s.draft else []), *s.addition_evidence]
    if not any(i.token == arg for i in items if i.token):
        await reply(update, context, deps.texts.msg(s.lang, "evidence_withdraw_gone"))
        return
    if s.draft is not None:
        evidence_intake.withdraw(s.draft.evidence, arg)
    evidence_intake.withdraw(s.addition_evidence, arg)
    await reply(update, context, deps.texts.msg(s.lang, "evidence_withdrawn"))
    if s.step is Step.REVIEW and s.draft is not None:  # the review on screen counted it: show it again
        await show_review(update, context, s)


async def btn_keep(update: Update, context: Context, s: ChatSession, arg: str) -> None:
    deps = deps_of(context)
    await drop_keyboard(update)
    items = [*(s.draft.evidence if s.draft else []), *s.addition_evidence]
    kept = any(i.token == arg for i in items if i.token)
    await reply(update, context, deps.texts.msg(s.lang, "evidence_kept" if kept else "evidence_withdraw_gone"))


BUTTONS = {
    "wd": btn_withdraw,
    "keep": btn_keep,
    "new": btn_new,
    "rcpt": btn_receipt,
    "lang": btn_language,
    "menu": btn_menu,
    "cat": btn_category,
    "upage": btn_unit_page,
    "unit": btn_unit,
    "evdone": btn_evidence_done,
    "edit": btn_edit,
    "review": btn_review,
    "cancel": btn_cancel,
    "submit": btn_submit,
    "add": btn_add,
    "answer": btn_answer,
    "notify": btn_notify,
    "addsend": btn_add_send,
}

