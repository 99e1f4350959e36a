"""Working a case: ask the tipster, reassign, extend a deadline, record the outcome, and
keep the penalty ladder. Every action is checked against the database (who may do what
in which state), recorded on the tip's timeline and in the audit trail, and shown to the
team by editing its cards and writing in the card's thread (through the outbox).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.deps import Deps
from bot.domain.ladder import CampaignPeriod, Ladder, LadderRung, person_key
from bot.domain.lifecycle import CaseAction, Outcome, allowed_actions, transition
from bot.services import audit, deadlines, delivery, notify, outbox
from bot.services.office import office_targets
from bot.services.outbox import Button
from bot.services.views import EvidenceView, add_event, tip_view
from storage.directory import is_staff
from storage.models import Breach, Question, RequiredAction, Staff, Tip
from storage.models import Outcome as OutcomeRow

LEAD_ACTIONS = {CaseAction.REASSIGN, CaseAction.RECORD_OUTCOME}


class Refusal(StrEnum):
    NOT_STAFF = "not_staff"
    NO_TIP = "no_tip"
    WRONG_TEAM = "wrong_team"
    NOT_LEAD = "not_lead"
    NOT_OFFICE = "not_office"
    NOT_NOW = "not_now"  # the case's state does not allow it (closed, not acknowledged yet, ...)


@dataclass(frozen=True, slots=True)
class Allowed:
    staff: Staff
    tip: Tip


@dataclass(frozen=True, slots=True)
class Refused:
    reason: Refusal
    tip_id: int | None = None
    team_number: int | None = None
    state: str | None = None


def staff_of(session: Session, user_id: int) -> Staff | None:
    if not is_staff(session, user_id):  # a citizen's id never reaches SQL
        return None
    return session.scalar(select(Staff).where(Staff.telegram_user_id == user_id, Staff.active.is_(True)))


def authorize(session: Session, user_id: int, tip_id: int, action: CaseAction) -> Allowed | Refused:
    """Members of the assigned team may ask; its lead (or the office) may reassign and
    record the outcome; only the office extends deadlines. The state must allow it."""
    staff = staff_of(session, user_id)
    if staff is None or staff.role == "official":
        return Refused(Refusal.NOT_STAFF, tip_id)
    tip = session.get(Tip, tip_id, with_for_update=True)
    if tip is None:
        return Refused(Refusal.NO_TIP, tip_id)
    office = staff.role == "office"
    if action is CaseAction.EXTEND and not office:
        return Refused(Refusal.NOT_OFFICE, tip_id, tip.team_number)
    if not office and staff.team_number != tip.team_number:
        return Refused(Refusal.WRONG_TEAM, tip_id, tip.team_number)
    if action in LEAD_ACTIONS and not office and staff.role != "lead":
        return Refused(Refusal.NOT_LEAD, tip_id, tip.team_number)
    if action not in allowed_actions(tip.state):
        return Refused(Refusal.NOT_NOW, tip_id, tip.team_number, tip.state)
    return Allowed(staff, tip)


def _team_note(session: Session, deps: Deps, tip: Tip, now: datetime, key: str, template: str,
               **context: object) -> None:
    """A message in the thread of each copy of the tip's card."""
    for target in delivery.team_targets(session, deps, tip.team_number):
        text = deps.texts.render(target.lang, template, tip_id=tip.id, **context)
        card = delivery.latest_card_row(session, tip.id, target.chat_id)
        for i, part in enumerate(delivery.split_html(text)):
            outbox.enqueue(session, deps.keyring, now, dedupe_key=f"{key}:chat:{target.chat_id}:{i}",
                           chat_id=target.chat_id, method="send_message",
                           payload={"text": part, "reply_to_outbox": card}, purpose="team_note", tip_id=tip.id)


def _refresh_cards(session: Session, deps: Deps, tip: Tip, now: datetime, reason: str) -> None:
    session.flush()
    delivery.enqueue_card_edits(session, deps, tip_view(session, deps.keyring, tip), now, reason=reason)


