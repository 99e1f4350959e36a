"""Prometheus metrics (prometheus-client), in a registry of tipline's own.

Counters are counted in the process as things happen; the figures the database already
knows (outbox depth and oldest age by kind, tips and escalations by team, the last
scheduled run) are read from it at each scrape. Labels are kinds, teams and job names:
never a person, a chat or a tip.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

UPDATES_HANDLED = Counter("tipline_updates_handled", "Updates from Telegram handled", registry=REGISTRY)
HANDLER_FAILURES = Counter("tipline_handler_failures", "Updates whose handler raised", registry=REGISTRY)
TELEGRAM_429 = Counter("tipline_telegram_429", "Requests Telegram answered with 429 RetryAfter", registry=REGISTRY)
SEND_PAUSE_SECONDS = Counter("tipline_send_pause_seconds",
                             "Seconds every request was paused for Telegram's RetryAfter", registry=REGISTRY)
WEBHOOK_REQUESTS = Counter("tipline_webhook_requests",
                           "Requests to the webhook receiver, by outcome (accepted, duplicate, unauthorized, "
                           "bad_request, unreadable, not_found, journal_failed)", ["outcome"], registry=REGISTRY)
SCHEDULED_RUNS = Counter("tipline_scheduled_runs", "Scheduled runs done by this process (summary, bulletin)",
                         ["job"], registry=REGISTRY)
SENDER_LEADING = Gauge("tipline_sender_leading",
                       "1 while this process holds the sender lead (sends the outbox), else 0", registry=REGISTRY)
SENDER_LEAD_TAKEN = Counter("tipline_sender_lead_taken", "Times this process took the sender lead",
                            registry=REGISTRY)


def retry_after(pause_seconds: float) -> None:
    TELEGRAM_429.inc()
    SEND_PAUSE_SECONDS.inc(max(0.0, pause_seconds))


class DatabaseCollector(Collector):
    """Figures read from the database at each scrape."""

    def __init__(self, sessions, clock) -> None:  # type: ignore[no-untyped-def]
        self.sessions = sessions
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        from storage.models import DueStep, OutboxMessage, Tip
        from storage.models_officials import ScheduledRun

        now: datetime = self.clock.now()
        depth = GaugeMetricFamily("tipline_outbox_depth", "Messages waiting in the outbox, by kind", labels=["kind"])
        oldest = GaugeMetricFamily("tipline_outbox_oldest_age_seconds",
                                   "Age of the oldest unsent outbox message, by kind", labels=["kind"])
        tips = CounterMetricFamily("tipline_tips_received", "Tips received, by the team that has them",
                                   labels=["team"])
        escalations = CounterMetricFamily("tipline_escalations", "Deadlines escalated to the office, by team",
                                          labels=["team"])
        last_run = GaugeMetricFamily("tipline_last_scheduled_run_timestamp_seconds",
                                     "When the last scheduled run (summary, bulletin) was done, Unix time")
        with self.sessions.begin() as session:
            for kind, count, first in session.execute(
                select(OutboxMessage.purpose, func.count(), func.min(OutboxMessage.created_at))
                .where(OutboxMessage.status.in_(("pending", "sending")))
                .group_by(OutboxMessage.purpose)
            ):
                depth.add_metric([kind], count)
                first = _aware(first)
                oldest.add_metric([kind], max(0.0, (now - first).total_seconds()) if first else 0.0)
            for team, count in session.execute(select(Tip.team_number, func.count()).group_by(Tip.team_number)):
                tips.add_metric([str(team)], count)
            for team, count in session.execute(
                select(Tip.team_number, func.count())
                .select_from(DueStep)
                .outerjoin(Tip, Tip.id == DueStep.tip_id)
                .where(DueStep.step == "escalate", DueStep.done_at.is_not(None))
                .group_by(Tip.team_number)
            ):
                escalations.add_metric(["none" if team is None else str(team)], count)
            ran = _aware(session.scalar(select(func.max(ScheduledRun.ran_at))))
        if ran is not None:
            last_run.add_metric([], ran.timestamp())
        yield from (depth, oldest, tips, escalations, last_run)


def _aware(value):  # type: ignore[no-untyped-def]
    from datetime import UTC

    if value is None or not isinstance(value, datetime):
        return value
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class _Combined:
    def __init__(self, *sources: object) -> None:
        self.sources = sources

    def collect(self) -> Iterator[object]:
        for source in self.sources:
            yield from source.collect()  # type: ignore[attr-defined]


def exposition(collector: DatabaseCollector | None) -> bytes:
    """The text Prometheus scrapes (call off the event loop: it reads the database)."""
    if collector is None:
        return generate_latest(REGISTRY)
    return generate_latest(_Combined(REGISTRY, collector))  # type: ignore[arg-type]
