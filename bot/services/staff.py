"""Staff: invite codes, joining, binding team groups, and acknowledging tips."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.deps import Deps
from bot.domain.invite import new_invite_code, normalize_invite
from bot.domain.lifecycle import CaseAction, CaseState, IllegalTransition, transition
from bot.services import audit, deadlines, delivery, notify, officials
from bot.services.views import add_event, tip_view
from bot.security import Keyring
from storage.directory import is_staff
from storage.models import Invite, Staff, TeamChat, Tip, TipEvent

ROLES = ("lead", "member", "office", "official")
def invite_hash(keyring: Keyring, code: str) -> str:
    return keyring.pseudonym("invite", normalize_invite(code))


def create_invite(
    session: Session,
    keyring: Keyring,
    now: datetime,
    *,
    kind: str,
    role: str | None,
    team_number: int | None,
    valid_for: timedelta = timedelta(days=7),
) -> str:
    if kind not in ("person", "group"):
        raise ValueError("kind is person or group")
    if kind == "person" and role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    code = new_invite_code()
    session.add(
        Invite(code_hash=invite_hash(keyring, code), kind=kind, role=role, team_number=team_number,
               created_at=now, expires_at=now + valid_for)
    )
    return code


class JoinStatus(StrEnum):
    JOINED = "joined"
    BOUND = "bound"
    INVALID = "invalid"  # unknown, used or expired: one answer, so codes cannot be probed
    WRONG_KIND = "wrong_kind"  # a group code in a private chat
    BURNED = "burned"  # a personal code posted in a group: revoked on the spot


@dataclass(frozen=True, slots=True)
class JoinResult:
    status: JoinStatus
    role: str | None = None
    team_number: int | None = None
    redelivered: int = 0


def _usable_invite(session: Session, keyring: Keyring, code: str, now: datetime) -> Invite | None:
    invite = session.scalar(select(Invite).where(Invite.code_hash == invite_hash(keyring, code)))
    if invite is None or invite.used_at is not None or invite.revoked_at is not None or invite.expires_at <= now:
        return None
    return invite


def _claim_invite(session: Session, invite: Invite, now: datetime) -> bool:
    """Use the code up atomically: of two joins racing with one code, one wins."""
    result = session.execute(
        update(Invite).where(Invite.id == invite.id, Invite.used_at.is_(None)).values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:
        return False
    invite.used_at = now
    return True


def join(
    session: Session, deps: Deps, code: str, user_id: int, display_name: str, lang: str, now: datetime
) -> JoinResult:
    invite = _usable_invite(session, deps.keyring, code, now)
    if invite is None:
        return JoinResult(JoinStatus.INVALID)
    if invite.kind != "person":
        return JoinResult(JoinStatus.WRONG_KIND)
    if not _claim_invite(session, invite, now):
        return JoinResult(JoinStatus.INVALID)
    # Only a known staff id is used in SQL: the code was good, but the person may be a citizen.
    staff = session.scalar(select(Staff).where(Staff.telegram_user_id == user_id)) if is_staff(session, user_id) \
        else None
    if staff is None:
        staff = Staff(telegram_user_id=user_id, display_name=display_name, role=invite.role or "member",
                      team_number=invite.team_number, language=lang, active=True, joined_at=now)
        session.add(staff)
    else:  # a new code changes a person's role or team
        staff.role = invite.role or staff.role
        staff.team_number = invite.team_number
        staff.display_name = display_name
        staff.active = True
    session.flush()
    invite.used_by_staff_id = staff.id
    audit.record(session, staff_id=staff.id, tip_id=None, action="joined",
                 detail=f"role={staff.role} team={staff.team_number}", at=now)
    if staff.role == "official":
        officials.ensure_subscription(session, deps, staff, now)
    redelivered = 0
    if staff.role == "lead" and staff.team_number is not None:
        redelivered = redeliver_waiting(session, deps, staff.team_number, now)
    return JoinResult(JoinStatus.JOINED, staff.role, staff.team_number, redelivered)


def bind_group(
    session: Session, deps: Deps, code: str, chat_id: int, title: str, now: datetime, *, by_user_id: int | None = None
) -> JoinResult:
    """Bind a team's Telegram group; `by_user_id` (who sent /join) goes into the audit trail."""
    invite = _usable_invite(session, deps.keyring, code, now)
    if invite is None:
        return JoinResult(JoinStatus.INVALID)
    if invite.kind == "person":
        # A personal code seen by a whole group is spent: nobody may use it any more.
        invite.revoked_at = now
        by = staff_by_user(session, by_user_id) if by_user_id is not None else None
        audit.record(session, staff_id=by.id if by else None, tip_id=None, action="invite_burned",
                     detail=f"invite #{invite.id} ({invite.role} team {invite.team_number}) posted in a group",
                     at=now)
        return JoinResult(JoinStatus.BURNED)
    if invite.kind != "group" or invite.team_number is None:
        return JoinResult(JoinStatus.WRONG_KIND)
    if not _claim_invite(session, invite, now):
        return JoinResult(JoinStatus.INVALID)
    chat = session.scalar(select(TeamChat).where(TeamChat.chat_id == chat_id))
    if chat is None:
        session.add(TeamChat(team_number=invite.team_number, chat_id=chat_id, title=title[:256], bound_at=now,
                             active=True))
    else:
        chat.team_number, chat.title, chat.active, chat.bound_at = invite.team_number, title[:256], True, now
    invite.used_by_chat_id = chat_id
    session.flush()
    by = staff_by_user(session, by_user_id) if by_user_id is not None else None
    audit.record(session, staff_id=by.id if by else None, tip_id=None, action="bound",
                 detail=f"team={invite.team_number} chat={chat_id}", at=now)
    redelivered = redeliver_waiting(session, deps, invite.team_number, now)
    return JoinResult(JoinStatus.BOUND, None, invite.team_number, redelivered)


