"""Officials (领导干部): their subscriptions and language."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.config import LANGUAGES
from bot.deps import Deps
from storage.directory import is_staff
from storage.models import Staff
from storage.models_officials import Subscription

KINDS = ("daily_summary", "bulletins", "escalations")


@dataclass(frozen=True, slots=True)
class Recipient:
    staff_id: int
    chat_id: int
    lang: str


def ensure_subscription(session: Session, deps: Deps, staff: Staff, now: datetime) -> Subscription:
    sub = session.get(Subscription, staff.id)
    if sub is None:
        cfg = deps.config.officials
        sub = Subscription(staff_id=staff.id, daily_summary=cfg.default_summary, bulletins=cfg.default_bulletins,
                           escalations=cfg.default_escalations, updated_at=now)
        session.add(sub)
        session.flush()
    return sub


def official(session: Session, user_id: int) -> Staff | None:
    """The active official with this Telegram id (strangers and other staff: None). A
    citizen's id never reaches SQL: the in-memory directory answers for them."""
    if not is_staff(session, user_id):
        return None
    return session.scalar(
        select(Staff).where(Staff.telegram_user_id == user_id, Staff.role == "official", Staff.active.is_(True))
    )


def toggle(session: Session, deps: Deps, staff: Staff, kind: str, now: datetime) -> Subscription:
    if kind not in KINDS:
        raise ValueError(f"unknown subscription {kind!r}")
    sub = ensure_subscription(session, deps, staff, now)
    setattr(sub, kind, not getattr(sub, kind))
    sub.updated_at = now
    return sub


def unsubscribe_all(session: Session, deps: Deps, staff: Staff, now: datetime) -> Subscription:
    sub = ensure_subscription(session, deps, staff, now)
    sub.daily_summary = sub.bulletins = sub.escalations = False
    sub.updated_at = now
    return sub


def set_language(staff: Staff, lang: str) -> None:
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}")
    staff.language = lang


def recipients(session: Session, kind: str) -> list[Recipient]:
    """Active officials subscribed to `kind`, in a stable order."""
    if kind not in KINDS:
        raise ValueError(f"unknown subscription {kind!r}")
    rows = session.execute(
        select(Staff.id, Staff.telegram_user_id, Staff.language)
        .join(Subscription, Subscription.staff_id == Staff.id)
        .where(Staff.role == "official", Staff.active.is_(True), getattr(Subscription, kind).is_(True))
        .order_by(Staff.id)
    ).all()
    return [Recipient(r[0], r[1], r[2]) for r in rows]
