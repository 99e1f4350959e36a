"""Build a province-sized campaign database for the benches: N tips over D days.

    python -m bench.scale_db --database-url URL [--tips 1000000] [--days 60] [--seed 1]

The schema comes from tipline's own Alembic migrations; the rows are bulk-loaded (COPY on
PostgreSQL, executemany on SQLite) in the shape the workflow leaves them: tips spread over
the days with a daily rhythm, by category, unit and team (the example configuration),
acknowledged (a few late, a few never), most closed with an outcome (verified, unfounded,
transferred); verified ones make breaches with their required actions (self-criticism,
rectification report; from the third breach of a person the referral and the leader's
accountability), bulletins for all but the last two days' cases; about 4 timeline events
and 6.2 due steps per tip (reminders and escalations, done or cancelled). Content is
encrypted with the bench key (`bench_config`), so exports with content decrypt it.

The summary's counters are recounted after the load (the triggers are off during it), and
the planner's statistics refreshed. Other benches open the result with `bench_config(url)`.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from bot.config import Config, parse_config
from bot.security import Keyring
from storage import rollup
from storage.db import make_engine, upgrade

BENCH_PEPPER = "bench-pepper-" + "b" * 40
BENCH_DATA_KEY = "YmVuY2gtZGF0YS1rZXktZm9yLXRpcGxpbmUtYmVuY2g="  # bench only: 32 bytes, base64
EPOCH = datetime(2026, 6, 1, tzinfo=UTC)  # the campaign's first day (00:00 UTC)


def bench_config(url: str, **sections: dict[str, Any]) -> Config:
    """The example configuration with the bench's secrets and a cheap receipt hash."""
    import tomllib
    from pathlib import Path

    data = tomllib.loads((Path(__file__).resolve().parent.parent / "config.example.toml").read_text("utf-8"))
    data["telegram"]["token"] = "123456:TEST-TOKEN"
    data["database"]["url"] = url
    data["security"].update(pepper=BENCH_PEPPER, data_key=BENCH_DATA_KEY, receipt_hash_time_cost=1,
                            receipt_hash_memory_kib=64)
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return parse_config(data, source="bench", env={})


def _dt(value: datetime | None) -> Any:
    return value


