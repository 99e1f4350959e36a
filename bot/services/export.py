"""Cases for the office, one row per tip: CSV (UTF-8 with BOM, for Excel) or XLSX.

Summary fields only unless content is asked for (then the tip's text, place and typed
unit are decrypted). There is nothing about tipsters to export: the tables have none.
Tips are read in batches (`yield_per`), never all at once. Cells that a spreadsheet
would take for a formula (a tip's text is anyone's words) are written as plain text.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from typing import IO, Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from bot.deps import Deps
from storage.models import Outcome, Staff, Tip

FORMATS = ("csv", "xlsx")
DEFAULT_BATCH = 500
SUMMARY_COLUMNS = (
    "tip", "channel", "received", "category", "category_name", "unit", "unit_name", "team", "team_name",
    "state", "acknowledged_at", "acknowledged_by", "ack_due_at", "ack_met",
    "outcome", "person", "post", "breach", "outcome_recorded_at", "receipt_delivered",
)
CONTENT_COLUMNS = ("unit_other", "place", "text")
TIME_FORMAT = "%Y-%m-%d %H:%M"
TIME_COLUMNS = frozenset({"received", "acknowledged_at", "ack_due_at", "outcome_recorded_at"})
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class Period:
    """Tips received from `since` to `until`, both whole days in the campaign's time zone."""

    since: date | None = None
    until: date | None = None

    def where(self, deps: Deps) -> list[ColumnElement[bool]]:
        tz = deps.config.campaign.tz
        clauses: list[ColumnElement[bool]] = []
        if self.since is not None:
            clauses.append(Tip.created_at >= datetime.combine(self.since, dtime(0), tzinfo=tz))
        if self.until is not None:
            clauses.append(Tip.created_at < datetime.combine(self.until + timedelta(days=1), dtime(0), tzinfo=tz))
        return clauses


def columns(with_content: bool) -> tuple[str, ...]:
    return SUMMARY_COLUMNS + (CONTENT_COLUMNS if with_content else ())


def count(session: Session, deps: Deps, period: Period) -> int:
    return session.scalar(select(func.count(Tip.id)).where(*period.where(deps))) or 0


def _query(deps: Deps, period: Period, with_content: bool) -> Select[Any]:
    cols: list[Any] = [
        Tip.id, Tip.channel, Tip.created_at, Tip.category, Tip.unit_key, Tip.team_number, Tip.state,
        Tip.acknowledged_at, Staff.display_name, Tip.ack_due_at,
        Outcome.outcome, Outcome.person_name, Outcome.person_post, Outcome.breach_category, Outcome.recorded_at,
        Tip.receipt_undelivered,
    ]
    if with_content:
        cols += [Tip.unit_other_enc, Tip.place_enc, Tip.text_enc]
    return (
        select(*cols)
        .outerjoin(Staff, Staff.id == Tip.acknowledged_by)
        .outerjoin(Outcome, Outcome.tip_id == Tip.id)
        .where(*period.where(deps))
        .order_by(Tip.id)
    )


def rows(
    session: Session,
    deps: Deps,
    period: Period,
    *,
    with_content: bool,
    now: datetime,
    batch_size: int = DEFAULT_BATCH,
) -> Iterator[list[list[Any]]]:
    """The rows, one batch (list of rows) at a time; times are aware datetimes.

    Per row only what differs from row to row is computed: names come from dictionaries
    made once (a million rows look up the same few dozen keys)."""
    lang = deps.config.campaign.default_language
    texts, k = deps.texts, deps.keyring
    categories: dict[str, str] = {}
    units: dict[str, str] = {}
    teams: dict[int, str] = {}

    def category_name(key: str) -> str:
        if key not in categories:
            categories[key] = texts.category_name(key, lang)
        return categories[key]

    def unit_name(key: str) -> str:
        if key not in units:
            units[key] = texts.unit_name(key, lang) if deps.config.unit(key) else ""
        return units[key]

    def team_name(number: int) -> str:
        if number not in teams:
            teams[number] = texts.team_name(number, lang)
        return teams[number]

    # Core, not the ORM, and streamed: a server-side cursor on PostgreSQL, batch by batch
    # (the option on this statement only: on the connection it would stream every later one)
    result = session.connection().execute(_query(deps, period, with_content),
                                          execution_options={"yield_per": batch_size})
    for batch in result.partitions():
        out = []
        for r in batch:
            (tip_id, channel, created_at, category, unit_key, team_number, state, acknowledged_at, display_name,
             ack_due_at, outcome, person_name, person_post, breach_category, recorded_at) = r[:15]
            if acknowledged_at is not None:
                met = "yes" if acknowledged_at <= ack_due_at else "no"
            else:
                met = "no" if now > ack_due_at else "pending"
            row: list[Any] = [
                tip_id, channel, created_at, category, category_name(category),
                unit_key, unit_name(unit_key), team_number, team_name(team_number), state,
                acknowledged_at, display_name, ack_due_at, met,
                outcome, person_name, person_post, breach_category, recorded_at,
                "no" if r[15] else "yes",
            ]
            if with_content:
                row += [k.decrypt_opt(r[16]), k.decrypt(r[17]), k.decrypt(r[18])]
            out.append(row)
        yield out


