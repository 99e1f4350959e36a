"""Scheduled work: the daily summary and the bulletin, each run once per period.

Which period is due comes from the injected clock and the period keys of
`bot.domain.bulletins` (the latest run time at or before now). A run is recorded in
`scheduled_runs` under the unique key (job, period), in the same transaction that queues
its outbox rows, so:

- a restart, a second timer firing, or a catch-up after downtime finds the run recorded
  and does nothing; a run missed while the bot was down happens once when it is back
  (if at most `scheduler.catch_up_hours` late);
- on PostgreSQL, the transaction first takes `pg_try_advisory_xact_lock` for the job:
  of two processes (a rolling deploy) one does the work, the other skips at once; the
  unique key stays the guarantee if the lock is ever bypassed.
- SQLite is single-process by design: its write lock serialises the transactions of one
  process, and the unique key does the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot import metrics
from bot.config import Config
from bot.deps import Deps
from bot.domain.bulletins import bulletin_period_key, summary_period_key
from bot.services import broadcast, bulletins
from bot.services.officials import recipients
from bot.services.summary import chart_png, compute, escalations
from bot.splitting import split_html
from storage import rollup
from storage.db import is_postgres, refresh_statistics
from storage.models_officials import ScheduledRun

log = logging.getLogger(__name__)

JOBS = ("summary", "bulletin")
LOCK_KEYS = {"summary": 7_384_001, "bulletin": 7_384_002}  # PostgreSQL advisory lock ids


def _hhmm(value: str) -> time:
    hh, mm = map(int, value.split(":"))
    return time(hh, mm)


def bulletin_epoch(config: Config) -> date:
    return config.scheduler.bulletin_first_day or config.ladder.period_start


def run_time(config: Config, job: str, period: str) -> datetime:
    at = config.scheduler.summary_at if job == "summary" else config.scheduler.bulletin_at
    return datetime.combine(date.fromisoformat(period), _hhmm(at), tzinfo=config.campaign.tz)


def due_periods(config: Config, now: datetime) -> dict[str, str]:
    """The latest period of each job at or before `now`, unless it is too late to catch up."""
    sch, tz = config.scheduler, config.campaign.tz
    keys = {
        "summary": summary_period_key(now, tz, _hhmm(sch.summary_at)),
        "bulletin": bulletin_period_key(now, tz, sch.bulletin_every_days, _hhmm(sch.bulletin_at),
                                        bulletin_epoch(config)),
    }
    late = timedelta(hours=sch.catch_up_hours)
    return {job: p for job, p in keys.items() if p is not None and now - run_time(config, job, p) <= late}


def next_bulletin_run(config: Config, now: datetime) -> datetime:
    """The next bulletin run time after `now` (for the JobQueue's timer)."""
    every = config.scheduler.bulletin_every_days
    day = bulletin_epoch(config)
    local = now.astimezone(config.campaign.tz).date()
    if local > day:
        day += timedelta(days=((local - day).days // every) * every)
    when = datetime.combine(day, _hhmm(config.scheduler.bulletin_at), tzinfo=config.campaign.tz)
    while when <= now:
        when += timedelta(days=every)
    return when


MAX_RUN_ATTEMPTS = 5


def run_due(deps: Deps, now: datetime | None = None, failures: dict[tuple[str, str], int] | None = None
            ) -> list[tuple[str, str, str]]:
    """Run every due job whose period is not recorded yet; returns what ran.

    Every tick first folds the summary's pending counter deltas (storage/rollup.py), so
    they stay a tick's worth and the summary never sums a day of them. Each job is its own
    transaction and error boundary: a failing summary does not keep the bulletin from
    running. A failed run is tried again at the next tick; after
    `MAX_RUN_ATTEMPTS` failures (counted in `failures`, kept by the caller) it is recorded
    as failed, so it is not tried again, and logged.
    """
    now = now or deps.clock.now()
    failures = {} if failures is None else failures
    try:
        with deps.sessions.begin() as session:
            rollup.fold(session)
    except Exception as exc:  # noqa: BLE001 - the deltas stay for the next tick; the jobs still run
        from bot.jobs import is_connection_error  # noqa: PLC0415 - avoids an import cycle
        if is_connection_error(exc):
            raise
        log.warning("folding the summary's counters failed: %s", type(exc).__name__)
    done = []
    for job, period in due_periods(deps.config, now).items():
        try:
            outcome = run_job(deps, job, period, now)
        except Exception as exc:  # noqa: BLE001 - one job's failure must not stop the others
            from bot.jobs import is_connection_error  # noqa: PLC0415 - avoids an import cycle
            if is_connection_error(exc):
                raise
            key = (job, period)
            failures[key] = failures.get(key, 0) + 1
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            if failures[key] >= MAX_RUN_ATTEMPTS:
                log.error("scheduled %s for %s given up after %d attempts: %s", job, period, failures[key], error)
                _record_failed(deps, job, period, now, error)
                done.append((job, period, f"failed: {error}"[:64]))
            else:
                log.warning("scheduled %s for %s failed (attempt %d of %d): %s", job, period, failures[key],
                            MAX_RUN_ATTEMPTS, error)
            continue
        if outcome is not None:
            done.append((job, period, outcome))
            if job == "summary":
                optimize(deps)
    return done


def optimize(deps: Deps) -> None:
    """SQLite's planner statistics, refreshed daily after the summary (storage.db)."""
    with deps.sessions.begin() as session:
        refresh_statistics(session.connection())


def _record_failed(deps: Deps, job: str, period: str, now: datetime, error: str) -> None:
    try:
        with deps.sessions.begin() as session:
            if not already_ran(session, job, period):
                session.add(ScheduledRun(job=job, period=period, ran_at=now, outcome=f"failed: {error}"[:64]))
    except IntegrityError:
        pass


def already_ran(session: Session, job: str, period: str) -> bool:
    return session.scalar(select(ScheduledRun.id).where(ScheduledRun.job == job, ScheduledRun.period == period)
                          ) is not None


def run_job(deps: Deps, job: str, period: str, now: datetime) -> str | None:
    """Do (job, period) once; None when it was done (or is being done) elsewhere."""
    work = JOB_WORK[job]
    try:
        with deps.sessions.begin() as session:
            if is_postgres(session):
                if not session.scalar(select(func.pg_try_advisory_xact_lock(LOCK_KEYS[job]))):
                    return None  # another process is running this job right now
            if already_ran(session, job, period):
                return None
            run = ScheduledRun(job=job, period=period, ran_at=now, outcome="running")
            session.add(run)
            session.flush()  # takes the unique key (and SQLite's write lock) before the work
            run.outcome = work(session, deps, period, now)[:64]
    except IntegrityError:
        return None  # the same run committed by someone else in the meantime
    metrics.SCHEDULED_RUNS.labels(job).inc()
    log.info("scheduled %s for %s: %s", job, period, run.outcome)
    return run.outcome


def summary_work(session: Session, deps: Deps, period: str, now: datetime) -> str:
    config = deps.config
    who = recipients(session, "daily_summary")
    sent = 0
    if who:
        s = compute(session, config, period)
        blob = broadcast.store_blob(session, now, f"summary-{period}.png", chart_png(config, s))
        parts_for: dict[str, list[broadcast.Part]] = {}
        for lang in sorted({r.lang for r in who} | {config.campaign.default_language}):
            text = deps.texts.render(lang, "summary", s=s, config=config)
            parts: list[broadcast.Part] = [("send_message", {"text": t}) for t in split_html(text)]
            parts.append(("send_photo", {"blob_id": blob,
                                         "caption": deps.texts.msg(lang, "summary_chart_caption", period=period,
                                                                   days=config.officials.chart_days)}))
            parts_for[lang] = parts
        broadcast.send(session, deps, now, kind="summary", ref=period, recipients=who, parts_for=parts_for)
        sent = len(who)
    digest = 0
    esc_who = recipients(session, "escalations")
    if esc_who:
        start = run_time(config, "summary", period) - timedelta(days=1)
        items = escalations(session, start, start + timedelta(days=1))
        if items:
            parts_for = {
                lang: [("send_message", {"text": t})
                       for t in split_html(deps.texts.render(lang, "escalations", items=items, period=period))]
                for lang in sorted({r.lang for r in esc_who} | {config.campaign.default_language})
            }
            broadcast.send(session, deps, now, kind="escalations", ref=period, recipients=esc_who,
                           parts_for=parts_for, report=False)
            digest = len(esc_who)
    return f"summary to {sent}, digest to {digest}"


def bulletin_work(session: Session, deps: Deps, period: str, now: datetime) -> str:
    cfg = deps.config.officials
    status, b = bulletins.compile_draft(session, deps, now, period)
    if status == "empty" or b is None:
        if cfg.bulletin_empty_notice:
            who = recipients(session, "bulletins")
            parts_for = {lang: [("send_message", {"text": deps.texts.msg(lang, "bulletin_empty", period=period)})]
                         for lang in sorted({r.lang for r in who} | {deps.config.campaign.default_language})}
            broadcast.send(session, deps, now, kind="notice", ref=period, recipients=who, parts_for=parts_for,
                           report=False)
            return "empty: notice sent"
        return "empty"
    if cfg.bulletin_auto_publish:
        bulletins.publish(session, deps, now, b.id, None)
        return f"bulletin {b.number} published"
    bulletins.send_draft(session, deps, now, b)
    return f"bulletin {b.number} draft ({status})"


JOB_WORK: dict[str, Callable[[Session, Deps, str, datetime], str]] = {
    "summary": summary_work,
    "bulletin": bulletin_work,
}
