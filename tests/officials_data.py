"""Hand-built data sets for the officials' features: rows inserted directly (tips, outcomes,
breaches, required actions, due steps), as the workflow would leave them."""

from __future__ import annotations

import itertools
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from bot.deps import Deps
from bot.services import staff
from storage.models import Breach, DueStep, Outcome, RequiredAction, Staff, Tip

TZ = ZoneInfo("Asia/Shanghai")
_seq = itertools.count(1)


def local(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=TZ)


def add_person(session: Session, deps: Deps, user_id: int, name: str, role: str, lang: str = "zh-CN",
               team: int | None = None) -> Staff:
    now = deps.clock.now()
    code = staff.create_invite(session, deps.keyring, now, kind="person", role=role, team_number=team)
    session.flush()
    result = staff.join(session, deps, code, user_id, name, lang, now)
    assert result.status is staff.JoinStatus.JOINED, result
    found = session.query(Staff).filter_by(telegram_user_id=user_id).one()
    return found


def add_tip(session: Session, deps: Deps, *, category: str, unit: str, team: int, created: datetime,
            ack_due: datetime, acked: datetime | None = None, outcome_due: datetime | None = None,
            closed: datetime | None = None, by: int | None = None) -> Tip:
    n = next(_seq)
    tip = Tip(receipt_hash=f"hand-built-{n}-{created.timestamp()}", channel="telegram", category=category,
              unit_key=unit, place_enc=deps.keyring.encrypt("place"), text_enc=deps.keyring.encrypt("text"),
              state="acknowledged" if acked else "routed", team_number=team, route_rule="test",
              route_reason="test", created_at=created, routed_at=created, ack_due_at=ack_due,
              acknowledged_at=acked, acknowledged_by=by if acked else None, outcome_due_at=outcome_due,
              closed_at=closed)
    session.add(tip)
    session.flush()
    return tip


def add_outcome(session: Session, tip: Tip, outcome: str, at: datetime, by: int) -> Outcome:
    row = Outcome(tip_id=tip.id, outcome=outcome, recorded_by=by, recorded_at=at,
                  unit_key=tip.unit_key if outcome == "verified" else None)
    session.add(row)
    session.flush()
    return row


def add_breach(session: Session, tip: Tip, outcome: Outcome, *, name: str, post: str, at: datetime,
               number: int = 1, referral: bool = False, leader: bool = False) -> Breach:
    row = Breach(outcome_id=outcome.id, tip_id=tip.id, person_key=f"{name}|{tip.unit_key}", person_name=name,
                 person_post=post, unit_key=tip.unit_key, category=tip.category,
                 occurred_on=at.astimezone(TZ).date(), breach_number=number, in_bulletin=True, referral=referral,
                 leader_accountable=leader, bulletin_id=None, created_at=at)
    session.add(row)
    session.flush()
    return row


def add_action(session: Session, breach: Breach, kind: str, created: datetime, due: datetime | None,
               received: datetime | None = None) -> RequiredAction:
    row = RequiredAction(breach_id=breach.id, kind=kind, target="unit" if kind == "rectification_report" else "person",
                         due_at=due, received_at=received, created_at=created)
    session.add(row)
    session.flush()
    return row


def add_step(session: Session, tip: Tip | None, kind: str, step: str, done: datetime | None) -> DueStep:
    n = next(_seq)
    row = DueStep(token=f"step-{n}", tip_id=tip.id if tip else None, deadline_kind=kind, step=step, idx=0,
                  due_at=done or local(2026, 1, 1), deadline=done or local(2026, 1, 1), done_at=done)
    session.add(row)
    session.flush()
    return row


def verified_case(session: Session, deps: Deps, by: int, *, at: datetime, name: str, post: str = "科员",
                  unit: str = "land", category: str = "official-car", team: int = 7, number: int = 1) -> Breach:
    """A tip, its verified outcome and the breach, all at `at`."""
    tip = add_tip(session, deps, category=category, unit=unit, team=team, created=at, ack_due=at, acked=at, by=by)
    outcome = add_outcome(session, tip, "verified", at, by)
    breach = add_breach(session, tip, outcome, name=name, post=post, at=at, number=number,
                        referral=number >= 3, leader=number >= 3)
    add_action(session, breach, "self_criticism", at, None)
    add_action(session, breach, "rectification_report", at, None)
    return breach


def day(iso: str) -> date:
    return date.fromisoformat(iso)