def _sqlite_dt(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class Loader:
    """Rows in chunks into one table (COPY on PostgreSQL, executemany on SQLite)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self.raw = engine.raw_connection()
        if self.sqlite:
            self.raw.execute("PRAGMA synchronous=OFF")

    def load(self, table: str, columns: Sequence[str], rows: Iterator[tuple[Any, ...]], chunk: int = 20_000) -> int:
        n = 0
        cur = self.raw.cursor()
        if self.sqlite:
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            batch: list[tuple[Any, ...]] = []
            for row in rows:
                batch.append(tuple(_sqlite_dt(v) if isinstance(v, datetime) else
                                   (v.isoformat() if isinstance(v, date) else v) for v in row))
                if len(batch) >= chunk:
                    cur.executemany(sql, batch)
                    n += len(batch)
                    batch.clear()
            if batch:
                cur.executemany(sql, batch)
                n += len(batch)
        else:
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    n += 1
        self.raw.commit()
        return n

    def close(self) -> None:
        self.raw.close()


def build(url: str, tips: int, days: int = 60, seed: int = 1, quiet: bool = False) -> dict[str, int]:
    """Create the schema and load the rows; returns the row counts."""
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    config = bench_config(url)
    engine = make_engine(url)
    upgrade(engine)
    dialect = engine.dialect.name
    with engine.begin() as conn:
        for statement in rollup.drop_triggers(dialect):
            conn.execute(text(statement))
    rng = random.Random(seed)
    keyring = Keyring(BENCH_PEPPER, BENCH_DATA_KEY, time_cost=1, memory_kib=64)
    texts = [keyring.encrypt(f"第{i}号：工作日上午窗口无人，群众排队等了半小时，" * 3) for i in range(64)]
    places = [keyring.encrypt(f"便民服务大厅{i}号窗口") for i in range(64)]
    transferred_to = keyring.encrypt("县纪委")  # typed by staff: stored encrypted
    categories = [c.key for c in config.categories]
    cat_weights = [30, 20, 8, 6, 10, 12, 6, 8][: len(categories)]
    units = [u.key for u in config.units]
    teams = [t.number for t in config.teams]
    now = EPOCH + timedelta(days=days)
    staff_count = 8 * len(teams) + 8
    counts: dict[str, int] = {}
    loader = Loader(engine)
    started = time.perf_counter()

    staff_rows = [(i, 10_000 + i, f"staff {i}", "office" if i <= 5 else ("lead" if i % 8 == 1 else "member"),
                   None if i <= 5 else teams[(i - 6) // 8 % len(teams)], "zh-CN", True, EPOCH)
                  for i in range(1, staff_count + 1)]
    counts["staff"] = loader.load("staff", ("id", "telegram_user_id", "display_name", "role", "team_number",
                                            "language", "active", "joined_at"), iter(staff_rows))

    # One pass makes every row of a tip; the tables are loaded one after the other from lists
    # per chunk of tips, so memory stays bounded.
    events: list[tuple[Any, ...]] = []
    outcomes: list[tuple[Any, ...]] = []
    breaches: list[tuple[Any, ...]] = []
    actions: list[tuple[Any, ...]] = []
    steps: list[tuple[Any, ...]] = []
    tip_rows: list[tuple[Any, ...]] = []
    person_breaches: dict[str, int] = {}
    ids = {"event": 0, "outcome": 0, "breach": 0, "action": 0, "step": 0}
    bulletin_cut = now - timedelta(days=2)

    def flush() -> None:
        for table, columns, rows in (
            ("tips", ("id", "receipt_hash", "channel", "category", "unit_key", "unit_other_enc", "place_enc",
                      "text_enc", "state", "team_number", "route_rule", "route_reason", "created_at", "routed_at",
                      "ack_due_at", "acknowledged_at", "acknowledged_by", "outcome_due_at", "closed_at"), tip_rows),
            ("tip_events", ("id", "tip_id", "at", "kind", "team_number", "staff_id", "public", "detail_enc"), events),
            ("outcomes", ("id", "tip_id", "outcome", "unit_key", "person_name", "person_post", "breach_category",
                          "finding_enc", "transferred_to_enc", "attachments_enc", "recorded_by", "recorded_at"), outcomes),
            ("breaches", ("id", "outcome_id", "tip_id", "person_key", "person_name", "person_post", "unit_key",
                          "category", "occurred_on", "breach_number", "in_bulletin", "referral", "leader_accountable",
                          "bulletin_id", "created_at"), breaches),
            ("required_actions", ("id", "breach_id", "kind", "target", "due_at", "received_at", "received_by",
                                  "created_at"), actions),
            ("due_steps", ("id", "token", "tip_id", "action_id", "deadline_kind", "step", "idx", "due_at", "deadline",
                           "done_at", "cancelled_at"), steps),
        ):
            counts[table] = counts.get(table, 0) + loader.load(table, columns, iter(rows))
            rows.clear()

    for tip_id in range(1, tips + 1):
        # a daily rhythm: most tips in the working day (China time), growing over the campaign
        day = min(days - 1, int(days * rng.random() ** 0.8))
        hour = rng.choice((1, 2, 2, 3, 3, 3, 4, 5, 6, 6, 7, 8, 9, 10, 12, 14, 22))
        created = EPOCH + timedelta(days=day, hours=hour, seconds=rng.randrange(3600))
        if created >= now:
            created = now - timedelta(seconds=rng.randrange(1, 3600))
        category = rng.choices(categories, cat_weights)[0]
        unit = rng.choice(units) if rng.random() < 0.97 else "other"
        team = teams[(categories.index(category) + units.index(unit) if unit in units else 0) % len(teams)]
        ack_due = created + timedelta(hours=4)
        ack_delay = timedelta(minutes=rng.expovariate(1 / 90))
        acked = created + ack_delay if rng.random() < 0.995 and created + ack_delay < now else None
        by = rng.randrange(9, staff_count + 1) if acked else None
        outcome_due = (acked or created) + timedelta(hours=72 if category != "project-delay" else 24)
        recorded = (acked + timedelta(hours=rng.expovariate(1 / 36))) if acked else None
        if recorded is not None and recorded >= now:
            recorded = None
        state = "closed" if recorded else ("investigating" if acked else "routed")
        tip_rows.append((tip_id, f"bench-{tip_id:012d}", rng.choice(("telegram",) * 18 + ("phone", "mail")),
                         category, unit, texts[0] if unit == "other" else None, places[tip_id % 64],
                         texts[tip_id % 64], state, team, "category", "bench", created, created, ack_due, acked, by,
                         outcome_due if acked else None, recorded))
        for kind, at in (("received", created), ("routed", created), ("acknowledged", acked), ("closed", recorded)):
            if at is not None:
                ids["event"] += 1
                events.append((ids["event"], tip_id, at, kind, team, by if kind in ("acknowledged", "closed") else None,
                               True, None))
        # due steps: ack remind + escalate; outcome 3 reminders + escalate
        plan = [("ack", "remind", 0, ack_due - timedelta(hours=1), ack_due, acked),
                ("ack", "escalate", 1, ack_due, ack_due, acked)]
        if acked:
            plan += [("outcome", "remind", i, outcome_due - timedelta(hours=h), outcome_due, recorded)
                     for i, h in enumerate((24, 8, 2))]
            plan.append(("outcome", "escalate", 3, outcome_due, outcome_due, recorded))
        for kind, step, idx, due, deadline, settled in plan:
            ids["step"] += 1
            done = due if due < now and (settled is None or settled > due) else None
            cancelled = settled if done is None and settled is not None else None
            steps.append((ids["step"], f"{kind}:{tip_id}:{idx}:{step}", tip_id, None, kind, step, idx, due, deadline,
                          done, cancelled))
        if recorded is not None:
            ids["outcome"] += 1
            outcome = rng.choices(("verified", "unfounded", "transferred"), (30, 55, 15))[0]
            person = f"干部{rng.randrange(tips // 4 + 1)}" if outcome == "verified" else None
            outcomes.append((ids["outcome"], tip_id, outcome, unit if outcome == "verified" else None, person,
                             "科员" if person else None, category if person else None, None,
                             transferred_to if outcome == "transferred" else None, None, by, recorded))
            if outcome == "verified":
                ids["breach"] += 1
                key = f"{person}|{unit}"
                number = person_breaches[key] = person_breaches.get(key, 0) + 1
                bulletin = None if recorded >= bulletin_cut else 1 + (recorded - EPOCH).days // 2
                breaches.append((ids["breach"], ids["outcome"], tip_id, key, person, "科员", unit, category,
                                 recorded.date(), number, True, number >= 3, number >= 3, bulletin, recorded))
                kinds = ["self_criticism", "rectification_report"] + (
                    ["discipline_referral", "leader_accountability"] if number >= 3 else [])
                for kind in kinds:
                    ids["action"] += 1
                    due = recorded + timedelta(days=7) if kind in ("self_criticism", "rectification_report") else None
                    got = recorded + timedelta(days=rng.uniform(1, 8)) if rng.random() < 0.9 else None
                    if got is not None and got >= now:
                        got = None
                    actions.append((ids["action"], ids["breach"], kind,
                                    "unit" if kind == "rectification_report" else "person", due, got,
                                    1 if got else None, recorded))
                ids["step"] += 1
                steps.append((ids["step"], f"action:{ids['action']}:0:remind", None, ids["action"], "action", "remind",
                              0, recorded + timedelta(days=6), recorded + timedelta(days=7), None, None))
        if tip_id % 20_000 == 0 or tip_id == tips:
            flush()
            say(f"  {tip_id:>9,} tips  {time.perf_counter() - started:6.0f} s")
    loader.close()
    with engine.begin() as conn:
        if dialect == "postgresql":
            for table, column in (("tips", "id"), ("tip_events", "id"), ("outcomes", "id"), ("breaches", "id"),
                                  ("required_actions", "id"), ("due_steps", "id"), ("staff", "id")):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                                  f"(SELECT COALESCE(max({column}), 1) FROM {table}))"))
        say("recounting the summary's counters ...")
        for statement in rollup.create_triggers(dialect):
            conn.execute(text(statement))
        rollup.rebuild(conn)
    say("refreshing planner statistics ...")
    if dialect == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    counts["seconds"] = round(time.perf_counter() - started)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True,
                        help="an empty scratch database (sqlite:///path, or postgresql+psycopg://...)")
    parser.add_argument("--tips", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    counts = build(args.database_url, args.tips, args.days, args.seed)
    for table, n in counts.items():
        print(f"{table:18} {n:>12,}")


if __name__ == "__main__":
    main()
