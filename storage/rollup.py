"""Running counts for the daily summary, kept by the database in each row's own transaction.

Why: the summary's "campaign so far" figures used to be COUNTs over the whole history, a
cost that grows every day (about nine full passes over tips, outcomes, required actions
and due steps at a province's scale). Here each figure is a *counter* of the rows that
satisfy a time-free predicate now (e.g. "acknowledged on or before its deadline", by
team). The summary for a period ending at E reads the counters and subtracts the few rows
that happened at or after E (an index range, a few rows for today's summary), so its cost
depends on one day's activity, not on the length of the campaign.

Who keeps them: triggers on tips, outcomes, due_steps and required_actions, written for
SQLite and PostgreSQL from one table of metrics below. Every write path (the bot, the
CLI, a purge, a cascade, a hand-made UPDATE) is covered, so the counters cannot drift
from the rows. A trigger only *appends* a delta row (+1 / -1) to `summary_deltas`: no
hot counter row is locked by concurrent transactions (no waiting, no deadlock between two
tips of the same category); `fold()` moves the deltas into `summary_counters` (run by the
scheduler's tick, so the deltas stay a few minutes' worth).

Bucketed metric: `tips.cat_hour` counts tips by category and UTC hour of creation for the
chart (14 days = 336 buckets per category, whatever the history).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    key: str  # an SQL expression over the row, "{r}" standing for NEW. / OLD. / nothing
    where: str  # the time-free predicate
    bucket: str | None = None  # "hour": bucketed by the UTC hour of created_at


TIPS = (
    Metric("tips.cat", "{r}category", "1=1"),
    Metric("tips.unit", "{r}unit_key", "1=1"),
    Metric("tips.team", "CAST({r}team_number AS TEXT)", "1=1"),
    Metric("tips.on_time", "CAST({r}team_number AS TEXT)",
           "{r}acknowledged_at IS NOT NULL AND {r}acknowledged_at <= {r}ack_due_at"),
    Metric("tips.unacked", "''", "{r}acknowledged_at IS NULL"),
    Metric("tips.cat_hour", "{r}category", "1=1", bucket="hour"),
)
OUTCOMES = (Metric("out", "{r}outcome", "1=1"),)
DUE_STEPS = (Metric("esc", "{r}deadline_kind", "{r}step = 'escalate' AND {r}done_at IS NOT NULL"),)
ACTIONS = (
    Metric("act", "{r}kind", "1=1"),
    Metric("act.open", "{r}kind", "{r}received_at IS NULL"),
    Metric("act.open_nodue", "{r}kind", "{r}received_at IS NULL AND {r}due_at IS NULL"),
)
# table -> (metrics, the columns whose UPDATE can change a metric)
TABLES: dict[str, tuple[tuple[Metric, ...], tuple[str, ...]]] = {
    "tips": (TIPS, ("category", "unit_key", "team_number", "acknowledged_at", "ack_due_at", "created_at")),
    "outcomes": (OUTCOMES, ("outcome",)),
    "due_steps": (DUE_STEPS, ("step", "done_at", "deadline_kind")),
    "required_actions": (ACTIONS, ("kind", "received_at", "due_at")),
}
HOUR_FORMAT = "%Y-%m-%d %H"  # the bucket's text, from the UTC time


def _bucket(metric: Metric, dialect: str, r: str) -> str:
    if metric.bucket is None:
        return "''"
    if dialect == "sqlite":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC
        return f"substr({r}created_at, 1, 13)"
    return f"to_char({r}created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24')"


def _selects(metrics: Iterable[Metric], dialect: str, r: str, n: int) -> list[str]:
    return [
        f"SELECT '{m.name}' AS metric, {_bucket(m, dialect, r)} AS bucket, {m.key.format(r=r)} AS key, {n} AS n "
        f"WHERE {m.where.format(r=r)}"
        for m in metrics
    ]


def _delta_insert(metrics: tuple[Metric, ...], dialect: str, old: bool, new: bool) -> str:
    """One INSERT of the net change: -1 for the old row's counters, +1 for the new row's;
    an UPDATE that changes no counted value nets to nothing and inserts nothing."""
    parts = (_selects(metrics, dialect, "OLD.", -1) if old else []) + (_selects(metrics, dialect, "NEW.", 1)
                                                                       if new else [])
    return ("INSERT INTO summary_deltas (metric, bucket, key, n) "
            f"SELECT metric, bucket, key, SUM(n) FROM ({' UNION ALL '.join(parts)}) AS d "
            "GROUP BY metric, bucket, key HAVING SUM(n) <> 0")


def create_triggers(dialect: str) -> list[str]:
    """The DDL that installs the triggers (SQLite or PostgreSQL)."""
    out: list[str] = []
    for table, (metrics, columns) in TABLES.items():
        if dialect == "sqlite":
            for event, old, new in (("INSERT", False, True), ("DELETE", True, False),
                                    (f"UPDATE OF {', '.join(columns)}", True, True)):
                name = f"tipline_rollup_{table}_{event.split()[0].lower()}"
                out.append(f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW BEGIN "
                           f"{_delta_insert(metrics, dialect, old, new)}; END")
        else:
            out.append(
                f"CREATE OR REPLACE FUNCTION tipline_rollup_{table}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                "BEGIN\n"
                f"  IF TG_OP = 'INSERT' THEN {_delta_insert(metrics, dialect, False, True)};\n"
                f"  ELSIF TG_OP = 'DELETE' THEN {_delta_insert(metrics, dialect, True, False)};\n"
                f"  ELSE {_delta_insert(metrics, dialect, True, True)};\n"
                "  END IF;\n  RETURN NULL;\nEND $$")
            out.append(f"CREATE TRIGGER tipline_rollup_{table} AFTER INSERT OR DELETE OR UPDATE OF "
                       f"{', '.join(columns)} ON {table} FOR EACH ROW EXECUTE FUNCTION tipline_rollup_{table}()")
    return out


def drop_triggers(dialect: str) -> list[str]:
    out: list[str] = []
    for table in TABLES:
        if dialect == "sqlite":
            out += [f"DROP TRIGGER IF EXISTS tipline_rollup_{table}_{e}" for e in ("insert", "delete", "update")]
        else:
            out.append(f"DROP TRIGGER IF EXISTS tipline_rollup_{table} ON {table}")
            out.append(f"DROP FUNCTION IF EXISTS tipline_rollup_{table}()")
    return out


def rebuild(connection: Connection) -> None:
    """Recount every counter from the rows (the migration's backfill; bulk loads)."""
    dialect = connection.dialect.name
    connection.execute(text("DELETE FROM summary_deltas"))
    connection.execute(text("DELETE FROM summary_counters"))
    for table, (metrics, _columns) in TABLES.items():
        for m in metrics:
            connection.execute(text(
                "INSERT INTO summary_counters (metric, bucket, key, n) "
                f"SELECT '{m.name}', {_bucket(m, dialect, '')}, {m.key.format(r='')}, COUNT(*) FROM {table} "
                f"WHERE {m.where.format(r='')} GROUP BY 2, 3"))


def fold(session: Session) -> int:
    """Move the deltas into the counters; returns how many delta rows were folded.

    DELETE ... RETURNING folds exactly the rows it removed, so a delta committed meanwhile
    by another transaction stays for the next fold. Keys are upserted in sorted order, so
    two processes folding at once wait for each other rather than deadlock.
    """
    rows = session.execute(text("DELETE FROM summary_deltas RETURNING metric, bucket, key, n")).all()
    if not rows:
        return 0
    sums: dict[tuple[str, str, str], int] = defaultdict(int)
    for metric, bucket, key, n in rows:
        sums[(metric, bucket, key)] += int(n)
    params = [{"m": m, "b": b, "k": k, "n": n} for (m, b, k), n in sorted(sums.items()) if n]
    if params:
        session.execute(text(
            "INSERT INTO summary_counters (metric, bucket, key, n) VALUES (:m, :b, :k, :n) "
            "ON CONFLICT (metric, bucket, key) DO UPDATE SET n = summary_counters.n + excluded.n"), params)
    return len(rows)


def totals(session: Session) -> dict[str, dict[str, int]]:
    """metric -> key -> count, for the metrics without buckets (counters + pending deltas)."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for metric, key, n in session.execute(text(
        "SELECT metric, key, SUM(n) FROM (SELECT metric, key, n FROM summary_counters WHERE bucket = '' "
        "UNION ALL SELECT metric, key, n FROM summary_deltas WHERE bucket = '') AS c GROUP BY metric, key"
    )):
        out[metric][key] = int(n)
    return out


def buckets(session: Session, metric: str, first: str, last: str) -> dict[tuple[str, str], int]:
    """(key, bucket) -> count for first <= bucket < last."""
    rows = session.execute(text(
        "SELECT key, bucket, SUM(n) FROM (SELECT key, bucket, n FROM summary_counters "
        "WHERE metric = :m AND bucket >= :a AND bucket < :b "
        "UNION ALL SELECT key, bucket, n FROM summary_deltas WHERE metric = :m AND bucket >= :a AND bucket < :b"
        ") AS c GROUP BY key, bucket"), {"m": metric, "a": first, "b": last})
    return {(k, b): int(n) for k, b, n in rows}


def triggers_present(connection: Connection) -> int:
    if connection.dialect.name == "sqlite":
        return int(connection.scalar(text(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'tipline_rollup_%'")) or 0)
    return int(connection.scalar(text(
        "SELECT COUNT(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace s ON s.oid = c.relnamespace "
        "WHERE t.tgname LIKE 'tipline_rollup_%' AND s.nspname = current_schema()")) or 0)


def expected_triggers(dialect: str) -> int:
    return len(TABLES) * (3 if dialect == "sqlite" else 1)


def ensure(connection: Connection) -> bool:
    """Reinstall the triggers and recount if any is missing (on SQLite, a later migration
    that rebuilds one of the tables drops its triggers with it). True when it did."""
    if triggers_present(connection) == expected_triggers(connection.dialect.name):
        return False
    for statement in drop_triggers(connection.dialect.name) + create_triggers(connection.dialect.name):
        connection.execute(text(statement))
    rebuild(connection)
    return True