def _move(tip: Tip, action: CaseAction, outcome: Outcome | None = None) -> None:
    tip.state = transition(tip.state, action, outcome).value


# --- ask the tipster --------------------------------------------------------------------------
def ask(session: Session, deps: Deps, allowed: Allowed, text: str, now: datetime) -> int:
    tip, staff = allowed.tip, allowed.staff
    question = Question(tip_id=tip.id, asked_by=staff.id, asked_at=now, text_enc=deps.keyring.encrypt(text))
    session.add(question)
    _move(tip, CaseAction.ASK)
    session.flush()
    add_event(session, deps.keyring, tip, now, "question", team_number=tip.team_number, staff_id=staff.id)
    audit.record(session, staff_id=staff.id, tip_id=tip.id, action="asked", detail=f"question {question.id}", at=now)
    _team_note(session, deps, tip, now, f"question:{question.id}", "note_question", by=staff.display_name,
               text=text)
    _refresh_cards(session, deps, tip, now, f"question:{question.id}")
    notify.news(session, deps, tip.id, now)
    return question.id


# --- reassign ---------------------------------------------------------------------------------
def reassign(session: Session, deps: Deps, allowed: Allowed, team: int, reason: str, now: datetime) -> bool:
    tip, staff = allowed.tip, allowed.staff
    if deps.config.team(team) is None or team == tip.team_number:
        return False
    old_team = tip.team_number
    # The old team's cards say where the tip went, and lose their buttons.
    _team_note(session, deps, tip, now, f"reassign:{tip.id}:{now.isoformat()}", "note_reassigned",
               by=staff.display_name, team=team, reason=reason)
    _move(tip, CaseAction.REASSIGN)
    tip.team_number = team
    tip.acknowledged_at = None
    tip.acknowledged_by = None
    tip.route_rule = "reassigned"
    tip.route_reason = f"reassigned from team {old_team}"  # the reason itself: encrypted, on the timeline
    deadlines.cancel(session, now, tip_id=tip.id)
    deadlines.start_clocks(session, deps.config, tip, now)
    event = add_event(session, deps.keyring, tip, now, "reassigned", team_number=team, staff_id=staff.id,
                      detail=reason)
    session.flush()
    audit.record(session, staff_id=staff.id, tip_id=tip.id, action="reassigned",
                 detail=f"team {old_team} -> {team}", quote=reason, keyring=deps.keyring, at=now)
    view = tip_view(session, deps.keyring, tip)
    # Old copies: re-rendered with the new state (no buttons for the old team).
    delivery.enqueue_card_edits(session, deps, view, now, reason=f"reassign:{event.id}")
    targets = delivery.team_targets(session, deps, team)
    if targets:
        delivery.enqueue_tip_card(session, deps, view, now, targets, key_suffix=f":r{event.id}")
    else:
        add_event(session, deps.keyring, tip, now, "awaiting_team", team_number=team, public=False)
    return True


# --- extend a deadline ---------------------------------------------------------------------------
def extend(session: Session, deps: Deps, allowed: Allowed, kind: deadlines.Kind, hours: float, reason: str,
           now: datetime) -> datetime:
    tip, staff = allowed.tip, allowed.staff
    deadline = deadlines.extend(session, deps.config, tip, kind, timedelta(hours=hours), now)
    add_event(session, deps.keyring, tip, now, "deadline_extended", team_number=tip.team_number,
              staff_id=staff.id, public=False, detail=f"{kind} +{hours:g}h: {reason}")
    audit.record(session, staff_id=staff.id, tip_id=tip.id, action="extended",
                 detail=f"{kind} +{hours:g}h to {deadline.isoformat()}", quote=reason, keyring=deps.keyring, at=now)
    _team_note(session, deps, tip, now, f"extend:{tip.id}:{kind}:{deadline.isoformat()}", "note_extended",
               kind=kind, deadline=deadline, reason=reason)
    _refresh_cards(session, deps, tip, now, f"extend:{kind}:{deadline.isoformat()}")
    return deadline


