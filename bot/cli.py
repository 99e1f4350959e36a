"""`tipline ...`: run the bot and administer it from the shell (the accountability office).

    tipline run                         start the bot (creates/upgrades the database first)
    tipline playground [--port N]       the whole campaign in a browser, not connected to Telegram
    tipline migrate                     create or upgrade the database only
    tipline invite --role lead --team 3 a one-time code for /join in a private chat
    tipline invite --group --team 3     a one-time code that binds a team's Telegram group
    tipline invite --role official      a one-time code for an official (summaries, bulletins)
    tipline invite --group --office     a one-time code that binds the accountability office's group
    tipline broadcast-status            delivery of summaries and bulletins to officials
    tipline summary [--date D] [--en]   print the daily summary's figures (nothing is sent)
    tipline teams                       teams, their members and bound groups
    tipline staff list|deactivate|...   staff lifecycle (bot/cli_staff.py)
    tipline invite --list|--revoke CODE unused invite codes; revoke one
    tipline outbox                      delivery state of messages to staff
    tipline enter --channel phone ...   enter a tip received by phone or mail (bot/cli_office.py)
    tipline audit TIP                   a tip's audit trail and public timeline
    tipline export [--out cases.xlsx]   one row per tip, for the office (CSV or XLSX)
    tipline init                        write config.toml from the example, with new secrets
    tipline keygen [--write]            print (or write into the config) a new pepper, data key, contact key
    tipline rotate-keys                 re-encrypt everything under a new data key, retire the old one
    tipline check-config                validate the configuration and say what is wrong

The configuration file is --config, else $TIPLINE_CONFIG, else ./config.toml.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select

from bot import logs
from bot.config import Config, ConfigError, load_config, require_secrets, require_storage_secrets
from bot.security import new_data_key, new_pepper


def _config(args: argparse.Namespace) -> Config:
    path = args.config or os.environ.get("TIPLINE_CONFIG") or "config.toml"
    return load_config(path)


def cmd_run(args: argparse.Namespace) -> int:
    from bot.app import serve
    from bot.supervise import LoopGaveUp

    config = _config(args)
    if args.playground_without_token and not config.telegram.token:
        print("tipline: no bot token (telegram.token or TIPLINE_BOT_TOKEN): starting the playground, "
              "which is not connected to Telegram", file=sys.stderr)
        return _playground(args, args.config or os.environ.get("TIPLINE_CONFIG") or "config.toml")
    require_secrets(config)  # before logging is set up: a plain message, at once
    logs.configure(config.logging.level)
    try:
        asyncio.run(serve(config))  # StartupError: one line and its exit status (main)
    except LoopGaveUp as exc:  # logged where it gave up; a supervisor restarts the process
        print(f"tipline: {exc} kept failing; exiting", file=sys.stderr)
        return 1
    return 0


def cmd_playground(args: argparse.Namespace) -> int:
    path = args.config or os.environ.get("TIPLINE_CONFIG") or "config.toml"
    _config(args) if os.path.exists(path) else None  # a broken file is refused with its key named
    return _playground(args, path)


def _playground(args: argparse.Namespace, path: str) -> int:
    from bot.playground.core import Playground, base_data, run_forever

    logs.configure("WARNING")
    data = base_data(path)
    playground = Playground(data, port=getattr(args, "port", None), language=getattr(args, "lang", None))

    def announce(pg: Playground) -> None:
        print(f"tipline playground (not connected to Telegram): open {pg.url}", flush=True)
        print(f"its data: {pg.data_dir}/ ; stop with Ctrl+C", file=sys.stderr, flush=True)

    try:
        asyncio.run(run_forever(playground, announce))
    except OSError as exc:
        raise ConfigError(f"playground.port: cannot serve on 127.0.0.1: {exc.strerror or exc}; "
                          "choose another with --port") from None
    return 0


def _open_db(config: Config):  # type: ignore[no-untyped-def]
    from bot.app import build_deps
    from bot.startup import open_database

    require_storage_secrets(config)
    engine = open_database(config)  # StartupError (one line, exit status 3) if it cannot
    deps, _ = build_deps(config, engine=engine)
    return deps


def cmd_migrate(args: argparse.Namespace) -> int:
    config = _config(args)
    logs.configure(config.logging.level)
    _open_db(config)
    print("database is at the latest schema")
    return 0


def cmd_invite(args: argparse.Namespace) -> int:
    from bot.services.office import OFFICE_TEAM
    from bot.services.staff import create_invite

    config = _config(args)
    logs.quiet_libraries()
    if args.list or args.revoke is not None:
        from bot.cli_staff import cmd_invites

        return cmd_invites(args, _open_db(config))
    if args.team is not None and config.team(args.team) is None:
        raise ConfigError(f"--team {args.team}: no such team in [[teams]]")
    if args.office and not args.group:
        raise ConfigError("--office goes with --group (an office member's code is --role office)")
    if args.group and args.team is None and not args.office:
        raise ConfigError("--group needs --team N (or --office)")
    if not args.group and args.role in ("lead", "member") and args.team is None:
        raise ConfigError(f"--role {args.role} needs --team N")
    deps = _open_db(config)
    with deps.sessions.begin() as session:
        code = create_invite(
            session, deps.keyring, deps.clock.now(),
            kind="group" if args.group else "person",
            role=("office" if args.office else None) if args.group else args.role,
            team_number=(OFFICE_TEAM if args.office else args.team) if args.group else (
                args.team if args.role in ("lead", "member") else None),
            valid_for=timedelta(days=args.days),
        )
    what = ("binds the accountability office's group" if args.office else
            f"binds a group to team {args.team}") if args.group else (
        f"registers a {args.role}" + (f" of team {args.team}" if args.team and args.role in ("lead", "member") else ""))
    print(code)
    print(f"one-time code, {what}; valid {args.days} days. Use: /join {code}", file=sys.stderr)
    return 0


def cmd_teams(args: argparse.Namespace) -> int:
    from bot.services.office import OFFICE_TEAM
    from bot.teamcheck import GroupCheck, run_checks
    from storage.models import Staff, TeamChat

    config = _config(args)
    logs.quiet_libraries()
    deps = _open_db(config)
    lang = "en" if args.en else config.campaign.default_language
    with deps.sessions.begin() as session:
        staff = session.scalars(select(Staff).order_by(Staff.team_number, Staff.role, Staff.id)).all()
        chats = session.scalars(select(TeamChat).order_by(TeamChat.team_number, TeamChat.id)).all()
    # Who may be in each bound group: the team's staff (the office's group: the office).
    expected = {c.chat_id: [s.telegram_user_id for s in staff if s.active and (
        s.role == "office" if c.team_number == OFFICE_TEAM else s.team_number == c.team_number)]
        for c in chats if c.active}
    token = config.telegram.token.get_secret_value()
    checks: dict[int, GroupCheck] = {}
    if expected and token and not args.offline:
        checks = run_checks(token, config.telegram.base_url, expected)

    def group_line(chat: TeamChat) -> None:
        state = "" if chat.active else "  [inactive]"
        print(f"     group  {chat.title or '-'}  {chat.chat_id}{state}")
        check = checks.get(chat.chat_id)
        if check is None:
            return
        if check.members is None:
            print(f"            member count unavailable ({check.error})")
            return
        print(f"            {check.members} members: the bot, {check.staff_present} registered staff, "
              f"{check.strangers} others")
        if check.strangers:
            print(f"            WARNING: {check.strangers} member(s) of this group are not registered staff and "
                  "read every card; if the group cannot be trusted, use delivery = \"leads\" for the team")

    for team in config.teams:
        print(f"{team.number}  {team.name.get(lang)}  (delivery: {team.delivery})")
        for chat in [c for c in chats if c.team_number == team.number]:
            group_line(chat)
        for member in [s for s in staff if s.team_number == team.number]:
            state = "" if member.active else "  [inactive]"
            print(f"     {member.role:<6} {member.display_name}  {member.telegram_user_id}{state}")
    office = [s for s in staff if s.role == "office"]
    office_groups = [c for c in chats if c.team_number == OFFICE_TEAM]
    if office or office_groups:
        print("office")
        for chat in office_groups:
            group_line(chat)
        for member in office:
            print(f"     office {member.display_name}  {member.telegram_user_id}")
    if expected and not token:
        print("(member counts of the groups need telegram.token)")
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    from bot.services import sendlead
    from bot.services.outbox import counts

    config = _config(args)
    logs.quiet_libraries()
    deps = _open_db(config)
    with deps.sessions.begin() as session:
        c = counts(session)
        lead = sendlead.status(session)
    total = sum(c.values())
    print(f"{total} messages: " + ", ".join(f"{k} {c.get(k, 0)}" for k in ("sent", "pending", "sending", "failed")))
    print(sendlead.describe(lead))  # which process sends (one at a time per database)
    return 0


def cmd_broadcast_status(args: argparse.Namespace) -> int:
    from bot.services.broadcast import failure_reasons, status_lines

    config = _config(args)
    logs.quiet_libraries()
    deps = _open_db(config)
    with deps.sessions.begin() as session:
        lines = status_lines(session, args.limit)
        if not lines:
            print("no broadcasts yet")
        for b, p in lines:
            state = "done" if b.finished_at or p.done else "sending"
            when = deps.texts.local_time(b.created_at)
            print(f"#{b.id:<5} {when}  {b.kind:<11} {b.ref:<10}  delivered {p.delivered} of {p.recipients}, "
                  f"{p.failed} failed, {p.recipients - p.delivered - p.failed} waiting  [{state}]")
            if p.failed:
                for error, n in failure_reasons(session, b.id):
                    print(f"       {n} part(s) failed: {error}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    import re

    from bot.services.schedule import due_periods
    from bot.services.summary import compute

    config = _config(args)
    logs.quiet_libraries()
    deps = _open_db(config)
    period = args.date or due_periods(config.model_copy(update={"scheduler": config.scheduler.model_copy(
        update={"catch_up_hours": 24 * 14})}), deps.clock.now())["summary"]
    lang = "en" if args.en else config.campaign.default_language
    with deps.sessions.begin() as session:
        s = compute(session, config, period)
    text = deps.texts.render(lang, "summary", s=s, config=config)
    print(re.sub(r"<[^>]+>", "", text).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    return 0


def _fill_keys(text: str) -> str:
    """The configuration text with every empty key given a fresh value."""
    text = text.replace('pepper = ""', f'pepper = "{new_pepper()}"', 1)
    text = text.replace('data_key = ""', f'data_key = "{new_data_key()}"', 1)
    return text.replace('contact_key = ""', f'contact_key = "{new_data_key()}"', 1)


def cmd_keygen(args: argparse.Namespace) -> int:
    """Print a new pepper, data key and contact key; with --write, fill the empty keys of
    the configuration file in place (rewritten through a new file that is 0600 from its
    first byte, then renamed over the old one)."""
    from pathlib import Path

    from bot.keyfile import write_private

    if not args.write:
        print(f'pepper = "{new_pepper()}"')
        print(f'data_key = "{new_data_key()}"')
        print(f'contact_key = "{new_data_key()}"')
        return 0
    target = Path(args.config or os.environ.get("TIPLINE_CONFIG") or "config.toml")
    if not target.exists():
        print(f"tipline: {target} does not exist (create it with `tipline init`)", file=sys.stderr)
        return 1
    old = target.read_text(encoding="utf-8")
    new = _fill_keys(old)
    if new == old:
        print(f"{target}: every key is set already; nothing changed")
        return 0
    write_private(target, new, replace=True)
    print(f"{target}: empty keys filled with new ones (the file is readable by its owner only)")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Write config.toml from the example, with a fresh pepper, data key and contact key.
    The file is created readable by its owner only (0600) from its first byte."""
    from pathlib import Path

    from bot.keyfile import write_private

    target = Path(args.config or os.environ.get("TIPLINE_CONFIG") or "config.toml")
    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    try:
        write_private(target, _fill_keys(example.read_text(encoding="utf-8")))
    except FileExistsError:
        print(f"tipline: {target} exists; not overwritten", file=sys.stderr)
        return 1
    print(f"wrote {target} (readable by you only) with a new pepper, data key and contact key: keep it secret "
          "and back it up (see the README); set telegram.token there or in TIPLINE_BOT_TOKEN")
    return 0


