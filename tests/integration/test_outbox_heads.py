"""The outbox's claim reads only heads through indexes (no full scan, whatever the queue's
length), heads stay right as rows come and go, leases run on the database's clock, and the
jobs around it are isolated: one failing step or scheduled run does not stop the others."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text, update

from bot import jobs
from bot.clock import FakeClock
from bot.deps import Deps
from bot.services import outbox, schedule
from bot.splitting import split_html
from storage.db import refresh_statistics
from storage.models import DueStep, OutboxMessage, TeamChat
from storage.models_officials import ScheduledRun
from tests.officials_data import add_person, local

from .conftest import is_postgres

LEASE = timedelta(seconds=60)


def put(session: Any, deps: Deps, key: str, chat_id: int) -> int:
    return outbox.enqueue(session, deps.keyring, deps.clock.now(), dedupe_key=key, chat_id=chat_id,
                          method="send_message", payload={"text": key}, purpose="card").id


def ready(deps: Deps) -> dict[int, bool]:
    with deps.sessions.begin() as session:
        return {r.id: r.ready_at is not None for r in session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))}


def fill_broadcast(deps: Deps, officials: int, backlog: int) -> None:
    rows = [outbox.Row(f"b:{i}:{part}", 50_000_000 + i, "send_message", {"text": "x"})
            for part in (0, 1) for i in range(officials)]
    rows += [outbox.Row(f"g:{i}", -1_000_000_001, "send_message", {"text": "card"}) for i in range(backlog)]
    with deps.sessions.begin() as session:
        outbox.enqueue_many(session, deps.keyring, deps.clock.now(), rows, purpose="broadcast")
    with deps.sessions.begin() as session:
        session.execute(text("ANALYZE outbox" if is_postgres(session.get_bind()) else "ANALYZE"))


def statements_of(engine: Engine, work: Any) -> list[tuple[str, Any]]:
    """The statements `work()` sends to the database, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if not statement.lstrip().upper().startswith("EXPLAIN"):
            seen.append((statement, parameters[0] if executemany else parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        work()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return seen


def plan(engine: Engine, statement: str, parameters: Any) -> str:
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            cursor.execute("EXPLAIN " + statement, parameters)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        lines = [" ".join(str(c) for c in row) for row in cursor.fetchall()]
        cursor.close()
        conn.rollback()
    return "\n".join(lines)


def full_scans(engine: Engine, statements: list[tuple[str, Any]]) -> list[str]:
    """Plans of the statements that read the outbox without an index (or sort it)."""
    bad = []
    for statement, parameters in statements:
        if "outbox" not in statement or statement.lstrip().upper().startswith(("INSERT", "SAVEPOINT", "RELEASE")):
            continue
        if "pg_advisory" in statement or "clock_timestamp" in statement:
            continue
        p = plan(engine, statement, parameters)
        if engine.dialect.name == "postgresql":
            scan = "Seq Scan on outbox" in p
        else:
            scan = any(line.split(" ", 3)[-1].startswith("SCAN outbox") for line in p.splitlines()) or \
                "TEMP B-TREE" in p
        if scan:
            bad.append(f"{statement}\n{p}")
    return bad


def test_the_claim_and_the_hand_over_read_indexes_only(deps: Deps, engine: Engine, clock: FakeClock) -> None:
    """At scale (a broadcast to 3,000 officials, a group's backlog of 400), the claim and
    the hand-over to a chat's next row never scan the outbox: their cost does not grow
    with the queue."""
    fill_broadcast(deps, 3000, 400)
    lease_now = clock.now()

    def claim() -> None:
        with deps.sessions.begin() as session:
            claim.rows = [(r.id, r.attempts, r.chat_id)  # type: ignore[attr-defined]
                          for r in outbox.claim_due(session, clock.now(), 16, LEASE, lease_now=lease_now)]

    claimed = statements_of(engine, claim)
    assert len(claim.rows) == 16  # type: ignore[attr-defined]
    assert full_scans(engine, claimed) == []
    row_id, attempts, chat_id = claim.rows[0]  # type: ignore[attr-defined]

    def sent() -> None:
        with deps.sessions.begin() as session:
            assert outbox.mark_sent(session, row_id, attempts, clock.now(), 1, chat_id=chat_id)

    assert full_scans(engine, statements_of(engine, sent)) == []
    # and the claim still finds rows whose lease ran out through an index
    later = lease_now + LEASE + timedelta(seconds=1)

    def reclaim() -> None:
        with deps.sessions.begin() as session:
            reclaim.n = len(outbox.claim_due(session, clock.now(), 16, LEASE, lease_now=later))  # type: ignore[attr-defined]

    assert full_scans(engine, statements_of(engine, reclaim)) == []
    assert reclaim.n == 16  # type: ignore[attr-defined]


# What refresh_statistics (sampled ANALYZE) gave SQLite for a queue of 100,000 open rows
# (bench/claim.py). With them, a claim that also asked for status = 'pending' searched
# ix_outbox_due and sorted every pending row: 50 ms a claim instead of 0.1.
LARGE_QUEUE_STATS = {
    "ix_outbox_open_chat": "76128 3 1", "ix_outbox_lease": "111824 1001", "ix_outbox_ready": "337824 1001 1",
    "ix_outbox_broadcast_id": "111824 1001", "ix_outbox_tip_id": "111824 1001", "ix_outbox_due": "96096 1001 1001",
    "ix_outbox_chat_id": "39878 3", "sqlite_autoindex_outbox_1": "98496 1",
}


def test_the_claim_walks_the_heads_index_in_order(deps: Deps, engine: Engine, clock: FakeClock) -> None:
    """A test of plans, not of timings: with the statistics of a large queue (PostgreSQL:
    ANALYZE of this one; SQLite: those its sampled ANALYZE keeps at 100k rows), the claim of due heads
    reads `ix_outbox_ready` in its order and stops after the rows it takes. Neither a scan
    of the table, nor a search of every pending row (`ix_outbox_due`, by status), nor a
    sort: its cost is the rows it takes, not the queue behind them."""
    fill_broadcast(deps, 2500, 400)
    with engine.begin() as connection:
        refresh_statistics(connection)
        if engine.dialect.name == "sqlite":  # the statistics of a queue of 100,000 open rows
            connection.exec_driver_sql("DELETE FROM sqlite_stat1 WHERE tbl = 'outbox'")
            for index, stat in LARGE_QUEUE_STATS.items():
                connection.exec_driver_sql("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('outbox', ?, ?)",
                                           (index, stat))
    engine.dispose()  # connections load the statistics anew

    def claim() -> None:
        with deps.sessions.begin() as session:
            claim.n = len(outbox.claim_due(session, clock.now(), 16, LEASE, expired=False))  # type: ignore[attr-defined]

    statements = [(s, p) for s, p in statements_of(engine, claim) if "outbox" in s]
    assert claim.n == 16  # type: ignore[attr-defined]
    assert len(statements) == 1, statements  # one statement: the UPDATE of the heads it finds
    p = plan(engine, *statements[0])
    if engine.dialect.name == "postgresql":
        assert re.search(r"Index (Only )?Scan using ix_outbox_ready on outbox", p), p
        assert "Seq Scan on outbox" not in p and "Sort" not in p, p
    else:
        searches = [line for line in p.splitlines() if re.search(r"\b(SEARCH|SCAN) outbox\b", line)]
        assert any("INDEX ix_outbox_ready (ready_at<?)" in line for line in searches), p
        assert not any("ix_outbox_due" in line or re.search(r"\bSCAN outbox\b", line) for line in searches), p
        assert "TEMP B-TREE" not in p, p


def test_the_senders_claim_is_the_same_statement_prepared_once(deps: Deps, engine: Engine, clock: FakeClock) -> None:
    """The sender claims through its own connection: on PostgreSQL the heads' statement
    goes to the driver as a prepared statement (planned once, no Session around it). It
    takes the same rows as `claim_due`, oldest first and leased on the database's clock,
    and its plan walks `ix_outbox_ready` without a scan or a sort."""
    fill_broadcast(deps, 2500, 400)
    with engine.begin() as connection:
        refresh_statistics(connection)
    claims = outbox.ClaimConnection(engine)
    try:
        with deps.sessions.begin() as session:
            expected = [r.id for r in session.scalars(
                select(OutboxMessage).where(OutboxMessage.ready_at <= clock.now())
                .order_by(OutboxMessage.ready_at, OutboxMessage.id).limit(32))]
        first = claims.claim(clock.now(), 16, LEASE, expired=False)
        second = claims.claim(clock.now(), 16, LEASE, expired=False)
        assert [r.id for r in first] + [r.id for r in second] == expected
        with deps.sessions.begin() as session:
            now = outbox.db_now(session)
            rows = session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(expected))).all()
            assert {(r.status, r.attempts, r.ready_at) for r in rows} == {("sending", 1, None)}
            assert all(now < r.lease_until <= now + LEASE for r in rows)
        payload = outbox.payload_of(first[0], deps.keyring)
        assert payload == {"text": "x"}
        if engine.dialect.name != "postgresql":
            return
        heads = outbox.HeadsClaim.compile(engine.dialect)
        p = plan(engine, heads.sql, heads.parameters(clock.now(), 16, LEASE))
        assert re.search(r"Index (Only )?Scan using ix_outbox_ready on outbox", p), p
        assert "Seq Scan on outbox" not in p and "Sort" not in p, p
        prepared = claims._connection().exec_driver_sql(
            "SELECT count(*) FROM pg_prepared_statements WHERE starts_with(statement, 'UPDATE outbox')").scalar()
        assert prepared == 1
    finally:
        claims.close()


