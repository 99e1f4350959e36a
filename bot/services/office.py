"""Where the accountability office (问责办) is reached: its bound group, else its members."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.deps import Deps
from bot.services.delivery import Target
from storage.models import Staff, TeamChat

OFFICE_TEAM = 0  # an office group is bound like a team group, with team number 0 (teams are 1..99)


def office_targets(session: Session, deps: Deps) -> list[Target]:
    """Active office groups (`tipline invite --group --office`) first, else the private
    chats of active office members."""
    lang = deps.config.campaign.default_language
    groups = session.scalars(
        select(TeamChat).where(TeamChat.team_number == OFFICE_TEAM, TeamChat.active.is_(True)).order_by(TeamChat.id)
    ).all()
    if groups:
        return [Target(g.chat_id, lang) for g in groups]
    members = session.scalars(
        select(Staff).where(Staff.role == "office", Staff.active.is_(True)).order_by(Staff.id)
    ).all()
    return [Target(m.telegram_user_id, m.language) for m in members]
