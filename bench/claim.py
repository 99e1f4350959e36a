"""Benchmark: the outbox claim's cost against the queue's length, and the event loop's lag.

    python -m bench.claim [--open 1000,10000,100000] [--database-url URL] [--lag 10000]

1. Claim time: the outbox holds N open rows (a broadcast: N/2 officials x 2 parts, the
   first part of each one due, plus one team group with a backlog of its own). Each
   measured claim takes up to 16 rows as the sender does (leases on the database's
   clock; on PostgreSQL a prepared statement sent to the driver directly), and is undone
   afterwards so the queue stays the same. The median and p95 of 50 claims are printed
   per N: the claim itself (its statement, in a transaction rolled back: what grows with
   the queue, if anything); the same with the leases that ran out
   (two statements, as the sender claims once a second); and the claim as the sender
   makes it, committed on its own connection (the commit's flush to disk included: a
   cost of the disk, the same at any N), without and with the look for run-out leases.
2. Event-loop lag (`--lag N`): N officials x 1 message delivered by tipline's sender
   through a fake Bot API on 127.0.0.1 at `--lag-rate` messages a second (30: Telegram's
   pace, as in a real broadcast; 0: as fast as the sender goes), with M more rows open
   behind them (`--lag-open`, default 100,000: the queue of a province's broadcast), while
   a probe coroutine wakes every 10 ms and records how late it woke: p50, p99, max. The
   fake Bot API runs in a process of its own (as Telegram does: not on this interpreter).

Asserts nothing. On PostgreSQL give a database of its own (`createdb bench_claim`), never
one that holds data: the bench creates and drops a schema in it.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, func, select, text, update  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from bot.app import build_deps  # noqa: E402
from bot.clock import SystemClock  # noqa: E402
from bot.services import outbox  # noqa: E402
from storage.db import upgrade  # noqa: E402
from storage.models import OutboxMessage  # noqa: E402
from tests.conftest import make_config  # noqa: E402

TOKEN = "123456:BENCH-TOKEN"
LEASE = timedelta(seconds=60)


def _schema_url(url: str) -> tuple[str, object]:
    """A fresh schema on PostgreSQL (dropped afterwards); the URL as is for SQLite."""
    if not url.startswith("postgresql"):
        return url, None
    schema = f"bench_{secrets.token_hex(4)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return scoped.render_as_string(hide_password=False), drop


def fill(deps, n_open: int) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC) - timedelta(seconds=5)
    officials = max(1, (n_open - 200) // 2)
    rows = [outbox.Row(f"bench:b:{i}:{part}", 20_000_000 + i, "send_message", {"text": f"part {part}"})
            for part in (0, 1) for i in range(officials)]
    # A team group with a backlog (20 a minute): its rows wait behind its head.
    rows += [outbox.Row(f"bench:g:{i}", -1_000_000_001, "send_message", {"text": f"card {i}"})
             for i in range(n_open - len(rows))]
    with deps.sessions.begin() as session:
        outbox.enqueue_many(session, deps.keyring, now, rows, purpose="broadcast")
    with deps.sessions.begin() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("ANALYZE outbox"))
        else:
            session.execute(text("ANALYZE"))


def claim_once(deps, claims: outbox.ClaimConnection, held, expired: bool = False,  # type: ignore[no-untyped-def]
               commit: bool = False) -> float:
    """One claim: as the sender makes it, committed on its own connection (`claims`), or
    its statements alone in a transaction on `held` (a connection kept open: no check-out)
    rolled back. On PostgreSQL the claim of due heads goes to the driver as a prepared
    statement, as the sender sends it (outbox.ClaimConnection)."""
    if commit:
        t0 = time.perf_counter()
        rows = claims.claim(datetime.now(UTC), 16, LEASE, expired=expired)
        elapsed = time.perf_counter() - t0
    elif held.dialect.name == "postgresql" and not expired:
        heads = outbox.HeadsClaim.compile(held.dialect)
        transaction = held.begin()
        cursor = held.connection.dbapi_connection.cursor()
        t0 = time.perf_counter()
        cursor.execute(heads.sql, heads.parameters(datetime.now(UTC), 16, LEASE), prepare=True)
        rows = cursor.fetchall()
        elapsed = time.perf_counter() - t0
        cursor.close()
        transaction.rollback()
    else:
        t0 = time.perf_counter()
        transaction = held.begin()
        with Session(bind=held) as session:
            rows = outbox.claim_due(session, datetime.now(UTC), 16, LEASE, lease_now=outbox.DB_CLOCK,
                                    expired=expired)
        elapsed = time.perf_counter() - t0
        transaction.rollback()
    assert rows, "nothing claimed"
    if commit:
        with deps.sessions.begin() as session:  # as they were: the queue stays the same
            session.execute(update(OutboxMessage).where(OutboxMessage.id.in_([r[0] for r in rows])).values(
                status="pending", lease_until=None, ready_at=OutboxMessage.next_attempt_at,
                attempts=OutboxMessage.attempts - 1))
    return elapsed


def p95(times: list[float]) -> float:
    return times[int(len(times) * 0.95) - 1]


def claim_bench(url: str, sizes: list[int]) -> None:
    print(f"claim of 16 rows, {make_url(url).get_backend_name()}: median / p95 of 50 claims")
    for n in sizes:
        scoped, drop = _schema_url(url)
        with tempfile.TemporaryDirectory() as tmp:
            if scoped.startswith("sqlite") and scoped == "sqlite://":
                scoped = f"sqlite:///{tmp}/claim.sqlite3"
            deps, engine = build_deps(make_config(scoped), SystemClock())
            upgrade(engine)
            fill(deps, n)
            with deps.sessions.begin() as session:
                open_rows = session.scalar(select(func.count()).select_from(OutboxMessage))
            claims = outbox.ClaimConnection(engine)
            held = engine.connect()
            for _ in range(5):
                claim_once(deps, claims, held)
            times = sorted(claim_once(deps, claims, held) for _ in range(50))
            both = sorted(claim_once(deps, claims, held, expired=True) for _ in range(50))
            committed = sorted(claim_once(deps, claims, held, commit=True) for _ in range(50))
            committed_both = sorted(claim_once(deps, claims, held, expired=True, commit=True) for _ in range(50))
            held.close()
            claims.close()
            engine.dispose()
        if drop is not None:
            drop()  # type: ignore[operator]
        print(f"  {open_rows:>7} open rows: {1000 * statistics.median(times):7.2f} ms   "
              f"p95 {1000 * p95(times):7.2f} ms   with run-out leases too: {1000 * statistics.median(both):7.2f} ms   "
              f"p95 {1000 * p95(both):7.2f} ms   committed: {1000 * statistics.median(committed):7.2f} ms   "
              f"p95 {1000 * p95(committed):7.2f} ms   committed with run-out leases: "
              f"{1000 * statistics.median(committed_both):7.2f} ms   p95 {1000 * p95(committed_both):7.2f} ms", flush=True)


class FakeApiProcess:
    """The fake Bot API in a process of its own: in a thread of this one it would take the
    interpreter's lock from the event loop being measured, which Telegram does not."""

    CODE = (
        "import sys; sys.path.insert(0, sys.argv[1]); from tests.fakebot import FakeBotAPI; "
        "srv = FakeBotAPI(sys.argv[2], global_per_second=None, per_chat_per_second=None, group_per_minute=None, "
        "strict_file_ids=False); srv.start_in_thread(); print(srv.base_url, srv.base_file_url, flush=True); "
        "sys.stdin.read(); print(len(srv.sent), flush=True); srv.stop_thread()"
    )

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE, root, TOKEN], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.base_url, self.base_file_url = self.proc.stdout.readline().split()

    def stop(self) -> int:
        """Messages it made."""
        out, _ = self.proc.communicate("", timeout=60)
        return int(out.split()[-1])


