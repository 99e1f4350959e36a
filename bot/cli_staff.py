"""Staff lifecycle commands of the admin CLI (added to `tipline` by bot/cli.py).

    tipline staff list [--all]              team members, leads and the office (--all: deactivated too)
    tipline staff deactivate ID             refused on every button from now on; receives nothing more
    tipline staff reactivate ID
    tipline staff set-role ID lead|member|office [--team N]
    tipline staff move ID --team N
    tipline staff log [--limit N]           the latest staff and invite changes (who, what, when)
    tipline invite --list [--all]           invite codes not used yet (--all: every code)
    tipline invite --revoke CODE|NUMBER     revoke an unused invite code

ID is the number `staff list` shows (#12 or 12). Every change is in the audit trail, as
done from the shell by the login running the command.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from bot import logs


def _deps(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from bot.cli import _config, _open_db

    config = _config(args)
    logs.quiet_libraries()
    return _open_db(config)


def _actor():  # type: ignore[no-untyped-def]
    from bot.services.staff_admin import Actor

    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = None
    return Actor(None, login)


def _staff_id(text: str) -> int:
    value = text.strip().lstrip("#")
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a staff number (see `tipline staff list`)")
    return int(value)


def cmd_staff(args: argparse.Namespace) -> int:
    from bot.services import staff_admin
    from bot.services.staff_admin import Change

    deps = _deps(args)
    now = deps.clock.now()
    if args.action == "list":
        with deps.sessions.begin() as session:
            people = staff_admin.members(session, include_inactive=args.all)
            if not people:
                print("no staff registered yet (tipline invite --role ...)")
            for s in people:
                team = f"team {s.team_number}" if s.team_number is not None else "-"
                state = "active" if s.active else "deactivated"
                print(f"#{s.id:<5} {s.role:<7} {team:<8} {state:<12} {s.display_name}  "
                      f"(telegram {s.telegram_user_id}, joined {deps.texts.local_time(s.joined_at)})")
        return 0
    if args.action == "log":
        with deps.sessions.begin() as session:
            for e in staff_admin.history(session, args.limit):
                print(f"{deps.texts.local_time(e.at)}  {e.action:<18} by {e.who:<24} {e.detail or ''}")
        return 0
    actor = _actor()
    with deps.sessions.begin() as session:
        if args.action == "deactivate":
            result = staff_admin.deactivate(session, deps, args.id, actor, now)
        elif args.action == "reactivate":
            result = staff_admin.reactivate(session, deps, args.id, actor, now)
        elif args.action == "set-role":
            result = staff_admin.set_role(session, deps, args.id, args.role, actor, now, team=args.team)
        else:
            result = staff_admin.move(session, deps, args.id, args.team, actor, now)
        who = f"#{args.id}" + (f" {result.staff.display_name}" if result.staff else "")
    if result.status is Change.NO_STAFF:
        print(f"tipline staff {args.action}: error: no staff member #{args.id} (see `tipline staff list`)",
              file=sys.stderr)
        return 1
    if result.status is Change.NOT_ALLOWED:
        print(f"tipline staff {args.action}: error: {result.message}", file=sys.stderr)
        return 2
    if result.status is Change.UNCHANGED:
        print(f"{who}: already so; nothing changed")
        return 0
    extra = ""
    if result.cancelled:
        extra += f"; {result.cancelled} queued message(s) to them given up"
    if result.redelivered:
        extra += f"; {result.redelivered} waiting card(s) queued for the team"
    print(f"{who}: {args.action} done{extra} (recorded in the audit trail)")
    return 0


def cmd_invites(args: argparse.Namespace, deps) -> int:  # type: ignore[no-untyped-def]
    """`tipline invite --list` / `--revoke` (called by `tipline invite`)."""
    from bot.services import staff_admin
    from bot.services.staff_admin import Change

    now = deps.clock.now()
    if args.revoke is not None:
        with deps.sessions.begin() as session:
            result = staff_admin.revoke_invite(session, deps, args.revoke, _actor(), now)
        if result.status is Change.NO_STAFF:
            print(f"tipline invite --revoke: error: {result.message}", file=sys.stderr)
            return 1
        print(result.message + ("" if result.status is Change.DONE else "; nothing changed"))
        return 0
    with deps.sessions.begin() as session:
        rows = staff_admin.list_invites(session, now, all_=args.all)
    if not rows:
        print("no open invite codes" if not args.all else "no invite codes")
    for r in rows:
        what = (f"group of team {r.team_number}" if r.team_number else "office group") if r.kind == "group" else (
            r.role or "?") + (f" of team {r.team_number}" if r.team_number is not None else "")
        print(f"#{r.id:<5} {r.state:<8} {what:<24} created {deps.texts.local_time(r.created_at)}, "
              f"valid until {deps.texts.local_time(r.expires_at)}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    st = sub.add_parser("staff", help="list, deactivate, reactivate, change role or team of staff")
    actions = st.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("list", help="staff and their state")
    ls.add_argument("--all", action="store_true", help="deactivated staff too")
    for name, text in (("deactivate", "refuse every button from now on; send nothing more"),
                       ("reactivate", "undo a deactivation")):
        a = actions.add_parser(name, help=text)
        a.add_argument("id", type=_staff_id, help="staff number from `tipline staff list`")
    sr = actions.add_parser("set-role", help="make a person lead, member or office")
    sr.add_argument("id", type=_staff_id, help="staff number from `tipline staff list`")
    sr.add_argument("role", choices=("lead", "member", "office"))
    sr.add_argument("--team", type=int, help="the team, for a lead or member (default: the current one)")
    mv = actions.add_parser("move", help="move a lead or member to another team")
    mv.add_argument("id", type=_staff_id, help="staff number from `tipline staff list`")
    mv.add_argument("--team", type=int, required=True)
    lg = actions.add_parser("log", help="the latest staff and invite changes")
    lg.add_argument("--limit", type=int, default=50)
    st.set_defaults(func=cmd_staff)
