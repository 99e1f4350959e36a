"""The daily summary from running counters (storage/rollup.py) against the direct aggregates
over the whole history, on random data with the changes the workflow makes (acknowledging,
reassigning, closing, receiving, escalating, deleting); the summary's statements are few,
their number does not grow with the data, and on PostgreSQL none is a full scan."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import Engine, delete, event, select, text, update

from bot.config import Config
from bot.deps import Deps
from bot.services.summary import compute, compute_direct
from storage import rollup
from storage.models import DueStep, RequiredAction, Tip
from tests.officials_data import add_action, add_breach, add_outcome, add_person, add_step, add_tip, local

from .conftest import is_postgres

CATEGORIES = ("absence", "public-dining", "official-car", "extortion", "no-such-category")
UNITS = ("dingchang", "guocun", "land", "xindian", "typed-unit")
KINDS = ("self_criticism", "rectification_report", "discipline_referral", "leader_accountability")


def random_campaign(deps: Deps, rng: random.Random, tips: int, first_day: int = 1, days: int = 20) -> None:
    with deps.sessions.begin() as s:
        lead = add_person(s, deps, 9001 + rng.randrange(10**6), "Lead", "lead", team=1).id
        for _ in range(tips):
            created = local(2026, 11, first_day) + timedelta(minutes=rng.randrange(days * 24 * 60))
            ack_due = created + timedelta(hours=rng.choice((2, 4, 30)))
            acked = created + timedelta(minutes=rng.randrange(1, 600)) if rng.random() < 0.8 else None
            outcome_due = ack_due + timedelta(hours=rng.choice((24, 72))) if rng.random() < 0.9 else None
            recorded = (acked or created) + timedelta(hours=rng.randrange(1, 120)) if rng.random() < 0.6 else None
            closed = recorded if recorded and rng.random() < 0.95 else None
            tip = add_tip(s, deps, category=rng.choice(CATEGORIES), unit=rng.choice(UNITS),
                          team=rng.randrange(1, 10), created=created, ack_due=ack_due, acked=acked,
                          by=lead if acked else None, outcome_due=outcome_due, closed=closed)
            if rng.random() < 0.3:
                add_step(s, tip, rng.choice(("ack", "outcome", "action")), rng.choice(("remind", "escalate")),
                         ack_due + timedelta(minutes=rng.randrange(0, 3000)) if rng.random() < 0.8 else None)
            if recorded is None:
                continue
            outcome = rng.choice(("verified", "unfounded", "transferred"))
            o = add_outcome(s, tip, outcome, recorded, lead)
            if outcome == "verified":
                b = add_breach(s, tip, o, name=f"P{rng.randrange(50)}", post="x", at=recorded)
                for kind in rng.sample(KINDS, rng.randrange(1, 4)):
                    due = recorded + timedelta(days=rng.choice((1, 3, 7))) if rng.random() < 0.7 else None
                    received = recorded + timedelta(hours=rng.randrange(1, 200)) if rng.random() < 0.5 else None
                    add_action(s, b, kind, recorded, due, received)


def shake(deps: Deps, rng: random.Random) -> None:
    """What the workflow does to existing rows: every kind of UPDATE and a cascading DELETE."""
    with deps.sessions.begin() as s:
        ids = list(s.scalars(select(Tip.id)))
        for tip_id in rng.sample(ids, len(ids) // 5):
            tip = s.get(Tip, tip_id)
            assert tip is not None
            r = rng.random()
            if r < 0.3:
                tip.team_number = rng.randrange(1, 10)
            elif r < 0.6:
                tip.acknowledged_at = None if tip.acknowledged_at else tip.created_at + timedelta(hours=3)
            elif r < 0.8:
                tip.ack_due_at = tip.ack_due_at + timedelta(hours=rng.choice((-1, 5)))
            else:
                tip.category = rng.choice(CATEGORIES)
        s.execute(update(RequiredAction).where(RequiredAction.id % 3 == 0)
                  .values(received_at=None))
        s.execute(update(DueStep).where(DueStep.id % 4 == 1).values(step="escalate"))
        s.execute(delete(Tip).where(Tip.id.in_(rng.sample(ids, len(ids) // 20))))


PERIODS = ("2026-11-03", "2026-11-10", "2026-11-17", "2026-11-21", "2026-11-25", "2026-12-30")


def assert_same(deps: Deps, config: Config | None = None) -> None:
    config = config or deps.config
    with deps.sessions.begin() as s:
        for period in PERIODS:
            assert compute(s, config, period) == compute_direct(s, config, period), period


def test_rollup_figures_equal_the_direct_aggregates_on_random_data(deps: Deps) -> None:
    rng = random.Random(11)
    random_campaign(deps, rng, 400)
    assert_same(deps)  # counters still as deltas
    with deps.sessions.begin() as s:
        assert rollup.fold(s) > 0
    assert_same(deps)
    shake(deps, rng)
    assert_same(deps)
    with deps.sessions.begin() as s:
        rollup.fold(s)
        assert rollup.fold(s) == 0
    assert_same(deps)
    with deps.sessions.begin() as s:  # the counters equal a recount from the rows
        counted = rollup.totals(s)
        rollup.rebuild(s.connection())
        assert rollup.totals(s) == counted


def test_rollup_chart_edges_off_the_hour(deps: Deps) -> None:
    config = deps.config.model_copy(
        update={"scheduler": deps.config.scheduler.model_copy(update={"summary_at": "18:20"})})
    random_campaign(deps, random.Random(5), 250)
    assert_same(deps, config)


def test_triggers_reinstalled_when_a_table_was_rebuilt(engine: Engine, deps: Deps) -> None:
    random_campaign(deps, random.Random(3), 30)
    with engine.begin() as conn:
        for statement in rollup.drop_triggers(conn.dialect.name):
            conn.execute(text(statement))
        assert rollup.triggers_present(conn) == 0
        assert rollup.ensure(conn)
        assert rollup.triggers_present(conn) == rollup.expected_triggers(conn.dialect.name)
        assert not rollup.ensure(conn)
    random_campaign(deps, random.Random(4), 30)
    assert_same(deps)


class Statements:
    def __init__(self, engine: Engine) -> None:
        self.engine, self.seen = engine, []

    def __enter__(self) -> list[tuple[str, object]]:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self.seen

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        self.seen.append((statement, parameters))


def summary_statements(engine: Engine, deps: Deps, period: str) -> list[tuple[str, object]]:
    with deps.sessions.begin() as s, Statements(engine) as seen:
        compute(s, deps.config, period)
    return list(seen)


def test_summary_statements_are_few_and_do_not_grow_with_the_data(engine: Engine, deps: Deps) -> None:
    random_campaign(deps, random.Random(1), 40)
    small = summary_statements(engine, deps, "2026-11-21")
    random_campaign(deps, random.Random(2), 400)
    large = summary_statements(engine, deps, "2026-11-21")
    assert len(small) == len(large) <= 8, [s for s, _ in large]


def bulk_history(engine: Engine, tips: int) -> None:
    """A long history in bulk (tips, outcomes, due steps, actions), then ANALYZE."""
    with engine.begin() as conn:
        conn.execute(text(f"""
            INSERT INTO tips (receipt_hash, channel, category, unit_key, place_enc, text_enc, state, team_number,
                              route_rule, route_reason, created_at, routed_at, ack_due_at, acknowledged_at,
                              outcome_due_at, closed_at)
            SELECT 'bulk-' || g, 'telegram', (ARRAY['absence','public-dining','official-car'])[1 + g % 3],
                   (ARRAY['land','guocun','dingchang','xindian'])[1 + g % 4], 'p', 't', 'closed', 1 + g % 8, 'r', 'r',
                   t, t, t + interval '4 hours', t + interval '1 hour', t + interval '3 days',
                   CASE WHEN g % 50 = 0 THEN NULL ELSE t + interval '2 days' END
            FROM (SELECT g, timestamptz '2026-06-01 00:00+00' + g * interval '1 minute' AS t
                  FROM generate_series(1, {tips}) AS g) AS x"""))
        conn.execute(text("""
            INSERT INTO outcomes (tip_id, outcome, recorded_by, recorded_at)
            SELECT id, 'unfounded', (SELECT min(id) FROM staff), closed_at FROM tips
            WHERE closed_at IS NOT NULL AND receipt_hash LIKE 'bulk-%'"""))
        conn.execute(text("""
            INSERT INTO due_steps (token, tip_id, deadline_kind, step, idx, due_at, deadline, done_at)
            SELECT 'bulk-' || id || '-' || k, id, 'ack', CASE WHEN k = 0 THEN 'remind' ELSE 'escalate' END, k,
                   ack_due_at, ack_due_at, ack_due_at
            FROM tips CROSS JOIN generate_series(0, 1) AS k WHERE receipt_hash LIKE 'bulk-%'"""))
        conn.execute(text("""
            INSERT INTO breaches (outcome_id, tip_id, person_key, person_name, person_post, unit_key, category,
                                  occurred_on, breach_number, in_bulletin, referral, leader_accountable, created_at)
            SELECT o.id, o.tip_id, 'p' || o.id, 'p', 'p', 'land', 'absence', o.recorded_at::date, 1, true, false,
                   false, o.recorded_at
            FROM outcomes o WHERE o.tip_id % 3 = 0 AND o.outcome = 'unfounded' AND o.recorded_by IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM breaches b WHERE b.outcome_id = o.id)"""))
        conn.execute(text("""
            INSERT INTO required_actions (breach_id, kind, target, due_at, received_at, created_at)
            SELECT id, 'self_criticism', 'person', created_at + interval '7 days',
                   CASE WHEN id % 10 = 0 THEN NULL ELSE created_at + interval '2 days' END, created_at
            FROM breaches WHERE person_name = 'p'"""))
        conn.execute(text("ANALYZE"))


def test_no_summary_statement_scans_a_whole_table_on_postgresql(engine: Engine, deps: Deps) -> None:
    if not is_postgres(engine):
        pytest.skip("the plans checked are PostgreSQL's")
    random_campaign(deps, random.Random(1), 50)
    bulk_history(engine, 80_000)
    with deps.sessions.begin() as s:
        rollup.fold(s)
    period = "2026-07-30"  # the bulk history runs from June to mid-August
    statements = summary_statements(engine, deps, period)
    assert statements[0][0] == "SET LOCAL jit = off"  # compiling would cost more than these index ranges
    scans = []
    with engine.connect() as conn:
        for statement, parameters in statements[1:]:
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
            for table in ("tips", "outcomes", "due_steps", "required_actions"):
                if f"Seq Scan on {table}" in plan:
                    scans.append((table, statement, plan))
    assert not scans, scans