def test_heads_follow_the_queue(deps: Deps, clock: FakeClock) -> None:
    a, b = 1001, 1002
    with deps.sessions.begin() as session:
        a1, a2 = put(session, deps, "a1", a), put(session, deps, "a2", a)
    with deps.sessions.begin() as session:
        outbox.enqueue_many(session, deps.keyring, clock.now(), [
            outbox.Row("ba", a, "send_message", {"text": "x"}), outbox.Row("bb1", b, "send_message", {"text": "x"}),
            outbox.Row("bb2", b, "send_message", {"text": "x"})], purpose="broadcast")
        ba, bb1, bb2 = (session.scalar(select(OutboxMessage.id).where(OutboxMessage.dedupe_key == k))
                        for k in ("ba", "bb1", "bb2"))
    # one head per chat: a's first row, b's first broadcast row
    assert ready(deps) == {a1: True, a2: False, ba: False, bb1: True, bb2: False}
    with deps.sessions.begin() as session:
        got = outbox.claim_due(session, clock.now(), 10, LEASE)
        assert [r.id for r in got] == [a1, bb1]
    assert not any(ready(deps).values())  # in flight: nothing else of a or b may go
    with deps.sessions.begin() as session:
        assert outbox.mark_retry(session, bb1, 1, clock.now() + timedelta(seconds=5), "429")
        assert outbox.mark_sent(session, a1, 1, clock.now(), 7)
    assert ready(deps) == {a1: False, a2: True, ba: False, bb1: True, bb2: False}
    with deps.sessions.begin() as session:
        assert [r.id for r in outbox.claim_due(session, clock.now(), 10, LEASE)] == [a2]  # bb1 waits 5 s
        assert outbox.mark_failed(session, a2, 1, "bad request")
    assert ready(deps)[ba] is True  # a failed row hands over too
    # a group that became a supergroup: its queue moves, heads are made again there
    with deps.sessions.begin() as session:
        assert outbox.move_chat(session, b, -100_555, clock.now()) == 2
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.chat_id == -100_555)
                               .order_by(OutboxMessage.id)).all()
        assert [(r.id, r.ready_at is not None) for r in rows] == [(bb1, True), (bb2, False)]


