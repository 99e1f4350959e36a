"""The daily summary (每日汇总): figures by SQL aggregates, text per language, a PNG chart.

A summary for period D (an ISO date) covers the 24 hours before D at `scheduler.summary_at`
local time ("today"), and the campaign up to that moment ("so far"). Nothing is loaded
case by case: every figure is a COUNT/SUM grouped in the database.

`compute` reads running counters kept by triggers (storage/rollup.py) and corrects them
with the rows that happened at or after the period's end, so its cost is one day's rows
(plus the open cases for "overdue without outcome"), whatever the length of the campaign:
a fixed number of statements, each an index range. `compute_direct` is the same figures
as plain aggregates over the whole history: the reference the tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from collections import defaultdict
from datetime import UTC

from sqlalchemy import ColumnElement, and_, case, exists, func, literal, or_, select, text, union_all
from sqlalchemy.orm import Session

from bot.chart import stacked_bars
from bot.config import Config
from storage import rollup
from storage.db import is_postgres
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


def _flag(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return case((condition, 1), else_=0)


def _plain(column: ColumnElement[datetime]) -> ColumnElement[datetime]:
    """The column as an expression, which no index serves: keeps a planner (SQLite's,
    without range statistics) on the index of the range that is narrow."""
    return func.coalesce(column, column)


NEVER = datetime(9999, 12, 31, tzinfo=UTC)


def _since(column: ColumnElement[datetime], moment: datetime) -> ColumnElement[bool]:
    """column >= moment, written as a closed range: SQLite's planner (no range statistics)
    takes an open range for a quarter of the table and would rather scan it."""
    return and_(column >= moment, column < NEVER)


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def compute(session: Session, config: Config, period: str) -> Summary:
    """The summary from the running counters: at most 8 statements, each reading only the
    rows at or after the period's start (or the open cases), never the whole history."""
    start, end = period_window(config, period)
    s = Summary(period=period, start=start, end=end)
    if is_postgres(session):
        # Each statement below reads a day's rows through an index, but the estimate of the
        # per-case outcome probe passes jit_above_cost at a province's scale: compiling
        # (~25 ms at 1M tips) would cost more than the query. This transaction only.
        session.execute(text("SET LOCAL jit = off"))
    c = rollup.totals(session)

    # One pass over the tips near the period: created since its start, or a deadline still
    # ahead at its end, or acknowledged after it. Three disjoint index ranges in UNION ALL
    # (an OR of them lets SQLite's planner walk a whole index instead).
    cols = (Tip.category, Tip.unit_key, Tip.team_number, Tip.created_at, Tip.ack_due_at, Tip.acknowledged_at)
    near = union_all(
        select(*cols).where(_since(Tip.created_at, start)),
        select(*cols).where(_plain(Tip.created_at) < start, _since(Tip.ack_due_at, end)),
        select(*cols).where(_plain(Tip.created_at) < start, _plain(Tip.ack_due_at) < end,
                            _since(Tip.acknowledged_at, end)),
    ).subquery()
    t = near.c
    after = t.created_at >= end
    acked = t.acknowledged_at.is_not(None)
    on_time = and_(acked, t.acknowledged_at <= t.ack_due_at)
    flags = (
        _flag(after),
        _flag(_in(t.created_at, start, end)),
        _flag(and_(t.created_at < end, t.ack_due_at >= end,
                   t.acknowledged_at.is_(None) | (t.acknowledged_at >= end))),  # not yet due at the end
        _flag(and_(on_time, after | (t.acknowledged_at >= end))),  # on time, but not by the end
        _flag(and_(t.acknowledged_at.is_(None), after | (t.ack_due_at >= end))),  # unacked, not overdue
        _flag(and_(t.acknowledged_at >= end, t.ack_due_at < end, t.created_at < end)),  # acked late, after
    )
    cat_after: dict[str, int] = defaultdict(int)
    cat_today: dict[str, int] = defaultdict(int)
    unit_after: dict[str, int] = defaultdict(int)
    unit_today: dict[str, int] = defaultdict(int)
    team_after: dict[int, int] = defaultdict(int)
    team_today: dict[int, int] = defaultdict(int)
    team_not_due: dict[int, int] = defaultdict(int)
    team_on_time_later: dict[int, int] = defaultdict(int)
    unacked_not_overdue = acked_late_after = 0
    # Each flag summed per (category, unit, team): every figure is a sum of them, so
    # grouping by the flags as well (up to 64 groups per key) only made the sort longer.
    for category, unit, team, n_after, n_today, n_not_due, n_on_time_later, n_unacked, n_late in session.execute(
        select(t.category, t.unit_key, t.team_number, *(func.sum(f) for f in flags))
        .group_by(t.category, t.unit_key, t.team_number)
    ):
        team = int(team)
        n_after, n_today = int(n_after), int(n_today)
        cat_after[category] += n_after
        unit_after[unit] += n_after
        team_after[team] += n_after
        cat_today[category] += n_today
        unit_today[unit] += n_today
        team_today[team] += n_today
        team_not_due[team] += int(n_not_due)
        team_on_time_later[team] += int(n_on_time_later)
        unacked_not_overdue += int(n_unacked)
        acked_late_after += int(n_late)

    def counts(metric: str, later: dict[str, int], today: dict[str, int]) -> dict[str, Count]:
        return {k: Count(k, today.get(k, 0), n - later.get(k, 0)) for k, n in c[metric].items()}

    cats = counts("tips.cat", cat_after, cat_today)
    s.categories = [cats.get(cat.key, Count(cat.key, 0, 0)) for cat in config.categories]
    s.today, s.total = sum(x.today for x in s.categories), sum(x.total for x in s.categories)
    units = {k: x for k, x in counts("tips.unit", unit_after, unit_today).items() if x.total > 0}
    order = [u.key for u in config.units] + sorted(k for k in units if config.unit(str(k)) is None)
    s.units = [units[k] for k in order if k in units]

    on_time_now = c["tips.on_time"]
    teams = {}
    for key, n in c["tips.team"].items():
        t = int(key)
        total = n - team_after.get(t, 0)
        teams[t] = TeamRow(t, team_today.get(t, 0), total, total - team_not_due.get(t, 0),
                           on_time_now.get(key, 0) - team_on_time_later.get(t, 0))
    s.teams = [teams.get(t.number, TeamRow(t.number, 0, 0, 0, 0)) for t in config.teams]
    s.ack_due = sum(t.ack_due for t in s.teams)
    s.ack_on_time = sum(t.ack_on_time for t in s.teams)
    s.overdue_ack = c["tips.unacked"].get("", 0) - unacked_not_overdue + acked_late_after

    # Overdue without an outcome: the cases open at the end (an index range on closed_at),
    # each probed for an outcome through outcomes' unique tip_id index. Not NOT IN (past a
    # few hundred thousand outcomes it stops being hashed and rescans per tip), and not a
    # NOT EXISTS either: PostgreSQL turns that into a hash anti-join that reads every
    # outcome; a correlated count stays a per-row probe of the (few) open cases.
    has_outcome = (select(func.count()).where(Outcome.tip_id == Tip.id, Outcome.recorded_at < end)
                   .correlate(Tip).scalar_subquery())
    overdue = (Tip.outcome_due_at.is_not(None), Tip.outcome_due_at < end, _plain(Tip.created_at) < end,
               has_outcome == 0)
    open_at_end = union_all(select(Tip.id).where(Tip.closed_at.is_(None), *overdue),
                            select(Tip.id).where(_since(Tip.closed_at, end), *overdue)).subquery()
    s.overdue_outcome = int(session.scalar(select(func.count()).select_from(open_at_end)) or 0)

    def since_start(metric: str, key: ColumnElement, moment: ColumnElement, *where: ColumnElement[bool]
                    ) -> dict[str, Count]:  # type: ignore[type-arg]
        rows = session.execute(
            select(key, func.sum(_flag(moment >= end)), func.sum(_flag(moment < end)))
            .where(_since(moment, start), *where).group_by(key)).all()
        later = {k: int(a) for k, a, _ in rows}
        today = {k: int(b) for k, _, b in rows}
        return counts(metric, later, today)

    esc = since_start("esc", DueStep.deadline_kind, DueStep.done_at, DueStep.step == "escalate")
    s.escalated = [esc.get(k, Count(k, 0, 0)) for k in ("ack", "outcome", "action")]
    out = since_start("out", Outcome.outcome, Outcome.recorded_at)
    s.outcomes = [out.get(k, Count(k, 0, 0)) for k in OUTCOMES]

    # Required actions: total and today as above; outstanding = not received by the end;
    # overdue = outstanding with a deadline before the end.
    ra = RequiredAction
    r_after, r_open = ra.created_at >= end, ra.received_at.is_(None)
    r_late = and_(ra.received_at >= end, ra.created_at < end)
    r_outstanding = and_(ra.created_at < end, r_open | (ra.received_at >= end))
    aflags = (
        _flag(r_after), _flag(_in(ra.created_at, start, end)),
        _flag(and_(r_open, r_after)), _flag(r_late),
        _flag(and_(r_open, ra.due_at.is_(None), r_after)), _flag(and_(r_late, ra.due_at.is_(None))),
        _flag(and_(r_outstanding, ra.due_at >= end)),
    )
    labels = [f"f{i}" for i in range(len(aflags))]
    # Disjoint index ranges, as for the tips, each flag summed per kind (the figures are
    # sums of them). The actions still open with a deadline ahead (older than the period,
    # so a lasting number: a week of them, 39k at a province's scale) set only the last
    # flag: counted in their own range, not flagged row by row. Flagging and grouping them
    # per row was 0.25 s of SQLite's 0.3 s for this statement.
    anear = union_all(
        select(ra.kind, *(f.label(k) for f, k in zip(aflags, labels))).where(_since(ra.created_at, start)),
        select(ra.kind, *(f.label(k) for f, k in zip(aflags, labels)))
        .where(_plain(ra.created_at) < start, _since(ra.received_at, end)),
        select(ra.kind, *(literal(0).label(k) for k in labels[:-1]), func.count().label(labels[-1]))
        .where(_plain(ra.created_at) < start, ra.received_at.is_(None), _since(ra.due_at, end)).group_by(ra.kind),
    ).subquery()
    per: dict[str, list[int]] = defaultdict(lambda: [0] * 7)
    for kind, *sums in session.execute(
        select(anear.c.kind, *(func.sum(anear.c[k]) for k in labels)).group_by(anear.c.kind)
    ):
        per[kind] = [int(x or 0) for x in sums]
    act_by = {}
    for kind, n in c["act"].items():
        p = per[kind]
        outstanding = c["act.open"].get(kind, 0) - p[2] + p[3]
        no_deadline = c["act.open_nodue"].get(kind, 0) - p[4] + p[5]
        act_by[kind] = ActionRow(kind, p[1], n - p[0], outstanding, outstanding - no_deadline - p[6])
    s.actions = [act_by.get(k, ActionRow(k, 0, 0, 0, 0)) for k in ACTIONS]

    # The chart: hourly counters per category, plus the parts of an hour at each edge when
    # the edges are not on the hour (summary_at and the time zone's offset permitting).
    days = config.officials.chart_days
    edges = [end - timedelta(days=days - i) for i in range(days + 1)]
    s.chart_days = [(e - timedelta(seconds=1)).astimezone(config.campaign.tz).date() for e in edges[1:]]
    s.chart = {cat.key: [0] * days for cat in config.categories}
    floors = [_hour(e) for e in edges]
    hours = rollup.buckets(session, "tips.cat_hour", f"{floors[0]:{rollup.HOUR_FORMAT}}",
                           f"{floors[-1]:{rollup.HOUR_FORMAT}}")
    window = 0
    for (category, bucket), n in sorted(hours.items(), key=lambda kv: kv[0][1]):
        while window + 1 <= days and bucket >= f"{floors[window + 1]:{rollup.HOUR_FORMAT}}":
            window += 1
        if category in s.chart and window < days:
            s.chart[category][window] += n
    partial = [i for i in range(days + 1) if edges[i] != floors[i]]
    if partial:  # tips in [floor(edge), edge) belong to the window before the edge
        label = case(*[(_in(Tip.created_at, floors[i], edges[i]), i) for i in partial], else_=-1)
        for i, category, n in session.execute(
            select(label, Tip.category, func.count())
            .where(or_(*[_in(Tip.created_at, floors[i], edges[i]) for i in partial]))
            .group_by(label, Tip.category)
        ):
            i = int(i)
            if category not in s.chart or i < 0:
                continue
            if i < days:
                s.chart[category][i] -= int(n)
            if i > 0:
                s.chart[category][i - 1] += int(n)
    return s


def compute_direct(session: Session, config: Config, period: str) -> Summary:
    """The same figures as aggregates over the whole history (the reference for tests)."""
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
    no_outcome = ~exists().where(Outcome.tip_id == Tip.id, Outcome.recorded_at < end)
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
