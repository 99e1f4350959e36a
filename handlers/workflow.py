"""Staff working a case: the buttons on a card (ask, reassign, record the outcome), the
office's buttons on an escalation (reassign, extend) and on a breach (mark received).

A press is checked against the database, answered at once, and continued in the staff
member's private chat as a short guided flow (kept in memory by Telegram user id, and
sealed in the database by bot/conversations.py so that a restart continues it). Every
step re-checks the case before it acts, so a stale card or a double press changes
nothing and says so.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from telegram import CallbackQuery, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, Forbidden
from telegram.ext import ApplicationHandlerStop

from bot import conversations
from bot.conversations import parse_when, when
from bot.deps import Deps
from bot.domain.lifecycle import CaseAction, Outcome
from bot.services import workflow
from bot.services.outbox import Button
from bot.services.workflow import Allowed, OutcomeInput, ReceiveStatus, Refused
from bot.drafts import dump_evidence, load_evidence
from handlers.intake import evidence_of
from handlers.common import Context, checked_text, deps_of, keyboard, person_lang, private, reply
from storage.models import Tip

FLOW_TTL = timedelta(minutes=30)
MAX_ATTACHMENTS = 10
TEXT_LIMITS = {"question": 1000, "reason": 300, "person": 64, "post": 64, "finding": 2000, "where": 128}
ACTIONS = {"ask": CaseAction.ASK, "rea": CaseAction.REASSIGN, "out": CaseAction.RECORD_OUTCOME,
           "ext": CaseAction.EXTEND}


@dataclass
class StaffFlow:
    kind: str  # ask | rea | out | ext
    tip_id: int
    lang: str
    started: datetime
    step: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def flows(deps: Deps) -> dict[int, StaffFlow]:
    return deps.staff_flows  # type: ignore[no-any-return]


def _dump_flow(flow: StaffFlow) -> dict[str, Any]:
    data = dict(flow.data)
    if "files" in data:
        data["files"] = dump_evidence(data["files"])
    return {"kind": flow.kind, "tip_id": flow.tip_id, "lang": flow.lang, "started": when(flow.started),
            "step": flow.step, "data": data}


def _load_flow(d: dict[str, Any]) -> StaffFlow:
    data = dict(d["data"])
    if "files" in data:
        data["files"] = load_evidence(data["files"])
    started = parse_when(d["started"])
    assert started is not None
    return StaffFlow(kind=d["kind"], tip_id=int(d["tip_id"]), lang=d["lang"], started=started, step=d["step"],
                     data=data)


conversations.register(conversations.Kind(
    "staff", "user",
    get=lambda bot_data, user_id: bot_data["deps"].staff_flows.get(user_id),
    put=lambda bot_data, user_id, d: bot_data["deps"].staff_flows.__setitem__(user_id, _load_flow(d)),
    dump=_dump_flow, expires=lambda flow, _bot_data: flow.started + FLOW_TTL,
    clear=lambda bot_data, user_id: bot_data["deps"].staff_flows.pop(user_id, None),
))


def _b(deps: Deps, lang: str, name: str, payload: str, /, **kw: object) -> Button:
    return Button(deps.texts.button(lang, name, **kw), deps.keyring.sign(f"wf:{payload}"))


async def _answer(query: CallbackQuery, text: str | None = None, alert: bool = False) -> None:
    with contextlib.suppress(BadRequest):
        await query.answer(text=text[:200] if text else None, show_alert=alert)


def _refusal_text(deps: Deps, lang: str, refused: Refused) -> str:
    return deps.texts.msg(lang, f"refused_{refused.reason.value}", tip_id=refused.tip_id,
                          team=refused.team_number or 0)


# --- card and escalation buttons -------------------------------------------------------------
async def on_case_button(update: Update, context: Context) -> None:
    deps = deps_of(context)
    query = update.callback_query
    assert query is not None and query.data is not None
    lang = person_lang(update, context)
    payload = deps.keyring.verify(query.data)
    parts = payload.split(":") if payload else []
    if len(parts) < 2 or not parts[1].isdigit() or parts[0] not in (*ACTIONS, "rcv"):
        await _answer(query, deps.texts.msg(lang, "button_invalid"), alert=True)
        return
    name, number = parts[0], int(parts[1])
    user = query.from_user
    if name == "rcv":
        with deps.sessions.begin() as session:
            status = workflow.mark_received(session, deps, number, user.id, deps.clock.now())
            staff = workflow.staff_of(session, user.id)
        lang = staff.language if staff else lang
        await _answer(query, deps.texts.msg(lang, f"received_{status.value}"), alert=status is not ReceiveStatus.RECEIVED)
        if status is ReceiveStatus.RECEIVED:
            await _drop_button(query)
        return
    action = ACTIONS[name]
    with deps.sessions.begin() as session:
        verdict = workflow.authorize(session, user.id, number, action)
        staff = workflow.staff_of(session, user.id)
        if staff is not None:
            lang = staff.language
    if isinstance(verdict, Refused):
        await _answer(query, _refusal_text(deps, lang, verdict), alert=True)
        return
    flow = StaffFlow(kind=name, tip_id=number, lang=lang, started=deps.clock.now())
    if name == "ext":
        flow.data["deadline"] = parts[2] if len(parts) > 2 and parts[2] in ("ack", "outcome") else "ack"
    flows(deps)[user.id] = flow
    try:
        await _prompt(context, user.id, flow)
    except Forbidden:
        flows(deps).pop(user.id, None)
        await _answer(query, deps.texts.msg(lang, "start_private_chat", bot_username=context.bot.username),
                      alert=True)
        return
    await _answer(query, deps.texts.msg(lang, "continue_in_private") if not private(update) else None)


async def _drop_button(query: CallbackQuery) -> None:
    """Take the pressed button off the message; the others stay."""
    message = query.message
    markup = getattr(message, "reply_markup", None)
    if markup is None:
        return
    rows = [[b for b in row if b.callback_data != query.data] for row in markup.inline_keyboard]
    rows = [row for row in rows if row]
    with contextlib.suppress(BadRequest):
        await query.edit_message_reply_markup(reply_markup=InlineKeyboardMarkup(rows) if rows else None)


# --- the flows -----------------------------------------------------------------------------------
async def _say(context: Context, chat_id: int, text: str, rows: list[list[Button]] | None = None) -> None:
    await context.bot.send_message(chat_id=chat_id, text=text, reply_markup=keyboard(rows))


async def _prompt(context: Context, user_id: int, flow: StaffFlow) -> None:
    """Ask for the next thing the flow needs."""
    deps = deps_of(context)
    lang, t = flow.lang, deps.texts
    if not flow.step:
        flow.step = {"ask": "question", "rea": "team", "out": "result", "ext": "hours"}[flow.kind]
    cancel = [_b(deps, lang, "flow_cancel", "cancel")]
    step = flow.step
    if step == "question":
        await _say(context, user_id, t.msg(lang, "flow_ask_question", tip_id=flow.tip_id,
                                           limit=TEXT_LIMITS["question"]), [cancel])
    elif step == "team":
        with deps.sessions.begin() as session:
            current = session.get(Tip, flow.tip_id)
            team_now = current.team_number if current else 0
        rows = [[_b(deps, lang, "team_choice", f"team:{tm.number}", name=tm.name.get(lang))]
                for tm in deps.config.teams if tm.number != team_now]
        await _say(context, user_id, t.msg(lang, "flow_choose_team", tip_id=flow.tip_id), [*rows, cancel])
    elif step == "hours":
        rows = [[_b(deps, lang, "extend_hours", f"hours:{h}", hours=h) for h in (4, 24, 72)]]
        await _say(context, user_id, t.msg(lang, "flow_choose_hours", tip_id=flow.tip_id,
                                           deadline=flow.data["deadline"]), [*rows, cancel])
    elif step == "reason":
        await _say(context, user_id, t.msg(lang, "flow_reason", limit=TEXT_LIMITS["reason"]), [cancel])
    elif step == "result":
        rows = [[_b(deps, lang, f"outcome_{o.value}", f"result:{o.value}")] for o in Outcome]
        await _say(context, user_id, t.msg(lang, "flow_choose_outcome", tip_id=flow.tip_id), [*rows, cancel])
    elif step == "unit":
        units = deps.config.units
        rows = [[_b(deps, lang, "unit_choice", f"unit:{u.key}", name=u.name.get(lang)) for u in units[i : i + 2]]
                for i in range(0, len(units), 2)]
        await _say(context, user_id, t.msg(lang, "flow_choose_unit"), [*rows, cancel])
    elif step in ("person", "post", "finding", "where"):
        await _say(context, user_id, t.msg(lang, f"flow_type_{step}", limit=TEXT_LIMITS[step]), [cancel])
    elif step == "breach":
        rows = [[_b(deps, lang, "unit_choice", f"breach:{c.key}", name=c.name.get(lang))]
                for c in deps.config.categories]
        await _say(context, user_id, t.msg(lang, "flow_choose_breach"), [*rows, cancel])
    elif step == "attachments":
        rows = [[_b(deps, lang, "attachments_done", "attdone", count=len(flow.data.get("files", [])))]]
        await _say(context, user_id, t.msg(lang, "flow_attachments", limit=MAX_ATTACHMENTS), [*rows, cancel])
    elif step == "confirm":
        text = t.render(lang, "outcome_review", tip_id=flow.tip_id, data=flow.data)
        await _say(context, user_id, text, [[_b(deps, lang, "flow_confirm", "confirm")], cancel])


def _next_outcome_step(flow: StaffFlow) -> str:
    result = flow.data.get("result")
    order = {
        "verified": ["unit", "person", "post", "breach", "finding", "attachments", "confirm"],
        "unfounded": ["finding", "attachments", "confirm"],
        "transferred": ["where", "finding", "attachments", "confirm"],
    }[result]
    done = [s for s in order if s in flow.data]
    return order[len(done)] if len(done) < len(order) else "confirm"


async def on_flow_button(update: Update, context: Context) -> None:
    deps = deps_of(context)
    query = update.callback_query
    assert query is not None and query.data is not None
    user_id = query.from_user.id
    flow = _live_flow(deps, user_id)
    payload = deps.keyring.verify(query.data)
    lang = flow.lang if flow else person_lang(update, context)
    if payload is None or not payload.startswith("wf:"):
        await _answer(query, deps.texts.msg(lang, "button_invalid"), alert=True)
        return
    if flow is None:
        await _answer(query, deps.texts.msg(lang, "flow_expired"), alert=True)
        return
    await _answer(query)
    with contextlib.suppress(BadRequest):
        await query.edit_message_reply_markup(reply_markup=None)
    name, _, arg = payload[3:].partition(":")
    if name == "cancel":
        flows(deps).pop(user_id, None)
        await _say(context, user_id, deps.texts.msg(lang, "flow_cancelled"))
        return
    if name == "team" and flow.step == "team" and arg.isdigit() and deps.config.team(int(arg)):
        flow.data["team"] = int(arg)
        flow.step = "reason"
    elif name == "hours" and flow.step == "hours" and arg in ("4", "24", "72"):
        flow.data["hours"] = int(arg)
        flow.step = "reason"
    elif name == "result" and flow.step == "result" and arg in {o.value for o in Outcome}:
        flow.data["result"] = arg
        flow.step = _next_outcome_step(flow)
    elif name == "unit" and flow.step == "unit" and deps.config.unit(arg):
        flow.data["unit"] = arg
        flow.step = _next_outcome_step(flow)
    elif name == "breach" and flow.step == "breach" and arg in {c.key for c in deps.config.categories}:
        flow.data["breach"] = arg
        flow.step = _next_outcome_step(flow)
    elif name == "attdone" and flow.step == "attachments":
        flow.data["attachments"] = True
        flow.step = _next_outcome_step(flow)
    elif name == "confirm" and flow.step == "confirm":
        await _finish(context, user_id, flow)
        return
    else:
        await _say(context, user_id, deps.texts.msg(lang, "flow_button_stale"))
        return
    await _prompt(context, user_id, flow)


async def on_private_text(update: Update, context: Context) -> None:
    """Text typed by a staff member in the middle of a flow (runs before the citizen handlers)."""
    deps = deps_of(context)
    user = update.effective_user
    message = update.effective_message
    if user is None or message is None or not private(update):
        return
    flow = _live_flow(deps, user.id)
    if flow is None:
        return  # not in a flow: let the citizen handlers have it
    text = message.text or ""
    step = flow.step
    if step not in TEXT_LIMITS:  # a choice is expected, not text
        await reply(update, context, deps.texts.msg(flow.lang, "flow_use_buttons"))
        raise ApplicationHandlerStop
    value = await checked_text(update, context, flow.lang, text, TEXT_LIMITS[step])
    if value is not None:
        flow.data[step] = value
        if flow.kind == "out":
            flow.step = _next_outcome_step(flow)
            await _prompt(context, user.id, flow)
        else:
            await _finish(context, user.id, flow)
    raise ApplicationHandlerStop


async def on_private_media(update: Update, context: Context) -> None:
    """Files sent by a staff member while recording an outcome (anything else passes on)."""
    deps = deps_of(context)
    user, message = update.effective_user, update.effective_message
    if user is None or message is None or not private(update):
        return
    flow = _live_flow(deps, user.id)
    if flow is None:
        return
    if flow.step != "attachments":
        await reply(update, context, deps.texts.msg(flow.lang, "flow_use_buttons"))
        raise ApplicationHandlerStop
    item = evidence_of(message)
    files = flow.data.setdefault("files", [])
    if item is None:
        await reply(update, context, deps.texts.msg(flow.lang, "unsupported_media", kind="other"))
    elif len(files) >= MAX_ATTACHMENTS:
        await reply(update, context, deps.texts.msg(flow.lang, "evidence_full", limit=MAX_ATTACHMENTS))
    else:
        files.append(item)
        await reply(update, context, deps.texts.msg(flow.lang, "flow_attachment_received", count=len(files)),
                    [[_b(deps, flow.lang, "attachments_done", "attdone", count=len(files))]])
    raise ApplicationHandlerStop


async def cancel_command(update: Update, context: Context) -> None:
    deps = deps_of(context)
    user = update.effective_user
    if user is None or not private(update):
        return
    flow = flows(deps).pop(user.id, None)
    if flow is None:
        return  # the citizen's /cancel
    await reply(update, context, deps.texts.msg(flow.lang, "flow_cancelled"))
    raise ApplicationHandlerStop


def _live_flow(deps: Deps, user_id: int) -> StaffFlow | None:
    flow = flows(deps).get(user_id)
    if flow is not None and deps.clock.now() - flow.started > FLOW_TTL:
        flows(deps).pop(user_id, None)
        return None
    if flow is not None:
        # Only staff have flows (a citizen's id never reaches this query). A member
        # deactivated meanwhile (from the shell, too) is out of the flow at once.
        with deps.sessions.begin() as session:
            if workflow.staff_of(session, user_id) is None:
                flows(deps).pop(user_id, None)
                return None
    return flow


async def _finish(context: Context, user_id: int, flow: StaffFlow) -> None:
    """Act: re-check the case (it may have moved on since the press), then do it."""
    deps = deps_of(context)
    flows(deps).pop(user_id, None)
    now = deps.clock.now()
    lang = flow.lang
    done_text: str
    with deps.sessions.begin() as session:
        verdict = workflow.authorize(session, user_id, flow.tip_id, ACTIONS[flow.kind])
        if isinstance(verdict, Refused):
            done_text = _refusal_text(deps, lang, verdict)
        else:
            done_text = _act(session, deps, verdict, flow, now)
        # the flow ends with its effect: a restart after this commit finds no flow to finish twice
        conversations.ConversationStore.erase(session, "staff", deps.keyring.pseudonym("chat", user_id))
    deps.nudge_sender()
    await _say(context, user_id, done_text)


def _act(session: Any, deps: Deps, allowed: Allowed, flow: StaffFlow, now: datetime) -> str:
    t, lang, d = deps.texts, flow.lang, flow.data
    if flow.kind == "ask":
        workflow.ask(session, deps, allowed, d["question"], now)
        return t.msg(lang, "done_ask", tip_id=flow.tip_id)
    if flow.kind == "rea":
        if not workflow.reassign(session, deps, allowed, d["team"], d["reason"], now):
            return t.msg(lang, "flow_button_stale")
        return t.msg(lang, "done_reassign", tip_id=flow.tip_id, team=d["team"])
    if flow.kind == "ext":
        deadline = workflow.extend(session, deps, allowed, d["deadline"], d["hours"], d["reason"], now)
        return t.msg(lang, "done_extend", tip_id=flow.tip_id, deadline=t.local_time(deadline))
    result = Outcome(d["result"])
    ladder = workflow.record_outcome(session, deps, allowed, OutcomeInput(
        outcome=result, finding=d["finding"], unit_key=d.get("unit"), person_name=d.get("person"),
        person_post=d.get("post"), breach_category=d.get("breach"), transferred_to=d.get("where"),
        evidence=list(d.get("files", [])),
    ), now)
    return t.render(lang, "outcome_done", tip_id=flow.tip_id, outcome=result.value, ladder=ladder)
