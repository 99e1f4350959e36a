"""Submitting a tip: one transaction writes the tip, its timeline and the team's messages.

The receipt code is made and hashed by the caller (hashing is slow on purpose, so it
runs off the event loop); the code itself never reaches the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from bot.clock import to_minute
from bot.deps import Deps
from bot.domain.lifecycle import CaseState
from bot.drafts import EvidenceItem
from bot.services import deadlines, delivery
from bot.services.views import add_event, tip_view
from storage.models import Evidence, Tip


@dataclass(frozen=True, slots=True)
class NewTip:
    category: str
    unit: str
    unit_other: str | None
    place: str
    text: str
    evidence: tuple[EvidenceItem, ...] = ()
    channel: str = "telegram"
    submit_key: str | None = None  # see receipts.submit_key


def submit(session: Session, deps: Deps, new: NewTip, receipt_hash: str, now: datetime) -> int:
    """Store a tip, route it and queue its card; returns the tip's number. Everything it
    stamps is stamped to the minute (bot.clock.to_minute)."""
    now = to_minute(now)
    if deps.config.unit(new.unit) is None and new.unit != "other":
        raise ValueError(f"unknown unit {new.unit!r}")
    unit = deps.config.unit(new.unit)
    decision = deps.router.route(new.category, new.unit, unit.kind if unit else None)
    k = deps.keyring
    ack_due, outcome_due = deadlines.clocks(deps.config, new.category, now)
    tip = Tip(
        receipt_hash=receipt_hash,
        submit_key=new.submit_key,
        channel=new.channel,
        category=new.category,
        unit_key=new.unit,
        unit_other_enc=k.encrypt_opt(new.unit_other),
        place_enc=k.encrypt(new.place),
        text_enc=k.encrypt(new.text),
        state=CaseState.ROUTED.value,
        team_number=decision.team,
        route_rule=decision.rule_id,
        route_reason=decision.reason,
        created_at=now,
        routed_at=now,
        ack_due_at=ack_due,
        outcome_due_at=outcome_due,
    )
    session.add(tip)
    session.flush()
    deadlines.plan_clocks(session, deps.config, tip, now)
    for item in new.evidence:
        tip.evidence.append(
            Evidence(kind=item.kind, file_ref_enc=k.encrypt(item.file_id), caption_enc=k.encrypt_opt(item.caption),
                     added_at=now)
        )
    add_event(session, k, tip, now, "received")
    add_event(session, k, tip, now, "routed", team_number=decision.team, detail=decision.reason)
    session.flush()
    view = tip_view(session, k, tip)
    targets = delivery.team_targets(session, deps, decision.team)
    if targets:
        delivery.enqueue_tip_card(session, deps, view, now, targets)
    else:
        # Nobody can receive it yet: it goes out when the team binds a group or a lead joins.
        add_event(session, k, tip, now, "awaiting_team", team_number=decision.team, public=False)
    return tip.id
