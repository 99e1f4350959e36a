"""/staff: the accountability office manages team members from the bot (private chat).

The list shows every member with a button; a member's page has Deactivate or Reactivate,
a role, and "Move to team". Each press is checked again: only an active office member may
act, and the change goes through bot/services/staff_admin.py (audited, with who did it).
The message is edited in place as one goes.
"""

from __future__ import annotations

import contextlib
import math

from telegram import CallbackQuery, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest

from bot.deps import Deps
from bot.services import staff_admin
from bot.services.outbox import Button
from bot.services.staff import staff_by_user
from bot.services.staff_admin import Actor, Change
from handlers.common import Context, deps_of, keyboard, private, reply
from storage.models import Staff

PER_PAGE = 8


def _b(deps: Deps, lang: str, name: str, payload: str, /, **kw: object) -> Button:
    return Button(deps.texts.button(lang, name, **kw), deps.keyring.sign(f"sf:{payload}"))


def list_view(deps: Deps, lang: str, people: list[Staff], page: int) -> tuple[str, list[list[Button]]]:
    pages = max(1, math.ceil(len(people) / PER_PAGE))
    page = min(max(page, 0), pages - 1)
    shown = people[page * PER_PAGE : (page + 1) * PER_PAGE]
    rows = [[_b(deps, lang, "staff_entry", f"v:{s.id}", name=s.display_name, role=s.role, team=s.team_number,
                active=s.active)] for s in shown]
    nav = []
    if page > 0:
        nav.append(_b(deps, lang, "staff_prev", f"p:{page - 1}"))
    if page < pages - 1:
        nav.append(_b(deps, lang, "staff_next", f"p:{page + 1}"))
    if nav:
        rows.append(nav)
    rows.append([_b(deps, lang, "staff_invites", "i:0")])
    text = deps.texts.msg(lang, "staff_list", active=sum(s.active for s in people),
                          inactive=sum(not s.active for s in people), page=page + 1, pages=pages)
    return text, rows


def member_view(deps: Deps, lang: str, s: Staff, note: str = "") -> tuple[str, list[list[Button]]]:
    rows: list[list[Button]] = []
    if s.active:
        rows.append([_b(deps, lang, "staff_deactivate", f"d:{s.id}")])
    else:
        rows.append([_b(deps, lang, "staff_reactivate", f"r:{s.id}")])
    roles = [] if s.role == "official" else [
        r for r in staff_admin.SETTABLE_ROLES if r != s.role and not (r != "office" and s.team_number is None)]
    if roles:
        rows.append([_b(deps, lang, "staff_set_role", f"o:{s.id}:{r}", role=r) for r in roles])
    if s.role in staff_admin.TEAM_ROLES:
        rows.append([_b(deps, lang, "staff_move", f"m:{s.id}")])
    rows.append([_b(deps, lang, "staff_back", "p:0")])
    text = deps.texts.msg(lang, "staff_member", name=s.display_name, id=s.id, role=s.role, team=s.team_number,
                          active=s.active, joined=deps.texts.local_time(s.joined_at), note=note)
    return text, rows


def invites_view(deps: Deps, lang: str, invites: list[staff_admin.InviteRow]) -> tuple[str, list[list[Button]]]:
    """Open invite codes (the codes are not stored: by number and what they do), each with Revoke."""
    rows = [[_b(deps, lang, "staff_revoke_invite", f"x:{i.id}", id=i.id, kind=i.kind, role=i.role or "",
                team=i.team_number)] for i in invites[:20]]
    rows.append([_b(deps, lang, "staff_back", "p:0")])
    lines = [deps.texts.msg(lang, "staff_invite_line", id=i.id, kind=i.kind, role=i.role or "", team=i.team_number,
                            expires=deps.texts.local_time(i.expires_at)) for i in invites]
    return deps.texts.msg(lang, "staff_invites", count=len(invites), lines=lines), rows