def test_rows_left_sending_by_a_dead_process_wait_again_at_once(deps: Deps, clock: FakeClock) -> None:
    with deps.sessions.begin() as session:
        a1 = put(session, deps, "a1", 1001)
        put(session, deps, "a2", 1001)
    with deps.sessions.begin() as session:
        assert [r.id for r in outbox.claim_due(session, clock.now(), 10, LEASE)] == [a1]
    with deps.sessions.begin() as session:
        assert outbox.claim_due(session, clock.now(), 10, LEASE) == []
        assert outbox.release_all(session, clock.now()) == 1
    with deps.sessions.begin() as session:
        assert [r.id for r in outbox.claim_due(session, clock.now(), 10, LEASE)] == [a1]


def test_leases_run_on_the_databases_clock(deps: Deps, clock: FakeClock) -> None:
    """Two senders whose own clocks disagree by an hour: the one ahead does not take the
    other's row, because leases are compared with the database's clock."""
    from bot.app import build_deps
    from bot.sender import OutboxSender

    with deps.sessions.begin() as session:
        put(session, deps, "a1", 1001)
    ahead_clock = FakeClock(clock.now() + timedelta(hours=1))
    ahead, _ = build_deps(deps.config, ahead_clock, deps.sessions.kw["bind"])
    first = OutboxSender(object(), deps)  # type: ignore[arg-type]
    second = OutboxSender(object(), ahead)  # type: ignore[arg-type]
    assert [c.id for c in first._claim(10)] != []
    assert second._claim(10) == []
    with deps.sessions.begin() as session:
        row = session.scalars(select(OutboxMessage)).one()
        now = outbox.db_now(session)
        assert now < row.lease_until <= now + first.lease


# jobs ----------------------------------------------------------------------------------------