def redeliver_waiting(session: Session, deps: Deps, team_number: int, now: datetime) -> int:
    """Cards of the team's open tips that never had anyone to go to."""
    waiting = session.scalars(
        select(Tip)
        .where(Tip.team_number == team_number, Tip.state == CaseState.ROUTED.value)
        .where(Tip.id.in_(select(TipEvent.tip_id).where(TipEvent.kind == "awaiting_team")))
        .where(~Tip.id.in_(select(TipEvent.tip_id).where(TipEvent.kind == "card_queued")))
        .order_by(Tip.id)
    ).all()
    targets = delivery.team_targets(session, deps, team_number)
    if not targets:
        return 0
    for tip in waiting:
        delivery.enqueue_tip_card(session, deps, tip_view(session, deps.keyring, tip), now, targets)
        add_event(session, deps.keyring, tip, now, "card_queued", team_number=team_number, public=False)
    return len(waiting)


def staff_by_user(session: Session, user_id: int) -> Staff | None:
    """The active staff member with this Telegram id. A citizen's id never reaches SQL:
    it is looked up in the in-memory directory first (storage/directory.py)."""
    if not is_staff(session, user_id):
        return None
    return session.scalar(select(Staff).where(Staff.telegram_user_id == user_id, Staff.active.is_(True)))


class AckStatus(StrEnum):
    ACKNOWLEDGED = "acknowledged"
    NOT_STAFF = "not_staff"
    WRONG_TEAM = "wrong_team"
    ALREADY = "already"
    NO_TIP = "no_tip"
    NOT_ROUTED = "not_routed"


@dataclass(frozen=True, slots=True)
class AckResult:
    status: AckStatus
    tip_id: int | None = None
    by: str | None = None
    at: datetime | None = None
    team_number: int | None = None


def may_act_on(staff: Staff, tip: Tip) -> bool:
    return staff.role == "office" or staff.team_number == tip.team_number


def acknowledge(session: Session, deps: Deps, tip_id: int, user_id: int, now: datetime) -> AckResult:
    staff = staff_by_user(session, user_id)
    if staff is None:
        return AckResult(AckStatus.NOT_STAFF, tip_id)
    tip = session.get(Tip, tip_id, with_for_update=True)
    if tip is None:
        return AckResult(AckStatus.NO_TIP, tip_id)
    if not may_act_on(staff, tip):
        return AckResult(AckStatus.WRONG_TEAM, tip_id, team_number=tip.team_number)
    if tip.acknowledged_at is not None and tip.state != CaseState.ROUTED.value:
        by = session.get(Staff, tip.acknowledged_by) if tip.acknowledged_by else None
        return AckResult(AckStatus.ALREADY, tip_id, by.display_name if by else None, tip.acknowledged_at)
    try:
        tip.state = transition(tip.state, CaseAction.ACKNOWLEDGE).value
    except IllegalTransition:
        return AckResult(AckStatus.NOT_ROUTED, tip_id)
    tip.acknowledged_at = now
    tip.acknowledged_by = staff.id
    deadlines.cancel(session, now, tip_id=tip.id, kind="ack")
    add_event(session, deps.keyring, tip, now, "acknowledged", team_number=tip.team_number, staff_id=staff.id)
    audit.record(session, staff_id=staff.id, tip_id=tip.id, action="acknowledged", detail=None, at=now)
    notify.news(session, deps, tip.id, now)
    session.flush()
    view = tip_view(session, deps.keyring, tip)
    delivery.enqueue_card_edits(session, deps, view, now, reason="ack")
    return AckResult(AckStatus.ACKNOWLEDGED, tip_id, staff.display_name, now, tip.team_number)
