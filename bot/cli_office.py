"""The office's case commands of the admin CLI (added to `tipline` by bot/cli.py).

    tipline enter --channel phone --category absence --unit dingchang --place ... --text ...
                                        enter a tip received by phone or mail; prints its receipt code
    tipline audit 12                    tip #12's audit trail and public timeline
    tipline export --out cases.xlsx     one row per tip, for the office (CSV or XLSX)

Wrong arguments exit with status 2 and a message that names the option.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import unicodedata
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import IO, Any

from bot import logs
from bot.domain.receipt import format_receipt, new_receipt_code


class UsageError(Exception):
    """A command-line value that cannot be used; the message names the option."""


def _usage_errors(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except UsageError as exc:
            print(f"tipline {args.command}: error: {exc}", file=sys.stderr)
            return 2

    return run


def _deps(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from bot.cli import _config, _open_db

    config = _config(args)
    logs.quiet_libraries()
    return _open_db(config)


# --- enter ---------------------------------------------------------------------------------
OPTION_OF = {"channel": "--channel", "category": "--category", "unit": "--unit", "unit_other": "--unit-other",
             "place": "--place"}


@_usage_errors
def cmd_enter(args: argparse.Namespace) -> int:
    from bot.domain.text import normalise
    from bot.services import entry, intake
    from storage.models import Tip

    if args.text_file is not None:
        text_option = "--text-file"
        try:
            raw = sys.stdin.read() if args.text_file == "-" else Path(args.text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--text-file: cannot read {args.text_file}: {exc}") from None
    else:
        text_option, raw = "--text", args.text
    # The bot's normalisation (invisible characters removed, spaces tidied), then its checks.
    unit_other = normalise(args.unit_other) if args.unit_other is not None else None
    new = intake.NewTip(category=args.category, unit=args.unit, unit_other=unit_other, place=normalise(args.place),
                        text=normalise(raw), channel=args.channel)
    deps = _deps(args)
    problems = entry.check(deps.config, channel=new.channel, category=new.category, unit=new.unit,
                           unit_other=new.unit_other, place=new.place, text=new.text)
    if problems:
        raise UsageError("\n".join(f"{OPTION_OF.get(p.field, text_option)}: {p.message}" for p in problems))
    code = new_receipt_code()
    digest = deps.keyring.receipt_hash(code)
    with deps.sessions.begin() as session:
        staff = None
        if args.office_member is not None:
            staff = entry.office_member(session, args.office_member)
            if staff is None:
                raise UsageError(f"--office-member {args.office_member}: no active office member with this "
                                 "Telegram id (see `tipline teams`)")
        tip_id = entry.enter(session, deps, new, digest, deps.clock.now(), staff=staff, via="cli")
        tip = session.get(Tip, tip_id)
        assert tip is not None
        team, reason = tip.team_number, tip.route_reason
    lang = deps.config.campaign.default_language
    print(f"tip #{tip_id} entered ({new.channel}), routed to team {team} {deps.texts.team_name(team, lang)} "
          f"({reason})")
    print(f"receipt code: {format_receipt(code)}")
    print("Read the receipt code to the caller now and ask them to keep it safe. Do not write it down or keep it "
          "anywhere (clear this screen afterwards): it is shown only this once and tipline stores only a one-way "
          "hash of it. With it the caller can follow the tip by sending it to the bot on Telegram.")
    return 0


# --- audit ---------------------------------------------------------------------------------
@_usage_errors
def cmd_audit(args: argparse.Namespace) -> int:
    from bot.services import audit, followup
    from storage.models import Tip

    number = args.tip.lstrip("#")
    if not number.isdigit():
        raise UsageError(f"TIP: {args.tip!r} is not a tip number")
    deps = _deps(args)
    cfg, texts = deps.config, deps.texts
    lang = cfg.campaign.default_language
    with deps.sessions.begin() as session:
        tip = session.get(Tip, int(number))
        if tip is None:
            raise UsageError(f"TIP: no tip #{number}")
        audit.record(session, staff_id=None, tip_id=tip.id, action="viewed_audit", detail="cli", at=deps.clock.now())
        session.flush()
        entries = audit.trail(session, tip.id, deps.keyring)
        timeline = followup.public_timeline(tip, deps.keyring)
        unit = texts.unit_name(tip.unit_key, lang) if cfg.unit(tip.unit_key) else "(typed by the tipster)"
        print(f"tip #{tip.id}  {tip.channel}  received {texts.local_time(tip.created_at)}  "
              f"{tip.category} {texts.category_name(tip.category, lang)}  unit {tip.unit_key} {unit}  "
              f"team {tip.team_number} {texts.team_name(tip.team_number, lang)}  state {tip.state}")
        if tip.receipt_undelivered:
            print("receipt code: NOT delivered (the tipster never received a code for this tip)")
    print(f"audit trail (times in {cfg.campaign.timezone}):")
    width = max(_width(e.who) for e in entries)
    for e in entries:
        who = e.who + " " * (width - _width(e.who))
        quote = f"  ({e.quote})" if e.quote else ""
        print(f"  {texts.local_time(e.at)}  {who}  {e.action:<14} {e.detail or ''}{quote}".rstrip())
    print("public timeline (what the tipster sees):")
    for at, kind, team_number, detail in timeline:
        team = f"  team {team_number} {texts.team_name(team_number, lang)}" if team_number is not None else ""
        print(f"  {texts.local_time(at)}  {kind}{team}{f'  ({detail})' if detail else ''}")
    return 0


def _width(text: str) -> int:
    """Columns `text` takes in a terminal (Chinese characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


# --- export --------------------------------------------------------------------------------
def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date like 2026-11-20") from None


@_usage_errors
def cmd_export(args: argparse.Namespace) -> int:
    from bot.services import audit
    from bot.services.export import FORMATS, Period, ProgressBar, count, export

    fmt = args.format or ("xlsx" if args.out and args.out.lower().endswith(".xlsx") else "csv")
    if fmt not in FORMATS:
        raise UsageError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if args.since and args.until and args.since > args.until:
        raise UsageError(f"--since {args.since} is after --until {args.until}")
    if args.batch_size < 1:
        raise UsageError("--batch-size: at least 1")
    deps = _deps(args)
    period = Period(args.since, args.until)
    out = args.out or f"tipline-export-{deps.clock.now().astimezone(deps.config.campaign.tz):%Y%m%d-%H%M}.{fmt}"
    with deps.sessions.begin() as session:
        total = count(session, deps, period)
        bar = ProgressBar(total, sys.stderr, enabled=args.progress or sys.stderr.isatty())
        now = deps.clock.now()

        def record_batch(tip_ids: list[int]) -> None:
            if args.with_content:  # each tip's trail shows that its content left the database
                audit.record_many(session, staff_id=None, tip_ids=tip_ids, action="exported",
                                  detail="cli, with content", at=now)

        with _output(out) as stream:
            result = export(session, deps, stream, fmt=fmt, period=period, with_content=args.with_content,
                            batch_size=args.batch_size, progress=bar, on_batch=record_batch)
        bar.finish()
        what = "with content" if args.with_content else "summary fields"
        audit.record(session, staff_id=None, tip_id=None, action="exported",
                     detail=f"cli: {result.tips} tips, {fmt}, {what}", at=now)
    where = "standard output" if out == "-" else out
    print(f"exported {result.tips} tips ({what}) to {where}", file=sys.stderr)
    return 0


class _output:
    """The export's destination: stdout for "-", else a file written under a temporary
    name, readable by its owner only, and put in place only when complete."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._tmp: Any = None

    def __enter__(self) -> IO[bytes]:
        if self.path == "-":
            return sys.stdout.buffer
        target = Path(self.path)
        if target.is_dir():
            raise UsageError(f"--out: {self.path} is a directory")
        if not target.parent.exists():
            raise UsageError(f"--out: no directory {target.parent}")
        self._tmp = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False)
        os.chmod(self._tmp.name, 0o600)
        return self._tmp

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if self._tmp is None:
            sys.stdout.buffer.flush()
            return
        self._tmp.close()
        if kind is None:
            os.replace(self._tmp.name, self.path)
        else:
            os.unlink(self._tmp.name)


# --- the parsers ---------------------------------------------------------------------------
def add_commands(sub: Any) -> None:
    """Add enter, audit and export to `tipline`'s sub-command parsers."""
    from bot.services.entry import CHANNELS
    from bot.services.export import DEFAULT_BATCH, FORMATS

    ent = sub.add_parser("enter", help="enter a tip received by phone or mail; prints the caller's receipt code")
    ent.add_argument("--channel", required=True, choices=CHANNELS, help="how the tip came in")
    ent.add_argument("--category", required=True, metavar="KEY", help="a [[categories]] key")
    ent.add_argument("--unit", required=True, metavar="KEY", help='a [[units]] key, or "other" with --unit-other')
    ent.add_argument("--unit-other", metavar="NAME", help="the unit's name when --unit other")
    ent.add_argument("--place", required=True, metavar="TEXT", help="when and where")
    text = ent.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", metavar="TEXT", help="what happened")
    text.add_argument("--text-file", metavar="PATH", help='what happened, from a UTF-8 file ("-": standard input)')
    ent.add_argument("--office-member", type=int, metavar="TELEGRAM_ID",
                     help="the office member entering it (recorded in the audit trail)")
    ent.set_defaults(func=cmd_enter)

    aud = sub.add_parser("audit", help="a tip's audit trail and public timeline")
    aud.add_argument("tip", metavar="TIP", help="the tip's number")
    aud.set_defaults(func=cmd_audit)

    exp = sub.add_parser("export", help="cases for the office, one row per tip (CSV or XLSX)")
    exp.add_argument("--out", metavar="PATH", help='the file to write ("-": standard output; default '
                                                   "tipline-export-DATE.FORMAT)")
    exp.add_argument("--format", choices=FORMATS, help="csv or xlsx (default: from --out, else csv)")
    exp.add_argument("--since", type=_date, metavar="DATE", help="tips received on or after this day")
    exp.add_argument("--until", type=_date, metavar="DATE", help="tips received on or before this day")
    exp.add_argument("--with-content", action="store_true",
                     help="decrypt and include each tip's text, place and typed unit (audited per tip)")
    exp.add_argument("--progress", action="store_true", help="show a progress bar even when stderr is not a terminal")
    exp.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="N",
                     help=f"tips read from the database at a time (default {DEFAULT_BATCH})")
    exp.set_defaults(func=cmd_export)