def teams_view(deps: Deps, lang: str, s: Staff) -> tuple[str, list[list[Button]]]:
    rows = [[_b(deps, lang, "staff_team", f"t:{s.id}:{t.number}", name=t.name.get(lang))]
            for t in deps.config.teams if t.number != s.team_number]
    rows.append([_b(deps, lang, "staff_back", f"v:{s.id}")])
    return deps.texts.msg(lang, "staff_choose_team", name=s.display_name), rows


async def staff_command(update: Update, context: Context) -> None:
    deps = deps_of(context)
    user = update.effective_user
    lang = deps.config.campaign.default_language
    if user is None:
        return
    with deps.sessions.begin() as session:
        member = staff_by_user(session, user.id)
        if member is None or member.role != "office" or not private(update):
            await reply(update, context, deps.texts.msg(lang, "staff_office_only"))
            return
        lang = member.language
        text, rows = list_view(deps, lang, staff_admin.members(session), 0)
    await reply(update, context, text, rows)


async def on_staff_button(update: Update, context: Context) -> None:
    deps = deps_of(context)
    query = update.callback_query
    assert query is not None and query.data is not None
    default = deps.config.campaign.default_language
    payload = deps.keyring.verify(query.data)
    parts = (payload or "").split(":")
    if len(parts) < 3 or parts[0] != "sf" or not parts[2].isdigit():
        await _answer(query, deps.texts.msg(default, "button_invalid"), alert=True)
        return
    action, number, arg = parts[1], int(parts[2]), parts[3] if len(parts) > 3 else ""
    now = deps.clock.now()
    alert = ""
    changed = False
    with deps.sessions.begin() as session:
        me = staff_by_user(session, query.from_user.id)
        if me is None or me.role != "office":
            await _answer(query, deps.texts.msg(default, "staff_office_only"), alert=True)
            return
        lang = me.language
        actor = Actor(me.id)
        if action == "p":
            view = list_view(deps, lang, staff_admin.members(session), number)
        elif action in ("i", "x"):
            if action == "x":
                revoked = staff_admin.revoke_invite(session, deps, str(number), actor, now)
                alert = deps.texts.msg(lang, "staff_invite_revoked" if revoked.status is Change.DONE
                                       else "staff_invite_not_open", id=number)
            view = invites_view(deps, lang, staff_admin.list_invites(session, now))
        else:
            result: staff_admin.ChangeResult | None = None
            if action == "d":
                result = staff_admin.deactivate(session, deps, number, actor, now)
            elif action == "r":
                result = staff_admin.reactivate(session, deps, number, actor, now)
            elif action == "o" and arg in staff_admin.SETTABLE_ROLES:
                result = staff_admin.set_role(session, deps, number, arg, actor, now)
            elif action == "t" and arg.isdigit():
                result = staff_admin.move(session, deps, number, int(arg), actor, now)
            elif action not in ("v", "m"):
                await _answer(query, deps.texts.msg(lang, "button_invalid"), alert=True)
                return
            target = session.get(Staff, number)
            if target is None:
                await _answer(query, deps.texts.msg(lang, "button_invalid"), alert=True)
                return
            if result is not None:
                changed = result.status is Change.DONE and (result.redelivered > 0)
                alert = deps.texts.msg(lang, f"staff_change_{result.status.value}", name=target.display_name,
                                       reason=result.reason)
            view = teams_view(deps, lang, target) if action == "m" else member_view(deps, lang, target)
    if changed:
        deps.nudge_sender()
    await _answer(query, alert or None, alert=bool(alert))
    text, rows = view
    with contextlib.suppress(BadRequest):  # "message is not modified"
        await query.edit_message_text(text, parse_mode=ParseMode.HTML, reply_markup=keyboard(rows))


async def _answer(query: CallbackQuery, text: str | None, alert: bool = False) -> None:
    with contextlib.suppress(BadRequest):
        await query.answer(text=text[:200] if text else None, show_alert=alert)
