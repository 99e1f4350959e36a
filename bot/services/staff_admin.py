"""Staff lifecycle: list, deactivate, reactivate, change role, move to another team; list
and revoke invite codes. Used by `tipline staff ...`, `tipline invite --list|--revoke` and
the office's /staff in the bot.

Every change is one audit entry (`staff_id` is who did it: an office member, or None with a
detail starting "cli" for the shell). A deactivated member is refused on every press, since
every press looks the member up as active in the database, also on cards sent before; nothing
more is queued for them (deliveries only go to active members) and what is still queued for
their private chat is given up here, in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from bot.deps import Deps
from bot.services import audit
from bot.services.staff import invite_hash, normalize_invite, redeliver_waiting
from storage.models import Conversation, Invite, OutboxMessage, Staff

STAFF_CONVERSATIONS = ("staff", "entry", "note")  # kinds kept for a person (bot/conversations.py)

TEAM_ROLES = ("lead", "member")
SETTABLE_ROLES = ("lead", "member", "office")
DEACTIVATED_ERROR = "recipient deactivated"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change: an office member (staff id) or the shell (`cli` and a login name)."""

    staff_id: int | None
    shell_user: str | None = None

    def detail(self, text: str) -> str:
        if self.staff_id is None:
            return f"cli{f' ({self.shell_user})' if self.shell_user else ''}: {text}"
        return text


class Change(StrEnum):
    DONE = "done"
    UNCHANGED = "unchanged"  # already so: nothing recorded
    NO_STAFF = "no_staff"
    NOT_ALLOWED = "not_allowed"  # e.g. a role without a team, an unknown team, oneself


@dataclass(frozen=True, slots=True)
class ChangeResult:
    status: Change
    staff: Staff | None = None
    message: str = ""
    reason: str = ""  # NOT_ALLOWED: self | official | role | needs_team | no_team | not_team_role
    cancelled: int = 0  # queued messages given up (deactivation)
    redelivered: int = 0  # waiting cards sent to a new lead


def members(session: Session, *, include_inactive: bool = True) -> list[Staff]:
    """Team staff, the office and officials (an official can be deactivated and reactivated;
    what they receive they choose themselves with /settings)."""
    query = select(Staff)
    if not include_inactive:
        query = query.where(Staff.active.is_(True))
    return list(session.scalars(query.order_by(Staff.team_number.is_(None), Staff.team_number, Staff.role,
                                               Staff.id)))


def _get(session: Session, staff_id: int) -> Staff | None:
    return session.get(Staff, staff_id, with_for_update=True)


def describe(staff: Staff) -> str:
    team = f" team {staff.team_number}" if staff.team_number is not None else ""
    return f"#{staff.id} {staff.role}{team}"


def _record(session: Session, actor: Actor, action: str, text: str, now: datetime) -> None:
    audit.record(session, staff_id=actor.staff_id, tip_id=None, action=action, detail=actor.detail(text), at=now)


def _self(actor: Actor, staff: Staff) -> bool:
    return actor.staff_id is not None and actor.staff_id == staff.id


def deactivate(session: Session, deps: Deps, staff_id: int, actor: Actor, now: datetime) -> ChangeResult:
    staff = _get(session, staff_id)
    if staff is None:
        return ChangeResult(Change.NO_STAFF)
    if _self(actor, staff):
        return ChangeResult(Change.NOT_ALLOWED, staff, "an office member cannot deactivate themselves", reason="self")
    if not staff.active:
        return ChangeResult(Change.UNCHANGED, staff)
    staff.active = False
    # What is still queued for their private chat (cards, reminders, notes) is not sent.
    cancelled = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.chat_id == staff.telegram_user_id, OutboxMessage.status == "pending")
        .values(status="failed", ready_at=None, last_error=DEACTIVATED_ERROR)  # no longer a head
        .execution_options(synchronize_session=False)
    ).rowcount or 0
    deps.staff_flows.pop(staff.telegram_user_id, None)  # a guided flow in this process ends
    # and its copy kept for a restart (any process's: the database is shared)
    session.execute(delete(Conversation).where(
        Conversation.pseudonym == deps.keyring.pseudonym("chat", staff.telegram_user_id),
        Conversation.kind.in_(STAFF_CONVERSATIONS)))
    _record(session, actor, "staff_deactivated", f"{describe(staff)} {staff.display_name}", now)
    return ChangeResult(Change.DONE, staff, cancelled=cancelled)


def reactivate(session: Session, deps: Deps, staff_id: int, actor: Actor, now: datetime) -> ChangeResult:
    staff = _get(session, staff_id)
    if staff is None:
        return ChangeResult(Change.NO_STAFF)
    if staff.active:
        return ChangeResult(Change.UNCHANGED, staff)
    staff.active = True
    _record(session, actor, "staff_reactivated", f"{describe(staff)} {staff.display_name}", now)
    redelivered = _redeliver(session, deps, staff, now)
    return ChangeResult(Change.DONE, staff, redelivered=redelivered)


