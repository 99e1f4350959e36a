"""Citizens' private chat: report a tip step by step, come back with a receipt code.

Thin by design: parse the update, keep the step in the pseudonymous SessionStore,
call a service, render a template, reply. Nothing that identifies the citizen is written
anywhere: the session key is an HMAC of the chat id, and the copy of a conversation in
progress kept across restarts (bot/conversations.py) is filed under it, sealed.
"""

from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy.orm import Session
from telegram import Update

from bot.conversations import ConversationStore
from bot.deps import Deps
from bot.domain.receipt import parse_receipt
from bot.drafts import Backoff, ChatSession, Draft, EvidenceItem, Flood, Step, backoff_wait
from bot.services import followup, intake, notify, receipts
from bot.services import staff as staff_service
from bot.services.outbox import Button
from handlers import evidence as evidence_intake
from handlers import intake as flow
from handlers.common import Context, checked_text, deps_of, initial_lang, person_lang, private, reply
from handlers.intake import answer, drop_keyboard


# --- session & small helpers -------------------------------------------------------------
def chat_key(deps: Deps, update: Update) -> str:
    assert update.effective_chat is not None
    return deps.keyring.pseudonym("chat", update.effective_chat.id)


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
    lang = initial_lang(deps, update)
    username = context.bot.username
    await reply(update, context, deps.texts.msg(lang, "private_only", bot_username=username))


def reset(s: ChatSession) -> None:
    flow.cancel_pending(s)
    s.step = Step.IDLE
    s.draft = None
    s.tip_id = None
    s.question_id = None
    s.open_questions.clear()
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
    if s.step in flow.DRAFT_STEPS:
        await flow.on_draft_message(update, context, CITIZEN, s, message)
        return
    deps = deps_of(context)
    lang = s.lang
    kind = flow.unsupported_kind(message)
    if kind is not None:
        await reply(update, context, deps.texts.msg(lang, "unsupported_media", kind=kind))
        return
    incoming = evidence_intake.incoming_of(message)
    text = message.text

    if incoming is not None:
        if s.step is Step.ADD_INFO:
            await add_to_addition(update, context, s, incoming)
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
    elif step is Step.ADD_INFO:
        value = await checked_text(update, context, lang, text, deps.config.intake.text_max_chars)
        if value is None:
            return
        s.addition_text.append(value)
        await ack_addition(update, context, s)


async def add_to_addition(update: Update, context: Context, s: ChatSession,
                          incoming: evidence_intake.Incoming) -> None:
    deps = deps_of(context)
    limit = deps.config.intake.max_evidence
    if len(s.addition_evidence) >= limit:  # the same limit as a tip's: enforced, not only announced
        await reply(update, context, deps.texts.msg(s.lang, "addition_full", limit=limit),
                    [[b(deps, s.lang, "send_addition", "addsend")], [b(deps, s.lang, "cancel", "cancel")]])
        return
    tip_id = s.tip_id
    kept = await flow.accept_evidence(update, context, CITIZEN, s, incoming, len(s.addition_evidence) + 1)
    if kept is None or s.step is not Step.ADD_INFO or s.tip_id != tip_id:
        return
    s.addition_evidence.append(kept)
    await ack_addition(update, context, s)


# --- the intake flow, as the citizen's chat runs it ---------------------------------------------
class CitizenChannel(flow.Channel):
    prefix = "c"
    kind = "citizen"
    conversation = "citizen"

    async def review(self, update: Update, context: Context, s: ChatSession, rows: list[list[Button]]) -> None:
        deps = deps_of(context)
        assert s.draft is not None
        offer = bool(deps.config.security.contact_key.get_secret_value())
        if offer:  # only where a contact key is configured; off unless the tipster turns it on
            rows.insert(1, [b(deps, s.lang, "notify_on" if s.draft.notify else "notify_off", "notify")])
        await reply(update, context, deps.texts.render(s.lang, "review", draft=s.draft, offer_notify=offer), rows)

    def store(self, session: Session, update: Update, context: Context, s: ChatSession, draft: Draft,
              new: intake.NewTip, receipt_hash: str) -> tuple[int, int] | None:
        deps = deps_of(context)
        tip_id = intake.submit(session, deps, new, receipt_hash, deps.clock.now())
        if draft.notify and update.effective_chat is not None:
            notify.opt_in(session, deps, tip_id, update.effective_chat.id, deps.clock.now())
        return tip_id, 0

    def receipt_message(self, deps: Deps, tip_id: int, receipt: receipts.Receipt) -> tuple[str, list[list[Button]]]:
        text = deps.texts.render(receipt.lang, "receipt", code=receipt.code, tip_id=tip_id, notify=receipt.notify)
        return text, menu_buttons(deps, receipt.lang)

    async def stale(self, update: Update, context: Context, s: ChatSession) -> None:
        await say_stale(update, context, s)

    async def cancel(self, update: Update, context: Context, s: ChatSession) -> None:
        deps = deps_of(context)
        had = s.step is not Step.IDLE
        reset(s)
        await reply(update, context, deps.texts.msg(s.lang, "cancelled" if had else "nothing_to_cancel"),
                    menu_buttons(deps, s.lang))