def cmd_rotate_keys(args: argparse.Namespace) -> int:
    """Re-encrypt every encrypted column under a new data key, then retire the old one
    (bot/rotate.py says how, and how it resumes)."""
    from pathlib import Path

    from bot.rotate import rotate
    from bot.security import Keyring

    if os.environ.get("TIPLINE_DATA_KEY"):
        raise ConfigError("security.data_key: it comes from TIPLINE_DATA_KEY, which rotate-keys cannot rewrite; "
                          "put the key in the configuration file for the rotation")
    path = Path(args.config or os.environ.get("TIPLINE_CONFIG") or "config.toml")
    config = _config(args)
    logs.quiet_libraries()
    deps = _open_db(config)
    sec = config.security
    current = [k.strip() for k in sec.data_key.get_secret_value().split(",") if k.strip()]

    def keyring(keys: str) -> Keyring:
        return Keyring(sec.pepper.get_secret_value(), keys, time_cost=sec.receipt_hash_time_cost,
                       memory_kib=sec.receipt_hash_memory_kib, parallelism=sec.receipt_hash_parallelism)

    engine = deps.sessions.kw["bind"]
    try:
        rotate(path, engine, current, keyring)
    finally:
        engine.dispose()
    print(f"{path}: data key rotated; back up the new configuration file now")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    config = _config(args)
    require_storage_secrets(config)
    print(f"configuration is valid: {len(config.categories)} categories, {len(config.units)} units, "
          f"{len(config.teams)} teams, {len(config.routing.rules)} routing rules")
    return 0