# --- outcomes and the ladder ----------------------------------------------------------------------
@dataclass
class OutcomeInput:
    outcome: Outcome
    finding: str
    unit_key: str | None = None
    person_name: str | None = None
    person_post: str | None = None
    breach_category: str | None = None
    transferred_to: str | None = None
    evidence: list = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LadderResult:
    breach_id: int
    breach_number: int
    referral: bool
    leader_accountable: bool
    actions: tuple[tuple[int, str, datetime | None], ...]


def ladder_of(deps: Deps) -> Ladder:
    return Ladder(
        tuple(
            LadderRung(
                min_count=r.min_count,
                person_actions=tuple(r.person_actions),
                unit_actions=tuple(r.unit_actions),
                in_bulletin=r.in_bulletin,
                refer_to_discipline=r.refer_to_discipline,
                hold_leader_accountable=r.hold_leader_accountable,
            )
            for r in deps.config.ladder.rungs
        )
    )


def record_outcome(session: Session, deps: Deps, allowed: Allowed, data: OutcomeInput, now: datetime
                   ) -> LadderResult | None:
    tip, staff = allowed.tip, allowed.staff
    k = deps.keyring
    if data.outcome is Outcome.VERIFIED and not (data.person_name and data.person_post and data.unit_key
                                                 and data.breach_category):
        raise ValueError("a verified outcome names the unit, the person, the post and the breach")
    _move(tip, CaseAction.RECORD_OUTCOME, data.outcome)
    tip.closed_at = now
    attachments = [{"kind": e.kind, "file_id": e.file_id} for e in data.evidence]
    row = OutcomeRow(tip_id=tip.id, outcome=data.outcome.value, unit_key=data.unit_key,
                     person_name=data.person_name, person_post=data.person_post,
                     breach_category=data.breach_category, finding_enc=k.encrypt(data.finding),
                     transferred_to_enc=k.encrypt_opt(data.transferred_to), recorded_by=staff.id, recorded_at=now,
                     attachments_enc=k.encrypt(json.dumps(attachments)) if attachments else None)
    session.add(row)
    session.flush()
    deadlines.cancel(session, now, tip_id=tip.id)
    public_detail = data.outcome.value + (f": {data.transferred_to}" if data.transferred_to else "")
    add_event(session, k, tip, now, "closed", team_number=tip.team_number, staff_id=staff.id, detail=public_detail)
    audit.record(session, staff_id=staff.id, tip_id=tip.id, action="outcome", detail=data.outcome.value,
                 quote=data.transferred_to, keyring=k, at=now)
    result = None
    if data.outcome is Outcome.VERIFIED:
        result = _climb_ladder(session, deps, tip, row, now)
    _team_note(session, deps, tip, now, f"outcome:{row.id}", "note_outcome", by=staff.display_name,
               outcome=data.outcome.value, finding=data.finding, person=data.person_name,
               post=data.person_post, transferred_to=data.transferred_to, attachments=len(attachments))
    if attachments:  # the team's own files follow the note, by file id
        items = tuple(EvidenceView(i, e.kind, e.file_id, None) for i, e in enumerate(data.evidence, start=1))
        for target in delivery.team_targets(session, deps, tip.team_number):
            delivery.enqueue_evidence(session, deps, tip.id, items, now, target,
                                      f"outcome:{row.id}:chat:{target.chat_id}", None)
    _refresh_cards(session, deps, tip, now, f"outcome:{row.id}")
    notify.news(session, deps, tip.id, now, final=True)
    return result


