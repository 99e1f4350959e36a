"""Work done on a timer (PTB's JobQueue): due reminders and escalations, news for tipsters
who opted in, forgetting idle drafts. Due work lives in tables, so nothing here depends on
an in-memory timer surviving a restart: the first sweep after a start catches up."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from bot import liveness
from bot.deps import Deps
from bot.services import deadlines, delivery, notify, outbox
from bot.services.office import office_targets
from bot.services.outbox import Button
from bot.services.views import add_event
from storage.models import Breach, DueStep, RequiredAction, Tip

log = logging.getLogger(__name__)
BATCH = 200


def sweep_due_steps(deps: Deps, now: datetime | None = None) -> int:
    """Handle every due step, each in its own transaction with the messages it queues."""
    handled = 0
    for _ in range(BATCH):
        when = now or deps.clock.now()
        with deps.sessions.begin() as session:
            step = deadlines.claim_one(session, when)
            if step is None:
                break
            _handle(session, deps, step, when)
            step.done_at = when
        handled += 1
    return handled


def _handle(session: Session, deps: Deps, step: DueStep, now: datetime) -> None:
    if step.tip_id is not None:
        tip = session.get(Tip, step.tip_id)
        if tip is None or not _still_open(tip, step.deadline_kind):
            return  # acknowledged or closed meanwhile: nothing to say
        if step.step == "remind":
            _remind_team(session, deps, tip, step, now)
        else:
            _escalate_tip(session, deps, tip, step, now)
    elif step.action_id is not None:
        action = session.get(RequiredAction, step.action_id)
        if action is None or action.received_at is not None:
            return
        _action_notice(session, deps, action, step, now)


def _still_open(tip: Tip, kind: str) -> bool:
    if tip.closed_at is not None or tip.state.startswith("closed"):
        return False
    return not (kind == "ack" and tip.state != "routed")


def _remind_team(session: Session, deps: Deps, tip: Tip, step: DueStep, now: datetime) -> None:
    for target in delivery.team_targets(session, deps, tip.team_number):
        text = deps.texts.render(target.lang, "reminder", tip_id=tip.id, kind=step.deadline_kind,
                                 deadline=step.deadline)
        outbox.enqueue(session, deps.keyring, now, dedupe_key=f"step:{step.token}:chat:{target.chat_id}",
                       chat_id=target.chat_id, method="send_message",
                       payload={"text": text,
                                "reply_to_outbox": delivery.latest_card_row(session, tip.id, target.chat_id)},
                       purpose="reminder", tip_id=tip.id)
    add_event(session, deps.keyring, tip, now, "reminded", team_number=tip.team_number, public=False,
              detail=f"{step.deadline_kind} due {step.deadline.isoformat()}")


def _escalate_tip(session: Session, deps: Deps, tip: Tip, step: DueStep, now: datetime) -> None:
    targets = office_targets(session, deps)
    for target in targets:
        lang = target.lang
        text = deps.texts.render(lang, "escalation", tip_id=tip.id, kind=step.deadline_kind, team=tip.team_number,
                                 deadline=step.deadline, category=tip.category, unit_key=tip.unit_key)
        buttons = [[Button(deps.texts.button(lang, "reassign"), deps.keyring.sign(f"rea:{tip.id}")),
                    Button(deps.texts.button(lang, "extend"), deps.keyring.sign(f"ext:{tip.id}:{step.deadline_kind}"))]]
        outbox.enqueue(session, deps.keyring, now, dedupe_key=f"step:{step.token}:chat:{target.chat_id}",
                       chat_id=target.chat_id, method="send_message",
                       payload={"text": text, "buttons": outbox.keyboard_payload(buttons)},
                       purpose="escalation", tip_id=tip.id)
    if not targets:
        log.warning("tip %s escalated, but the office has no chat and no member to tell", tip.id)
    add_event(session, deps.keyring, tip, now, "escalated", team_number=tip.team_number, public=False,
              detail=f"{step.deadline_kind} deadline {step.deadline.isoformat()} passed")


def _action_notice(session: Session, deps: Deps, action: RequiredAction, step: DueStep, now: datetime) -> None:
    breach = session.get(Breach, action.breach_id)
    if breach is None:
        return
    for target in office_targets(session, deps):
        lang = target.lang
        text = deps.texts.render(lang, "action_due", action=action, breach=breach, overdue=step.step == "escalate",
                                 deadline=step.deadline)
        buttons = [[Button(deps.texts.button(lang, "mark_received", kind=action.kind),
                           deps.keyring.sign(f"rcv:{action.id}"))]]
        outbox.enqueue(session, deps.keyring, now, dedupe_key=f"step:{step.token}:chat:{target.chat_id}",
                       chat_id=target.chat_id, method="send_message",
                       payload={"text": text, "buttons": outbox.keyboard_payload(buttons)},
                       purpose="action_due", tip_id=breach.tip_id)


async def tick(context) -> None:  # type: ignore[no-untyped-def]
    """The JobQueue callback: sweep due steps, deliver tipsters' news, wake the sender."""
    deps: Deps = context.bot_data["deps"]
    liveness.beat("scheduler")
    handled = sweep_due_steps(deps)
    told = await notify.deliver(deps, context.bot)
    if handled:
        deps.nudge_sender()
    if handled or told:
        log.info("sweep: %d due steps handled, %d tipsters told of news", handled, told)