def _positive_days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of days") from None
    if not 1 <= days <= 365:
        raise argparse.ArgumentTypeError(f"{days} is not between 1 and 365 days")
    return days


def _iso_date(value: str) -> str:
    from datetime import date

    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date like 2026-11-20") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tipline", description="tipline: an anonymous tip line on Telegram")
    p.add_argument("--config", help="configuration file (default: $TIPLINE_CONFIG or ./config.toml)")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the bot")
    run.add_argument("--playground-without-token", action="store_true",
                     help="with no bot token configured, start the playground instead (scripts/run)")
    run.set_defaults(func=cmd_run)
    pgd = sub.add_parser("playground", help="the whole campaign in a browser, not connected to Telegram")
    pgd.add_argument("--port", type=int, help="the page's port on 127.0.0.1 (default: playground.port)")
    pgd.add_argument("--lang", choices=("zh-CN", "en"), help="the page's and the bot's language")
    pgd.set_defaults(func=cmd_playground)
    sub.add_parser("migrate", help="create or upgrade the database").set_defaults(func=cmd_migrate)
    inv = sub.add_parser("invite", help="print a one-time invite code")
    inv.add_argument("--role", choices=("lead", "member", "office", "official"), default="member")
    inv.add_argument("--team", type=int)
    inv.add_argument("--group", action="store_true", help="a code that binds a team's Telegram group")
    inv.add_argument("--office", action="store_true", help="with --group: bind the accountability office's group")
    inv.add_argument("--days", type=_positive_days, default=7, help="days the code stays valid (default 7)")
    inv.add_argument("--list", action="store_true", help="list unused invite codes (by number)")
    inv.add_argument("--all", action="store_true", help="with --list: used, expired and revoked codes too")
    inv.add_argument("--revoke", metavar="CODE", help="revoke an unused code (the code, or its number from --list)")
    inv.set_defaults(func=cmd_invite)
    teams = sub.add_parser("teams", help="list teams, members and bound groups")
    teams.add_argument("--en", action="store_true", help="team names in English")
    teams.add_argument("--offline", action="store_true", help="do not ask Telegram how many members each group has")
    teams.set_defaults(func=cmd_teams)
    sub.add_parser("outbox", help="delivery state of messages to staff").set_defaults(func=cmd_outbox)
    bst = sub.add_parser("broadcast-status", help="delivery of summaries and bulletins to officials")
    bst.add_argument("--limit", type=int, default=20, help="the latest N broadcasts (default 20)")
    bst.set_defaults(func=cmd_broadcast_status)
    smr = sub.add_parser("summary", help="print the daily summary's figures (nothing is sent)")
    smr.add_argument("--date", type=_iso_date,
                     help="the summary's date, YYYY-MM-DD (default: the period that ended last)")
    smr.add_argument("--en", action="store_true", help="in English")
    smr.set_defaults(func=cmd_summary)
    kg = sub.add_parser("keygen", help="print a new pepper, data key and contact key")
    kg.add_argument("--write", action="store_true", help="fill the empty keys of the configuration file instead")
    kg.set_defaults(func=cmd_keygen)
    sub.add_parser("rotate-keys", help="re-encrypt everything under a new data key and retire the old one"
                   ).set_defaults(func=cmd_rotate_keys)
    sub.add_parser("init", help="write config.toml from the example, with new secrets").set_defaults(func=cmd_init)
    sub.add_parser("check-config", help="validate the configuration").set_defaults(func=cmd_check)
    from bot.cli_office import add_commands  # enter, audit, export
    from bot.cli_staff import add_commands as add_staff_commands  # staff ...

    add_commands(sub)
    add_staff_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from bot.startup import StartupError

    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except StartupError as exc:
        print(f"tipline: {exc}", file=sys.stderr)
        return exc.status
    except ConfigError as exc:
        print(f"tipline: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