def set_role(session: Session, deps: Deps, staff_id: int, role: str, actor: Actor, now: datetime,
             team: int | None = None) -> ChangeResult:
    """lead | member (with a team: the current one unless `team` is given) | office (no team)."""
    staff = _get(session, staff_id)
    if staff is None:
        return ChangeResult(Change.NO_STAFF)
    if staff.role == "official":
        return ChangeResult(Change.NOT_ALLOWED, staff, "an official's role is not changed (invite them anew)", reason="official")
    if role not in SETTABLE_ROLES:
        return ChangeResult(Change.NOT_ALLOWED, staff, f"role must be one of {', '.join(SETTABLE_ROLES)}", reason="role")
    if _self(actor, staff):
        return ChangeResult(Change.NOT_ALLOWED, staff, "an office member cannot change their own role", reason="self")
    new_team = None if role == "office" else (team if team is not None else staff.team_number)
    if role in TEAM_ROLES:
        if new_team is None:
            return ChangeResult(Change.NOT_ALLOWED, staff, f"a {role} needs a team (--team N)", reason="needs_team")
        if deps.config.team(new_team) is None:
            return ChangeResult(Change.NOT_ALLOWED, staff, f"no team {new_team} in [[teams]]", reason="no_team")
    if staff.role == role and staff.team_number == new_team:
        return ChangeResult(Change.UNCHANGED, staff)
    before = describe(staff)
    staff.role, staff.team_number = role, new_team
    _record(session, actor, "staff_role_set", f"{before} -> {describe(staff)} {staff.display_name}", now)
    return ChangeResult(Change.DONE, staff, redelivered=_redeliver(session, deps, staff, now))


def move(session: Session, deps: Deps, staff_id: int, team: int, actor: Actor, now: datetime) -> ChangeResult:
    staff = _get(session, staff_id)
    if staff is None:
        return ChangeResult(Change.NO_STAFF)
    if staff.role not in TEAM_ROLES:
        return ChangeResult(Change.NOT_ALLOWED, staff, "only leads and members belong to a team", reason="not_team_role")
    if deps.config.team(team) is None:
        return ChangeResult(Change.NOT_ALLOWED, staff, f"no team {team} in [[teams]]", reason="no_team")
    if staff.team_number == team:
        return ChangeResult(Change.UNCHANGED, staff)
    before = describe(staff)
    staff.team_number = team
    _record(session, actor, "staff_moved", f"{before} -> {describe(staff)} {staff.display_name}", now)
    return ChangeResult(Change.DONE, staff, redelivered=_redeliver(session, deps, staff, now))


def _redeliver(session: Session, deps: Deps, staff: Staff, now: datetime) -> int:
    if staff.active and staff.role == "lead" and staff.team_number is not None:
        session.flush()
        return redeliver_waiting(session, deps, staff.team_number, now)
    return 0


# --- invite codes ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class InviteRow:
    id: int
    kind: str
    role: str | None
    team_number: int | None
    created_at: datetime
    expires_at: datetime
    state: str  # open | used | expired | revoked


def invite_state(invite: Invite, now: datetime) -> str:
    if invite.revoked_at is not None:
        return "revoked"
    if invite.used_at is not None:
        return "used"
    if invite.expires_at <= now:
        return "expired"
    return "open"


def list_invites(session: Session, now: datetime, *, all_: bool = False) -> list[InviteRow]:
    """Invite codes (the codes themselves are not stored: only their number and what they do).
    Open ones by default; `all_` adds used, expired and revoked ones."""
    query = select(Invite).order_by(Invite.id)
    if not all_:
        query = query.where(Invite.used_at.is_(None), Invite.revoked_at.is_(None), Invite.expires_at > now)
    return [InviteRow(i.id, i.kind, i.role, i.team_number, i.created_at, i.expires_at, invite_state(i, now))
            for i in session.scalars(query)]


def revoke_invite(session: Session, deps: Deps, code_or_number: str, actor: Actor, now: datetime) -> ChangeResult:
    """Revoke an open invite by its code or by its number (`#12` or `12`, from `--list`)."""
    text = code_or_number.strip().lstrip("#")
    if text.isdigit() and len(text) < 10:
        invite = session.get(Invite, int(text), with_for_update=True)
    else:
        invite = session.scalar(select(Invite).where(Invite.code_hash == invite_hash(deps.keyring, text))
                                .with_for_update())
    if invite is None or not normalize_invite(text):
        return ChangeResult(Change.NO_STAFF, message="no such invite code")
    state = invite_state(invite, now)
    if state != "open":
        return ChangeResult(Change.UNCHANGED, message=f"invite #{invite.id} is {state} already")
    invite.revoked_at = now
    _record(session, actor, "invite_revoked", f"invite #{invite.id} ({invite.kind} {invite.role or ''} "
            f"team {invite.team_number})", now)
    return ChangeResult(Change.DONE, message=f"invite #{invite.id} revoked")


def history(session: Session, limit: int = 50) -> list[audit.TrailEntry]:
    """The latest staff and invite changes, newest first."""
    from storage.models import AuditEntry

    actions = ("staff_deactivated", "staff_reactivated", "staff_role_set", "staff_moved", "invite_revoked",
               "invite_burned", "joined", "bound")
    rows = session.execute(
        select(AuditEntry, Staff.display_name, Staff.role)
        .outerjoin(Staff, Staff.id == AuditEntry.staff_id)
        .where(AuditEntry.action.in_(actions), AuditEntry.tip_id.is_(None))
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        .limit(limit)
    ).all()
    return [audit.TrailEntry(e.at, e.staff_id, name, role, e.action, e.detail) for e, name, role in rows]