def test_a_failing_due_step_does_not_hold_up_the_others(deps: Deps, clock: FakeClock,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with deps.sessions.begin() as session:
        for i in range(3):
            session.add(DueStep(token=f"t{i}", tip_id=None, action_id=None, deadline_kind="ack", step="remind",
                                idx=i, due_at=clock.now() - timedelta(minutes=10 - i), deadline=clock.now()))
    handled: list[str] = []

    def handle(session: Any, deps_: Deps, step: DueStep, now: Any) -> None:
        if step.token == "t0":
            raise ValueError("a template is broken")
        handled.append(step.token)

    monkeypatch.setattr(jobs, "_handle", handle)
    assert jobs.sweep_due_steps(deps) == 2
    assert handled == ["t1", "t2"]
    for attempt in range(2, jobs.MAX_STEP_ATTEMPTS + 1):
        assert jobs.sweep_due_steps(deps) == 0
        with deps.sessions.begin() as session:
            step = session.scalars(select(DueStep).where(DueStep.token == "t0")).one()
            assert step.attempts == attempt
    assert step.cancelled_at is not None and step.last_error.startswith("gave up: ValueError")
    assert jobs.sweep_due_steps(deps) == 0


def test_a_failing_summary_does_not_block_the_bulletin(deps: Deps, clock: FakeClock,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with deps.sessions.begin() as s:
        add_person(s, deps, 6001, "Official", "official")
    clock.set(local(2026, 11, 3, 18, 30))
    assert set(schedule.due_periods(deps.config, clock.now())) == {"summary", "bulletin"}

    def broken(*args: Any) -> str:
        raise RuntimeError("chart failed")

    monkeypatch.setitem(schedule.JOB_WORK, "summary", broken)
    failures: dict[tuple[str, str], int] = {}
    assert schedule.run_due(deps, failures=failures) == [("bulletin", "2026-11-03", "empty")]
    for _ in range(schedule.MAX_RUN_ATTEMPTS - 2):
        assert schedule.run_due(deps, failures=failures) == []
    assert schedule.run_due(deps, failures=failures) == [("summary", "2026-11-03",
                                                          "failed: RuntimeError: chart failed")]
    assert schedule.run_due(deps, failures=failures) == []  # given up: recorded, not tried again
    with deps.sessions.begin() as s:
        assert s.scalar(select(func.count()).select_from(ScheduledRun)) == 2


def test_the_splitter_never_yields_a_blank_part() -> None:
    assert split_html("  \n\u200b \n") == []
    text = "a" * 4000 + "\n" + " \n" * 200 + "\u200b" * 10 + "\n" + "b" * 100
    parts = split_html(text)
    assert parts and all(p.strip(" \n\u200b") for p in parts)
    assert "".join(parts).count("a") == 4000 and "".join(parts).count("b") == 100


def test_the_look_for_run_out_leases_is_prepared_too(deps: Deps, engine: Engine, clock: FakeClock) -> None:
    """The sender's look for leases that ran out (about once a second) goes the heads'
    way on PostgreSQL: a statement prepared once, sent to the driver with no Session or
    ORM (no statement passes through SQLAlchemy), the rows in flight at the sender one
    array parameter; it finds run-out leases through an index, among the rows in flight
    (`status = 'sending'`, a few per sender) or the leases, never by a scan of the queue.
    On both databases it takes those rows first, never one the sender still has."""
    fill_broadcast(deps, 2500, 400)
    with engine.begin() as connection:
        refresh_statistics(connection)
    claims = outbox.ClaimConnection(engine)
    try:
        taken = [r.id for r in claims.claim(clock.now(), 16, LEASE, expired=False)]
        with deps.sessions.begin() as session:  # their sender died: the leases ran out a minute ago
            session.execute(update(OutboxMessage).where(OutboxMessage.id.in_(taken))
                            .values(lease_until=outbox.db_now(session) - timedelta(minutes=1)))
        still_mine = taken[:2]
        seen = statements_of(engine, lambda: setattr(claims, "got", claims.claim(
            clock.now(), 16, LEASE, expired=True, skip=still_mine)))
        got = claims.got  # type: ignore[attr-defined]
        assert set(taken[2:]) <= {r.id for r in got}  # the run-out leases come first
        assert not set(still_mine) & {r.id for r in got}
        assert len(got) == 16 and [r.id for r in got] == sorted(r.id for r in got)
        with deps.sessions.begin() as session:
            again = {r.id: r.attempts for r in session.scalars(select(OutboxMessage)
                                                               .where(OutboxMessage.id.in_(taken[2:])))}
        assert set(again.values()) == {2}  # a second try, counted
        if engine.dialect.name != "postgresql":
            return
        assert [s for s, _ in seen if "outbox" in s] == []  # nothing through SQLAlchemy
        expired = outbox.ExpiredClaim.compile(engine.dialect)
        p = plan(engine, expired.sql, expired.claim_parameters(16, LEASE, still_mine))
        assert re.search(r"Index (Only )?Scan using ix_outbox_(lease|due) on outbox", p), p
        assert re.search(r"Index Cond: \(\(?(lease_until|\(status\)::text = 'sending')", p), p
        assert "Seq Scan on outbox" not in p, p
        prepared = claims._connection().exec_driver_sql(
            "SELECT count(*) FROM pg_prepared_statements WHERE starts_with(statement, 'UPDATE outbox')").scalar()
        assert prepared == 2  # the heads' claim and this one
    finally:
        claims.close()