CITIZEN = CitizenChannel()
flow.CHANNELS[CITIZEN.kind] = CITIZEN


async def ack_addition(update: Update, context: Context, s: ChatSession) -> None:
    deps = deps_of(context)
    rows = [[b(deps, s.lang, "send_addition", "addsend")], [b(deps, s.lang, "cancel", "cancel")]]
    flow.debounce(s, lambda: reply(
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
    digest = await deps.receipt_hash(code)
    with deps.sessions.begin() as session:
        tip = followup.find_tip(session, digest)
        view = None
        if tip is not None:
            questions = followup.open_questions(session, deps.keyring, tip.id)
            view = {
                "id": tip.id,
                "category": tip.category,
                "unit_key": tip.unit_key,
                "unit_other": deps.keyring.decrypt_opt(tip.unit_other_enc),
                "state": tip.state,
                "team_number": tip.team_number,
                "created_at": tip.created_at,
                "events": followup.public_timeline(tip, deps.keyring),
                "questions": [text for _, text in questions],
                "question_ids": [qid for qid, _ in questions],
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
    s.question_id = None
    s.open_questions = list(view["question_ids"])
    closed = view["state"].startswith("closed")
    rows = [] if closed else [[b(deps, s.lang, "add_info", "add")]]
    if not closed:  # every question not yet answered, each with its button
        many = len(s.open_questions) > 1
        rows[0:0] = [[b(deps, s.lang, "answer_question", f"answer:{qid}", number=i if many else 0)]
                     for i, qid in enumerate(s.open_questions, start=1)]
    rows.append([b(deps, s.lang, "menu", "menu")])
    await reply(update, context, deps.texts.render(s.lang, "timeline", tip=view), rows, protect=True)


# --- buttons --------------------------------------------------------------------------------
async def on_button(update: Update, context: Context) -> None:
    query = update.callback_query
    assert query is not None and query.data is not None
    deps = deps_of(context)
    payload = deps.keyring.verify(query.data)
    if payload is None or not payload.startswith("c:") or not private(update):
        # The person's language only here: looking it up reads the staff directory (a
        # transaction), which a citizen's valid press, answered in its chat's language, skips.
        await answer(query, deps.texts.msg(person_lang(update, context), "button_invalid"), alert=True)
        return
    s = await guard(update, context)
    if s is None:
        await answer(query)
        return
    await answer(query)
    action, _, arg = payload[2:].partition(":")
    handler = BUTTONS.get(action)
    if handler is not None:
        await handler(update, context, s, arg)
    elif action in flow.BUTTONS and action != "ch":
        await flow.BUTTONS[action](update, context, CITIZEN, s, arg)
    else:
        await reply(update, context, deps.texts.msg(s.lang, "button_invalid"))


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
    await flow.ask_category(update, context, CITIZEN, s)


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


async def choose_language(update: Update, context: Context) -> None:
    """/language from a citizen: the same choice as the menu's Language button."""
    s = await guard(update, context)
    if s is not None:
        await btn_language(update, context, s, "")


async def btn_menu(update: Update, context: Context, s: ChatSession, _arg: str) -> None:
    await drop_keyboard(update)
    reset(s)
    await send_menu(update, context, s)


async def btn_add(update: Update, context: Context, s: ChatSession, arg: str) -> None:
    deps = deps_of(context)
    if stale(s, Step.FOLLOWUP) or s.tip_id is None:
        await say_stale(update, context, s)
        return
    await drop_keyboard(update)
    s.question_id = int(arg) if arg.isdigit() and int(arg) in s.open_questions else None
    answering = s.question_id is not None
    s.step = Step.ADD_INFO
    s.addition_text.clear()
    s.addition_evidence.clear()
    prompt = deps.texts.msg(s.lang, "answer_prompt" if answering else "add_info_prompt",
                            limit=deps.config.intake.max_evidence)
    await reply(update, context, f"{prompt}\n\n{evidence_intake.notice(context, s.lang)}",
                [[b(deps, s.lang, "cancel", "cancel")]])


async def btn_answer(update: Update, context: Context, s: ChatSession, arg: str) -> None:
    """Answer one of the team's open questions (an older button without a question: the first)."""
    await btn_add(update, context, s, arg if arg.isdigit() else str(s.open_questions[0] if s.open_questions else ""))


async def btn_notify(update: Update, context: Context, s: ChatSession, _arg: str) -> None:
    if stale(s, Step.REVIEW) or s.draft is None:
        await say_stale(update, context, s)
        return
    s.draft.notify = not s.draft.notify
    await drop_keyboard(update)
    await flow.show_review(update, context, CITIZEN, s)


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
        ConversationStore.erase(session, "citizen", chat_key(deps, update))  # sent: nothing to send twice
    deps.nudge_sender()
    tip_id = s.tip_id
    reset(s)
    await reply(update, context, deps.texts.msg(s.lang, "addition_sent" if ok else "addition_closed", tip_id=tip_id),
                menu_buttons(deps, s.lang))


BUTTONS = {
    "new": btn_new,
    "rcpt": btn_receipt,
    "lang": btn_language,
    "menu": btn_menu,
    "add": btn_add,
    "answer": btn_answer,
    "notify": btn_notify,
    "addsend": btn_add_send,
}