def _climb_ladder(session: Session, deps: Deps, tip: Tip, row: OutcomeRow, now: datetime) -> LadderResult:
    assert row.person_name and row.person_post and row.unit_key and row.breach_category
    cfg = deps.config.ladder
    period = CampaignPeriod(cfg.period_start, cfg.period_end)
    today = now.astimezone(deps.config.campaign.tz).date()
    key = person_key(row.person_name, row.unit_key)
    in_period = [Breach.person_key == key, Breach.occurred_on >= period.start]
    if period.end is not None:
        in_period.append(Breach.occurred_on <= period.end)
    prior = session.scalar(select(func.count()).select_from(Breach).where(*in_period)) or 0
    # A breach outside the campaign period starts a count of its own.
    penalty = ladder_of(deps).penalty_for(int(prior) if period.contains(today) else 0)
    breach = Breach(outcome_id=row.id, tip_id=tip.id, person_key=key, person_name=row.person_name,
                    person_post=row.person_post, unit_key=row.unit_key, category=row.breach_category,
                    occurred_on=today, breach_number=penalty.breach_number, in_bulletin=penalty.in_bulletin,
                    referral=penalty.refer_to_discipline, leader_accountable=penalty.hold_leader_accountable,
                    created_at=now)
    session.add(breach)
    session.flush()
    actions: list[tuple[int, str, datetime | None]] = []
    kinds = [(a, "person") for a in penalty.person_actions] + [(a, "unit") for a in penalty.unit_actions]
    for kind, target in kinds:
        action = RequiredAction(breach_id=breach.id, kind=kind, target=target, created_at=now)
        session.add(action)
        session.flush()
        due = deadlines.plan_action(session, deps.config, action, now)
        actions.append((action.id, kind, due))
    for kind, flag in (("discipline_referral", penalty.refer_to_discipline),
                       ("leader_accountability", penalty.hold_leader_accountable)):
        if flag:
            action = RequiredAction(breach_id=breach.id, kind=kind, target="person" if kind == "discipline_referral"
                                    else "unit", created_at=now)
            session.add(action)
            session.flush()
            actions.append((action.id, kind, None))
    result = LadderResult(breach.id, breach.breach_number, breach.referral, breach.leader_accountable,
                          tuple(actions))
    _tell_office_of_breach(session, deps, tip, breach, result, now)
    return result


def _tell_office_of_breach(session: Session, deps: Deps, tip: Tip, breach: Breach, result: LadderResult,
                           now: datetime) -> None:
    """The office hears at once: required actions with buttons to mark them received; a
    referral to the discipline committee stands out."""
    for target in office_targets(session, deps):
        buttons = [
            [Button(deps.texts.button(target.lang, "mark_received", kind=kind),
                    deps.keyring.sign(f"rcv:{action_id}"))]
            for action_id, kind, due in result.actions if due is not None
        ]
        text = deps.texts.render(target.lang, "breach", tip_id=tip.id, breach=breach, actions=result.actions)
        outbox.enqueue(session, deps.keyring, now, dedupe_key=f"breach:{breach.id}:chat:{target.chat_id}",
                       chat_id=target.chat_id, method="send_message",
                       payload={"text": text, "buttons": outbox.keyboard_payload(buttons or None)},
                       purpose="breach", tip_id=tip.id)


class ReceiveStatus(StrEnum):
    RECEIVED = "received"
    ALREADY = "already"
    NOT_OFFICE = "not_office"
    UNKNOWN = "unknown"


def mark_received(session: Session, deps: Deps, action_id: int, user_id: int, now: datetime) -> ReceiveStatus:
    staff = staff_of(session, user_id)
    if staff is None or staff.role != "office":
        return ReceiveStatus.NOT_OFFICE
    action = session.get(RequiredAction, action_id, with_for_update=True)
    if action is None:
        return ReceiveStatus.UNKNOWN
    if action.received_at is not None:
        return ReceiveStatus.ALREADY
    action.received_at = now
    action.received_by = staff.id
    deadlines.cancel(session, now, action_id=action.id)
    breach = session.get(Breach, action.breach_id)
    audit.record(session, staff_id=staff.id, tip_id=breach.tip_id if breach else None, action="action_received",
                 detail=f"{action.kind} (action {action.id})", at=now)
    return ReceiveStatus.RECEIVED
