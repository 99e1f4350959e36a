"""The daily summary (每日汇总): figures by SQL aggregates, text per language, a PNG chart.

A summary for period D (an ISO date) covers the 24 hours before D at `scheduler.summary_at`
local time ("today"), and the campaign up to that moment ("so far"). Nothing is loaded
case by case: every figure is a COUNT/SUM grouped in the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session

from bot.chart import stacked_bars
from bot.config import Config
from storage.models import DueStep, Outcome, RequiredAction, Tip

OUTCOMES = ("verified", "unfounded", "transferred")
ACTIONS = ("self_criticism", "rectification_report", "discipline_referral", "leader_accountability")


@dataclass(frozen=True, slots=True)
class Count:
    key: str | int
    today: int
    total: int


@dataclass(frozen=True, slots=True)
class TeamRow:
    team: int
    today: int
    total: int
    ack_due: int  # tips whose acknowledgement was due (or done) by the end of the period
    ack_on_time: int

    @property
    def on_time_pct(self) -> int | None:
        return None if not self.ack_due else round(100 * self.ack_on_time / self.ack_due)


@dataclass(frozen=True, slots=True)
class ActionRow:
    kind: str
    today: int
    total: int
    outstanding: int  # not yet received
    overdue: int  # outstanding and past due


@dataclass
class Summary:
    period: str
    start: datetime
    end: datetime
    today: int = 0
    total: int = 0
    categories: list[Count] = field(default_factory=list)
    units: list[Count] = field(default_factory=list)
    teams: list[TeamRow] = field(default_factory=list)
    ack_due: int = 0
    ack_on_time: int = 0
    overdue_ack: int = 0
    overdue_outcome: int = 0
    escalated: list[Count] = field(default_factory=list)  # by deadline kind
    outcomes: list[Count] = field(default_factory=list)
    actions: list[ActionRow] = field(default_factory=list)
    chart_days: list[date] = field(default_factory=list)
    chart: dict[str, list[int]] = field(default_factory=dict)  # category -> count per day

    @property
    def on_time_pct(self) -> int | None:
        return None if not self.ack_due else round(100 * self.ack_on_time / self.ack_due)

    @property
    def escalated_today(self) -> int:
        return sum(c.today for c in self.escalated)

    @property
    def escalated_total(self) -> int:
        return sum(c.total for c in self.escalated)


def period_window(config: Config, period: str) -> tuple[datetime, datetime]:
    hh, mm = map(int, config.scheduler.summary_at.split(":"))
    end = datetime.combine(date.fromisoformat(period), time(hh, mm), tzinfo=config.campaign.tz)
    return end - timedelta(days=1), end


def _in(column: ColumnElement[datetime] | object, start: datetime, end: datetime) -> ColumnElement[bool]:
    return and_(column >= start, column < end)  # type: ignore[operator]


def _today(column: object, start: datetime, end: datetime) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((_in(column, start, end), 1), else_=0)), 0)


def compute(session: Session, config: Config, period: str) -> Summary:
    start, end = period_window(config, period)
    s = Summary(period=period, start=start, end=end)
    before_end = Tip.created_at < end

    def by(column: ColumnElement) -> list[Count]:  # type: ignore[type-arg]
        rows = session.execute(
            select(column, func.count(), _today(Tip.created_at, start, end)).where(before_end).group_by(column)
        ).all()
        return [Count(k, int(today), int(total)) for k, total, today in rows]

    counts = {c.key: c for c in by(Tip.category)}
    s.categories = [counts.get(c.key, Count(c.key, 0, 0)) for c in config.categories]
    s.today, s.total = sum(c.today for c in s.categories), sum(c.total for c in s.categories)
    units = {c.key: c for c in by(Tip.unit_key)}
    order = [u.key for u in config.units] + sorted(k for k in units if config.unit(str(k)) is None)
    s.units = [units[k] for k in order if k in units]

    acked_on_time = and_(Tip.acknowledged_at.is_not(None), Tip.acknowledged_at < end,
                         Tip.acknowledged_at <= Tip.ack_due_at)
    ack_due = (Tip.ack_due_at < end) | and_(Tip.acknowledged_at.is_not(None), Tip.acknowledged_at < end)
    team_rows = session.execute(
        select(Tip.team_number, func.count(), _today(Tip.created_at, start, end),
               func.coalesce(func.sum(case((ack_due, 1), else_=0)), 0),
               func.coalesce(func.sum(case((acked_on_time, 1), else_=0)), 0))
        .where(before_end).group_by(Tip.team_number)
    ).all()
    teams = {int(r[0]): TeamRow(int(r[0]), int(r[2]), int(r[1]), int(r[3]), int(r[4])) for r in team_rows}
    s.teams = [teams.get(t.number, TeamRow(t.number, 0, 0, 0, 0)) for t in config.teams]
    s.ack_due = sum(t.ack_due for t in s.teams)
    s.ack_on_time = sum(t.ack_on_time for t in s.teams)

    not_acked = Tip.acknowledged_at.is_(None) | (Tip.acknowledged_at >= end)
    s.overdue_ack = int(session.scalar(
        select(func.count()).select_from(Tip).where(before_end, not_acked, Tip.ack_due_at < end)) or 0)
    no_outcome = ~Tip.id.in_(select(Outcome.tip_id).where(Outcome.recorded_at < end))
    s.overdue_outcome = int(session.scalar(
        select(func.count()).select_from(Tip).where(
            before_end, Tip.outcome_due_at.is_not(None), Tip.outcome_due_at < end,
            Tip.closed_at.is_(None) | (Tip.closed_at >= end), no_outcome)) or 0)

    esc = session.execute(
        select(DueStep.deadline_kind, func.count(), _today(DueStep.done_at, start, end))
        .where(DueStep.step == "escalate", DueStep.done_at.is_not(None), DueStep.done_at < end)
        .group_by(DueStep.deadline_kind)
    ).all()
    esc_by = {k: Count(k, int(today), int(total)) for k, total, today in esc}
    s.escalated = [esc_by.get(k, Count(k, 0, 0)) for k in ("ack", "outcome", "action")]

    out = session.execute(
        select(Outcome.outcome, func.count(), _today(Outcome.recorded_at, start, end))
        .where(Outcome.recorded_at < end).group_by(Outcome.outcome)
    ).all()
    out_by = {k: Count(k, int(today), int(total)) for k, total, today in out}
    s.outcomes = [out_by.get(k, Count(k, 0, 0)) for k in OUTCOMES]

    outstanding = RequiredAction.received_at.is_(None) | (RequiredAction.received_at >= end)
    acts = session.execute(
        select(RequiredAction.kind, func.count(), _today(RequiredAction.created_at, start, end),
               func.coalesce(func.sum(case((outstanding, 1), else_=0)), 0),
               func.coalesce(func.sum(case((and_(outstanding, RequiredAction.due_at < end), 1), else_=0)), 0))
        .where(RequiredAction.created_at < end).group_by(RequiredAction.kind)
    ).all()
    act_by = {r[0]: ActionRow(r[0], int(r[2]), int(r[1]), int(r[3]), int(r[4])) for r in acts}
    s.actions = [act_by.get(k, ActionRow(k, 0, 0, 0, 0)) for k in ACTIONS]

    days = config.officials.chart_days
    edges = [end - timedelta(days=days - i) for i in range(days + 1)]
    bucket = case(*[(_in(Tip.created_at, edges[i], edges[i + 1]), i) for i in range(days)], else_=-1)
    s.chart_days = [(e - timedelta(seconds=1)).astimezone(config.campaign.tz).date() for e in edges[1:]]
    s.chart = {c.key: [0] * days for c in config.categories}
    for b, category, n in session.execute(
        select(bucket, Tip.category, func.count())
        .where(Tip.created_at >= edges[0], before_end).group_by(bucket, Tip.category)
    ).all():
        if 0 <= int(b) < days and category in s.chart:
            s.chart[category][int(b)] = int(n)
    return s


def chart_png(config: Config, s: Summary) -> bytes:
    first, last = s.chart_days[0], s.chart_days[-1]
    title = f"TIPS BY CATEGORY {first:%m-%d} - {last:%m-%d}"
    return stacked_bars(title, [f"{d:%d}" for d in s.chart_days], [s.chart[c.key] for c in config.categories])


@dataclass(frozen=True, slots=True)
class Escalation:
    tip_id: int | None
    team: int | None
    kind: str  # ack | outcome | action
    at: datetime


def escalations(session: Session, start: datetime, end: datetime, limit: int = 200) -> list[Escalation]:
    """The escalations made in the period, for the escalations digest."""
    rows = session.execute(
        select(DueStep.tip_id, Tip.team_number, DueStep.deadline_kind, DueStep.done_at)
        .outerjoin(Tip, Tip.id == DueStep.tip_id)
        .where(DueStep.step == "escalate", DueStep.done_at.is_not(None), _in(DueStep.done_at, start, end))
        .order_by(DueStep.done_at, DueStep.id).limit(limit)
    ).all()
    return [Escalation(r[0], r[1], r[2], r[3]) for r in rows]