# --- writers -------------------------------------------------------------------------------
def plain_text(value: str) -> str:
    """A cell a spreadsheet must not run: '=cmd|...' becomes "'=cmd|..."."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def write_csv(out: IO[bytes], deps: Deps, header: Sequence[str], batches: Iterator[list[list[Any]]],
              progress: Callable[[int], None]) -> None:
    tz = deps.config.campaign.tz
    text = io.TextIOWrapper(out, encoding="utf-8-sig", newline="", write_through=True)
    local = _LocalMinutes(tz)
    try:
        writer = csv.writer(text)
        writer.writerow(header)
        times = [i for i, name in enumerate(header) if name in TIME_COLUMNS]
        others = [i for i in range(len(header)) if i not in times]
        for batch in batches:
            for row in batch:  # in place, column by column: no call per value
                for i in times:
                    v = row[i]
                    row[i] = "" if v is None else local(v)
                for i in others:
                    v = row[i]
                    if v is None:
                        row[i] = ""
                    elif v.__class__ is str and v.startswith(_FORMULA_START):
                        row[i] = "'" + v
            writer.writerows(batch)
            progress(len(batch))
        text.flush()
    finally:
        text.detach()  # the caller owns `out`


class _LocalMinutes:
    """Times as local "YYYY-MM-DD HH:MM", remembered per minute: a million rows hold a few
    tens of thousands of distinct minutes, and converting and formatting each time was
    most of the export's cost."""

    def __init__(self, tz: Any) -> None:
        self.tz = tz
        self.seen: dict[tuple[int, int, int, int, int], str] = {}

    def __call__(self, value: datetime) -> str:
        # every value is in UTC (UTCDateTime): the fields name the minute, and a tuple of
        # them hashes without asking the time zone for its offset as a datetime would
        minute = (value.year, value.month, value.day, value.hour, value.minute)
        found = self.seen.get(minute)
        if found is None:
            if len(self.seen) > 200_000:
                self.seen.clear()
            found = self.seen[minute] = value.astimezone(self.tz).strftime(TIME_FORMAT)
        return found


def write_xlsx(out: IO[bytes], deps: Deps, header: Sequence[str], batches: Iterator[list[list[Any]]],
               progress: Callable[[int], None]) -> None:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    tz = deps.config.campaign.tz
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("tips")
    sheet.freeze_panes = "A2"
    sheet.append(list(header))
    for batch in batches:
        for row in batch:
            cells = []
            for value in row:
                if isinstance(value, datetime):  # local time, as a real date cell
                    cell = WriteOnlyCell(sheet, value=value.astimezone(tz).replace(tzinfo=None))
                    cell.number_format = "yyyy-mm-dd hh:mm"
                elif isinstance(value, str):
                    cell = WriteOnlyCell(sheet, value=ILLEGAL_CHARACTERS_RE.sub("\ufffd", value))
                    cell.data_type = "s"  # never a formula, whatever it starts with
                else:
                    cell = WriteOnlyCell(sheet, value=value)
                cells.append(cell)
            sheet.append(cells)
        progress(len(batch))
    workbook.save(out)


WRITERS = {"csv": write_csv, "xlsx": write_xlsx}


@dataclass(frozen=True, slots=True)
class ExportResult:
    tips: int


def export(
    session: Session,
    deps: Deps,
    out: IO[bytes],
    *,
    fmt: str,
    period: Period = Period(),
    with_content: bool = False,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int], None] = lambda n: None,
    on_batch: Callable[[list[int]], None] = lambda ids: None,
) -> ExportResult:
    """Write the export to `out`; `on_batch` gets each batch's tip ids once it is written
    (the caller records them in the audit trail, batch by batch). Nothing is kept per
    row: memory stays flat whatever the number of tips."""
    if fmt not in WRITERS:
        raise ValueError(f"format is one of {', '.join(FORMATS)}")
    count = 0

    def batches() -> Iterator[list[list[Any]]]:
        nonlocal count
        for batch in rows(session, deps, period, with_content=with_content, now=deps.clock.now(),
                          batch_size=batch_size):
            yield batch
            count += len(batch)
            on_batch([r[0] for r in batch])

    WRITERS[fmt](out, deps, columns(with_content), batches(), progress)
    return ExportResult(count)


class ProgressBar:
    """`[#####.....]  50%  1200/2400 tips` on one line, redrawn with \\r (no dependency)."""

    def __init__(self, total: int, stream: IO[str] | None = None, enabled: bool = True, width: int = 30,
                 interval: float = 0.1) -> None:
        self.total, self.done = total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled, self.width, self.interval = enabled, width, interval
        self._last = 0.0
        self._drawn = -1

    def __call__(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last >= self.interval or self.done >= self.total:
            self._last = now
            self._draw()

    def _draw(self) -> None:
        self._drawn = self.done
        share = 1.0 if self.total == 0 else min(1.0, self.done / self.total)
        filled = round(share * self.width)
        self.stream.write(f"\rexporting [{'#' * filled}{'.' * (self.width - filled)}] {share:4.0%}  "
                          f"{self.done}/{self.total} tips")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            if self._drawn != self.done:
                self._draw()
            self.stream.write("\n")
            self.stream.flush()
