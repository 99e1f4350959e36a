"""The daily summary and the bulletin job on a province-sized database.

    python -m bench.scale_db --database-url URL --tips 1000000      # once
    python -m bench.summary --database-url URL [--runs 5] [--officials 20] [--bulletin-cases 10000]

Rows printed (figure, baseline, ratio; medians of --runs):
- summary compute: `compute` (running counters) against `compute_direct` (the same figures
  as aggregates over the whole history, the way the summary was computed before, with
  NOT EXISTS; the original NOT IN took 322 s on PostgreSQL at 1M tips and is not re-run);
- summary compute + send: the scheduled job (figures, text in each language, chart,
  outbox rows for --officials officials), in a transaction rolled back;
- bulletin job: a draft of --bulletin-cases cases to 5 office members (rendered once)
  against rendering and splitting it once per member (as before, with today's renderer
  and splitter), rolled back; then the job's steps timed alone.
Asserts nothing; the machine is shared: compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from bench.scale_db import bench_config
from bot.app import build_deps
from bot.clock import FakeClock
from bot.services import bulletins, schedule
from bot.services.office import office_targets
from bot.services.summary import compute, compute_direct
from bot.splitting import split_html
from storage.db import make_engine
from storage.models import Breach, Staff, Tip
from storage.models_officials import Bulletin, Subscription


def median_time(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def row(name: str, figure: float, baseline: float | None, target: str) -> None:
    ratio = f"{baseline / figure:8.1f}x faster" if baseline else ""
    base = f"{baseline:9.3f} s" if baseline is not None else " " * 11
    print(f"{name:38} {figure:9.3f} s   baseline {base}  {ratio}   target {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-runs", type=int, default=3)
    parser.add_argument("--officials", type=int, default=20)
    parser.add_argument("--bulletin-cases", type=int, default=10_000)
    args = parser.parse_args()

    engine = make_engine(args.database_url)
    config = bench_config(args.database_url)
    with engine.connect() as conn:
        last = conn.scalar(select(func.max(Tip.created_at)))
        tips = conn.scalar(select(func.count()).select_from(Tip))
    assert last is not None, "an empty database: build it with bench.scale_db first"
    now = last + timedelta(minutes=5)
    deps, _ = build_deps(config, FakeClock(now), engine)
    local = now.astimezone(config.campaign.tz)
    period = (local.date() if local.time() >= datetime.strptime(config.scheduler.summary_at, "%H:%M").time()
              else local.date() - timedelta(days=1)).isoformat()
    print(f"{engine.dialect.name}, {tips:,} tips, summary period {period}")

    with deps.sessions.begin() as s:  # officials for the summary, idempotent
        have = s.scalar(select(func.count()).select_from(Staff).where(Staff.role == "official")) or 0
        for i in range(have, args.officials):
            st = Staff(telegram_user_id=5_000_000 + i, display_name=f"official {i}", role="official",
                       team_number=None, language="zh-CN" if i % 3 else "en", active=True, joined_at=now)
            s.add(st)
            s.flush()
            s.add(Subscription(staff_id=st.id, daily_summary=True, bulletins=True, escalations=True, updated_at=now))

    def new() -> None:
        with deps.sessions.begin() as s:
            compute(s, config, period)

    def direct() -> None:
        with deps.sessions.begin() as s:
            compute_direct(s, config, period)

    with deps.sessions.begin() as s:
        same = compute(s, config, period) == compute_direct(s, config, period)
    print(f"rollup figures equal the direct aggregates: {same}")
    new()  # warm
    figure = median_time(new, args.runs)
    baseline = median_time(direct, args.baseline_runs)
    target = "<= 0.3 s PostgreSQL" if engine.dialect.name == "postgresql" else "<= 0.5 s SQLite"
    row("summary compute", figure, baseline, target)

    def job(compute_fn: Callable[..., Any]) -> Callable[[], None]:
        def run() -> None:
            original = schedule.compute
            schedule.compute = compute_fn
            try:
                with engine.connect() as conn:
                    trans = conn.begin()
                    from sqlalchemy.orm import Session
                    with Session(bind=conn) as s:
                        schedule.summary_work(s, deps, period, now)
                        s.flush()
                    trans.rollback()
            finally:
                schedule.compute = original
        return run

    job(compute)()
    row(f"summary compute + send ({args.officials} officials)", median_time(job(compute), args.runs),
        median_time(job(compute_direct), args.baseline_runs), target)

    # The bulletin: a draft of N waiting cases to 5 office members.
    with engine.connect() as conn:
        trans = conn.begin()
        from sqlalchemy.orm import Session
        with Session(bind=conn) as s:
            for i in range(5 - len(office_targets(s, deps))):
                s.add(Staff(telegram_user_id=6_000_000 + i, display_name=f"office {i}", role="office",
                            team_number=None, language="zh-CN", active=True, joined_at=now))
            s.flush()
            ids = list(s.scalars(select(Breach.id).order_by(Breach.id.desc()).limit(args.bulletin_cases)))
            b = Bulletin(number=999_999, status="draft", period=period, breach_ids=json.dumps(ids), note_enc=None,
                         created_at=now, issued_on=period)
            s.add(b)
            s.flush()
            lines = bulletins.case_lines(s, deps, b)
            targets = office_targets(s, deps)

            def once() -> None:
                sp = s.begin_nested()
                bulletins.send_draft(s, deps, now, b)
                s.flush()
                sp.rollback()

            def per_member() -> None:  # the job before: rendered and split for each member
                from bot.services import outbox
                sp = s.begin_nested()
                lines = bulletins.case_lines(s, deps, b)
                for t in targets:
                    parts = split_html(bulletins.render_message(deps, t.lang, b, lines, draft=True))
                    for i, part in enumerate(parts):
                        outbox.enqueue(
                            s, deps.keyring, now, dedupe_key=f"draft-old:{b.id}:{t.chat_id}:{i}",
                            chat_id=t.chat_id, method="send_message",
                            payload={"text": part, "buttons": outbox.keyboard_payload(
                                bulletins.draft_buttons(deps, t.lang, b)) if i == len(parts) - 1 else None},
                            purpose="bulletin_draft")
                s.flush()
                sp.rollback()

            once()
            figure = median_time(once, args.runs)
            baseline = median_time(per_member, args.baseline_runs)
            print(f"bulletin: {len(lines):,} cases, {len(targets)} office members, "
                  f"{len(split_html(bulletins.render_message(deps, 'zh-CN', b, lines, draft=True)))} parts")
            row("bulletin draft job", figure, baseline, "<= 0.5 s")
            # where the job's time goes (one language, as the office members here)
            html = bulletins.render_message(deps, "zh-CN", b, lines, draft=True)
            parts = split_html(html)

            def queue() -> None:
                from bot.services import outbox
                sp = s.begin_nested()
                outbox.enqueue_many(s, deps.keyring, now, [
                    outbox.Row(f"bench:{t.chat_id}:{i}", t.chat_id, "send_message", {"text": p, "buttons": None})
                    for t in targets for i, p in enumerate(parts)], purpose="bulletin_draft")
                s.flush()
                sp.rollback()

            steps = {"read cases": lambda: bulletins.case_lines(s, deps, b),
                     "render": lambda: bulletins.render_message(deps, "zh-CN", b, lines, draft=True),
                     "split": lambda: split_html(html), f"queue {len(parts) * len(targets)} rows": queue}
            print("  " + ", ".join(f"{k} {median_time(fn, args.runs):.3f} s" for k, fn in steps.items()))
        trans.rollback()
    engine.dispose()


if __name__ == "__main__":
    main()
