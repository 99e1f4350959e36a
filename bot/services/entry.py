"""Tips received by phone or mail (举报电话、举报邮箱), entered by the accountability office.

They go through the same pipeline as a tip sent in Telegram (`intake.submit`: routed,
carded to the team, a receipt code for the caller), marked with their channel, and the
entry is recorded in the audit trail under the office member who made it. Nothing about
the caller is asked for or stored: the caller's only link to the tip is the receipt code
the office member reads out to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from bot.config import Config
from bot.deps import Deps
from bot.services import audit, intake
from bot.services.staff import staff_by_user
from storage.models import Staff

CHANNELS = ("phone", "mail")


@dataclass(frozen=True, slots=True)
class Problem:
    """A field that cannot be accepted, and why (English; the CLI names its option)."""

    field: str  # channel | category | unit | unit_other | place | text | evidence
    message: str


def check(
    config: Config,
    *,
    channel: str,
    category: str,
    unit: str,
    unit_other: str | None,
    place: str,
    text: str,
    evidence: int = 0,
) -> list[Problem]:
    """Everything the bot checks step by step, at once; values as they will be stored."""
    cfg = config.intake
    problems: list[Problem] = []
    if channel not in CHANNELS:
        problems.append(Problem("channel", f"{channel!r} is not one of: {', '.join(CHANNELS)}"))
    keys = [c.key for c in config.categories]
    if category not in keys:
        problems.append(Problem("category", f"unknown category {category!r}; known: {', '.join(keys)}"))
    units = [u.key for u in config.units]
    if unit != "other" and unit not in units:
        problems.append(Problem("unit", f"unknown unit {unit!r}; known: {', '.join(units)}, or other"))
    if unit == "other":
        if not unit_other:
            problems.append(Problem("unit_other", "needed with unit 'other': the unit's name"))
        elif len(unit_other) > cfg.other_unit_max_chars:
            problems.append(Problem("unit_other", _too_long(unit_other, cfg.other_unit_max_chars)))
    elif unit_other is not None:
        problems.append(Problem("unit_other", "only with unit 'other'"))
    if not place:
        problems.append(Problem("place", "empty: say when and where"))
    elif len(place) > cfg.place_max_chars:
        problems.append(Problem("place", _too_long(place, cfg.place_max_chars)))
    if not text:
        problems.append(Problem("text", "empty: say what happened"))
    elif len(text) > cfg.text_max_chars:
        problems.append(Problem("text", _too_long(text, cfg.text_max_chars)))
    elif len(text) < cfg.text_min_chars:
        problems.append(Problem("text", f"too short: {len(text)} characters, at least {cfg.text_min_chars}"))
    if evidence > cfg.max_evidence:
        problems.append(Problem("evidence", f"{evidence} attachments, at most {cfg.max_evidence}"))
    return problems


def _too_long(value: str, limit: int) -> str:
    return f"too long: {len(value)} characters, at most {limit} (intake limits)"


def office_member(session: Session, telegram_user_id: int) -> Staff | None:
    """The active office member with this Telegram id, else None."""
    staff = staff_by_user(session, telegram_user_id)
    return staff if staff is not None and staff.role == "office" else None


def enter(
    session: Session,
    deps: Deps,
    new: intake.NewTip,
    receipt_hash: str,
    now: datetime,
    *,
    staff: Staff | None,
    via: str,
) -> int:
    """Store and route a phone or mail tip and record who entered it; returns its number.

    `via` is "cli" or "bot" (the audit detail says where it was entered). Refuses values
    the bot or the CLI would have refused (a ValueError naming the fields).
    """
    problems = check(deps.config, channel=new.channel, category=new.category, unit=new.unit,
                     unit_other=new.unit_other, place=new.place, text=new.text, evidence=len(new.evidence))
    if problems:
        raise ValueError("; ".join(f"{p.field}: {p.message}" for p in problems))
    if staff is not None and (staff.role != "office" or not staff.active):
        raise PermissionError("only active members of the accountability office enter tips")
    tip_id = intake.submit(session, deps, new, receipt_hash, now)
    audit.record(session, staff_id=staff.id if staff else None, tip_id=tip_id, action="entered",
                 detail=f"{via}; channel={new.channel}", at=now)
    return tip_id