def lag_bench(url: str, n: int, rate: float, behind: int) -> None:
    from telegram.ext import ExtBot
    from telegram.request import HTTPXRequest

    from bot.ratelimit import PacingRateLimiter
    from bot.sender import OutboxSender
    srv = FakeApiProcess()
    scoped, drop = _schema_url(url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if scoped == "sqlite://":
                scoped = f"sqlite:///{tmp}/lag.sqlite3"
            config = make_config(scoped, telegram={"base_url": srv.base_url, "base_file_url": srv.base_file_url})
            deps, engine = build_deps(config, SystemClock())
            upgrade(engine)
            now = datetime.now(UTC)
            with deps.sessions.begin() as session:
                outbox.enqueue_many(session, deps.keyring, now,
                                    [outbox.Row(f"lag:{i}", 30_000_000 + i, "send_message", {"text": "通报"})
                                     for i in range(n)], purpose="broadcast")
            if behind:  # rows not due yet (a later part, retries): the claim must not wade through them
                with deps.sessions.begin() as session:
                    outbox.enqueue_many(session, deps.keyring, now + timedelta(days=1),
                                        [outbox.Row(f"behind:{i}", 40_000_000 + i % 50_000, "send_message",
                                                    {"text": "later"}) for i in range(behind)],
                                        purpose="broadcast")

            async def go() -> tuple[list[float], list[float], float]:
                bot = ExtBot(TOKEN, base_url=srv.base_url, base_file_url=srv.base_file_url,
                             request=HTTPXRequest(connection_pool_size=64, pool_timeout=30.0),
                             rate_limiter=PacingRateLimiter(global_per_second=rate or 10_000.0,
                                                            per_chat_per_second=100.0, group_per_minute=6000.0))
                lags: list[float] = []
                done = asyncio.Event()

                async def probe() -> None:
                    loop = asyncio.get_running_loop()
                    while not done.is_set():
                        t0 = loop.time()
                        await asyncio.sleep(0.01)
                        lags.append(loop.time() - t0 - 0.01)

                # The same probe for 5 s with nothing else running: the machine's own lag.
                probe_task = asyncio.create_task(probe())
                await asyncio.sleep(5.0)
                done.set()
                await probe_task
                idle = lags[:]
                lags.clear()
                done.clear()
                async with bot:
                    sender = OutboxSender(bot, deps)
                    probe_task = asyncio.create_task(probe())
                    t0 = time.monotonic()
                    sender.start()
                    while sender.delivered < n and time.monotonic() - t0 < 600:
                        await asyncio.sleep(0.2)
                    wall = time.monotonic() - t0
                    done.set()
                    await probe_task
                    await sender.stop()
                return idle, lags, wall

            idle, lags, wall = asyncio.run(go())
            engine.dispose()
    finally:
        sent = srv.stop()
        if drop is not None:
            drop()  # type: ignore[operator]
    lags.sort()
    idle.sort()
    print(f"event-loop lag while delivering {n} rows with {behind} more open ({sent} sent in {wall:.1f} s, "
          f"{sent / wall:.1f} msg/s, limit {rate or 'none'}): p50 {1000 * lags[len(lags) // 2]:.1f} ms  "
          f"p99 {1000 * lags[int(len(lags) * 0.99)]:.1f} ms  max {1000 * lags[-1]:.1f} ms; the machine's own "
          f"(the probe alone, 5 s before): p50 {1000 * idle[len(idle) // 2]:.1f} ms  "
          f"p99 {1000 * idle[int(len(idle) * 0.99)]:.1f} ms  max {1000 * idle[-1]:.1f} ms", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--open", default="1000,10000,100000", help="open rows, comma-separated")
    p.add_argument("--database-url", default="sqlite://", help="default: a SQLite file in a temporary directory")
    p.add_argument("--lag", type=int, default=0, help="also measure event-loop lag delivering N rows")
    p.add_argument("--lag-rate", type=float, default=30.0, help="messages a second during the lag run (0: unpaced)")
    p.add_argument("--lag-open", type=int, default=100_000, help="rows open behind the delivered ones")
    args = p.parse_args()
    sizes = [int(x) for x in args.open.split(",") if x]
    if sizes:
        claim_bench(args.database_url, sizes)
    if args.lag:
        lag_bench(args.database_url, args.lag, args.lag_rate, args.lag_open)


if __name__ == "__main__":
    main()
