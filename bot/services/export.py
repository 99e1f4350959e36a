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
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import IO, Any

from sqlalchemy import ColumnElement, Select, String, func, select, type_coerce
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
# Columns whose text someone typed (a tip, a staff member's name, a person named in an
# outcome): the only ones a spreadsheet could take for a formula. Names from the
# configuration are made safe once per key.
TYPED_COLUMNS = frozenset({"acknowledged_by", "person", "post", *CONTENT_COLUMNS})
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime in SQLite
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


def _query(deps: Deps, period: Period, with_content: bool, stored_times: bool = False) -> Select[Any]:
    def t(column: Any) -> Any:  # SQLite's stored text, unparsed (see rows)
        return type_coerce(column, String).label(column.key) if stored_times else column

    cols: list[Any] = [
        Tip.id, Tip.channel, t(Tip.created_at), Tip.category, Tip.unit_key, Tip.team_number, Tip.state,
        t(Tip.acknowledged_at), Staff.display_name, t(Tip.ack_due_at),
        Outcome.outcome, Outcome.person_name, Outcome.person_post, Outcome.breach_category, t(Outcome.recorded_at),
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
    stored_times: bool = False,
) -> Iterator[list[list[Any]]]:
    """The rows, one batch (list of rows) at a time; times are aware datetimes, or with
    `stored_times` (SQLite only) the text SQLite stores, "YYYY-MM-DD HH:MM:SS.ffffff" in
    UTC: parsing a million of each into datetimes was half of a CSV export's time, and
    the CSV needs only their local minute (_LocalMinutes). That text sorts as the times do.

    Per row only what differs from row to row is computed: names come from dictionaries
    made once (a million rows look up the same few dozen keys)."""
    lang = deps.config.campaign.default_language
    texts, k = deps.texts, deps.keyring
    categories: dict[str, str] = {}
    units: dict[str, str] = {}
    teams: dict[int, str] = {}

    def category_name(key: str) -> str:
        if key not in categories:
            categories[key] = plain_text(texts.category_name(key, lang))
        return categories[key]

    def unit_name(key: str) -> str:
        if key not in units:
            units[key] = plain_text(texts.unit_name(key, lang)) if deps.config.unit(key) else ""
        return units[key]

    def team_name(number: int) -> str:
        if number not in teams:
            teams[number] = plain_text(texts.team_name(number, lang))
        return teams[number]

    if stored_times:
        now = now.astimezone(UTC).strftime(SQLITE_TIME)  # type: ignore[assignment]

    # Core, not the ORM, and streamed: a server-side cursor on PostgreSQL, batch by batch
    # (the option on this statement only: on the connection it would stream every later one)
    result = session.connection().execute(_query(deps, period, with_content, stored_times),
                                          execution_options={"yield_per": batch_size})
    for batch in result.partitions():
        out = []
        for r in batch:
            (tip_id, channel, created_at, category, unit_key, team_number, state, acknowledged_at, display_name,
             ack_due_at, outcome, person_name, person_post, breach_category, recorded_at, undelivered) = r[:16]
            if acknowledged_at is not None:
                met = "yes" if acknowledged_at <= ack_due_at else "no"
            else:
                met = "no" if now > ack_due_at else "pending"
            row: list[Any] = [
                tip_id, channel, created_at, category, categories.get(category) or category_name(category),
                unit_key, units.get(unit_key) or unit_name(unit_key), team_number,
                teams.get(team_number) or team_name(team_number), state,
                acknowledged_at, display_name, ack_due_at, met,
                outcome, person_name, person_post, breach_category, recorded_at,
                "no" if undelivered else "yes",
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
    seen = local.seen
    try:
        writer = csv.writer(text)
        writer.writerow(header)
        times = [i for i, name in enumerate(header) if name in TIME_COLUMNS]
        typed = [i for i, name in enumerate(header) if name in TYPED_COLUMNS]
        for batch in batches:
            # In place, and only the columns that need it: csv writes None as "", and
            # the other columns hold keys, numbers and names made safe once.
            for row in batch:
                for i in times:
                    v = row[i]
                    if v is not None:  # SQLite's stored text looked up here: no call per value
                        found = seen.get(v[:16]) if v.__class__ is str else None
                        row[i] = found if found is not None else local(v)
                for i in typed:
                    v = row[i]
                    if v is not None and v.startswith(_FORMULA_START):
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
        self.seen: dict[Any, str] = {}  # a UTC minute (text or fields) -> its local text

    def __call__(self, value: datetime | str) -> str:
        if isinstance(value, str):  # SQLite's stored UTC text: its first 16 characters name the minute
            key: Any = value[:16]
            found = self.seen.get(key)
            return found if found is not None else self._remember(key, datetime.fromisoformat(key).replace(tzinfo=UTC))
        # every value is in UTC (UTCDateTime): the fields name the minute, and a tuple of
        # them hashes without asking the time zone for its offset as a datetime would
        key = (value.year, value.month, value.day, value.hour, value.minute)
        found = self.seen.get(key)
        return found if found is not None else self._remember(key, value)

    def _remember(self, key: Any, value: datetime) -> str:
        if len(self.seen) > 200_000:
            self.seen.clear()
        found = self.seen[key] = value.astimezone(self.tz).strftime(TIME_FORMAT)
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
    stored_times = fmt == "csv" and session.get_bind().dialect.name == "sqlite"

    def batches() -> Iterator[list[list[Any]]]:
        nonlocal count
        for batch in rows(session, deps, period, with_content=with_content, now=deps.clock.now(),
                          batch_size=batch_size, stored_times=stored_times):
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
