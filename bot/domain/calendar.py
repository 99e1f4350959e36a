"""Working-hours calendars used to compute deadlines.

Deadlines for inspection teams run only during office hours: a tip that
arrives on Friday evening must not be overdue on Saturday. Working time is
real elapsed time (computed in UTC) inside local wall-clock windows, so a
DST change shortens or lengthens that day's window by the real hour it
gains or loses. Each window lies within one local day (``start < end``).

Results are returned in the time zone of the datetime passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Final, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

__all__ = [
    "MAX_SPAN_DAYS",
    "AlwaysOpen",
    "Calendar",
    "WorkingCalendar",
    "require_aware",
]

MAX_SPAN_DAYS: Final = 3660
"""Longest calendar span searched/summed (about ten years); beyond it is a bug."""

_ZERO: Final = timedelta(0)


def require_aware(value: datetime, name: str = "datetime") -> datetime:
    """Return ``value`` if timezone-aware; raise ValueError for naive ones.

    Naive datetimes silently mean "server local time", which is exactly the
    bug this code must not have.
    """
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return value


def _require_duration(duration: timedelta) -> None:
    if not isinstance(duration, timedelta):
        raise TypeError(f"duration must be a timedelta, got {type(duration).__name__}")
    if duration < _ZERO:
        raise ValueError(f"duration must not be negative, got {duration}")
    if duration > timedelta(days=MAX_SPAN_DAYS):
        raise ValueError(f"duration {duration} exceeds {MAX_SPAN_DAYS} days")


@runtime_checkable
class Calendar(Protocol):
    """What deadline code needs from a calendar."""

    def add_working_time(self, start: datetime, duration: timedelta) -> datetime:
        """Moment when ``duration`` of working time has elapsed after ``start``."""
        ...

    def working_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Working time from ``a`` to ``b`` (negative if ``b`` is before ``a``)."""
        ...


@dataclass(frozen=True)
class AlwaysOpen:
    """A 24/7 calendar: every second counts (for tests and urgent categories)."""

    tz: tzinfo = field(default=UTC)

    def add_working_time(self, start: datetime, duration: timedelta) -> datetime:
        """``start + duration`` in real elapsed time (not wall-clock across DST)."""
        require_aware(start, "start")
        _require_duration(duration)
        return (start.astimezone(UTC) + duration).astimezone(start.tzinfo)

    def working_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Real elapsed time from ``a`` to ``b``."""
        require_aware(a, "a")
        require_aware(b, "b")
        span = b.astimezone(UTC) - a.astimezone(UTC)
        if abs(span) > timedelta(days=MAX_SPAN_DAYS):
            raise ValueError(f"span {span} exceeds {MAX_SPAN_DAYS} days")
        return span


@dataclass(frozen=True)
class WorkingCalendar:
    """Office hours on given weekdays, minus holidays, plus make-up workdays.

    ``weekdays`` uses ``date.weekday()`` numbering (0 = Monday).
    ``workdays`` are make-up working days that fall on a weekend (common in
    China around public holidays); they use the same hours. A date may not
    be both a holiday and a make-up workday.
    """

    tz: ZoneInfo
    weekdays: frozenset[int]
    start: time
    end: time
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.tz, tzinfo):
            raise TypeError("tz must be a tzinfo (e.g. ZoneInfo('Asia/Shanghai'))")
        if not self.weekdays <= frozenset(range(7)):
            raise ValueError(f"weekdays must be within 0..6, got {sorted(self.weekdays)}")
        if not self.weekdays and not self.workdays:
            raise ValueError("calendar has no working days at all")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("start/end are local wall-clock times; give them without tzinfo")
        if not self.start < self.end:
            raise ValueError(f"start {self.start} must be before end {self.end}")
        clash = self.holidays & self.workdays
        if clash:
            raise ValueError(f"dates both holiday and workday: {sorted(clash)}")

    def is_working_day(self, day: date) -> bool:
        """True if ``day`` (a local date) has office hours."""
        if day in self.workdays:
            return True
        return day.weekday() in self.weekdays and day not in self.holidays

    def _window(self, day: date) -> tuple[datetime, datetime]:
        """Office hours of ``day`` as UTC instants (ZoneInfo resolves DST)."""
        opens = datetime.combine(day, self.start, tzinfo=self.tz).astimezone(UTC)
        closes = datetime.combine(day, self.end, tzinfo=self.tz).astimezone(UTC)
        return opens, closes

    def is_working_time(self, moment: datetime) -> bool:
        """True if ``moment`` is inside office hours (start inclusive, end exclusive)."""
        require_aware(moment, "moment")
        instant = moment.astimezone(UTC)
        day = moment.astimezone(self.tz).date()
        if not self.is_working_day(day):
            return False
        opens, closes = self._window(day)
        return opens <= instant < closes

    def next_working_moment(self, moment: datetime) -> datetime:
        """``moment`` itself if in office hours, else the next opening."""
        require_aware(moment, "moment")
        instant = moment.astimezone(UTC)
        day = moment.astimezone(self.tz).date()
        for _ in range(MAX_SPAN_DAYS + 1):
            if self.is_working_day(day):
                opens, closes = self._window(day)
                if instant < closes:
                    return max(instant, opens).astimezone(moment.tzinfo)
            day += timedelta(days=1)
        raise ValueError(f"no working time within {MAX_SPAN_DAYS} days of {moment.isoformat()}")

    def add_working_time(self, start: datetime, duration: timedelta) -> datetime:
        """Earliest moment at which ``duration`` of office time has passed since ``start``.

        Counting starts at the next working moment if ``start`` is outside
        office hours. A zero duration returns ``start`` unchanged. A result
        that lands exactly on closing time stays there (not next morning).
        Walks day by day, so long durations cost one step per calendar day.
        """
        require_aware(start, "start")
        _require_duration(duration)
        if duration == _ZERO:
            return start
        remaining = duration
        cursor = start.astimezone(UTC)
        day = start.astimezone(self.tz).date()
        for _ in range(MAX_SPAN_DAYS + 1):
            if self.is_working_day(day):
                opens, closes = self._window(day)
                begin = max(cursor, opens)
                if begin < closes:
                    available = closes - begin
                    if remaining <= available:
                        return (begin + remaining).astimezone(start.tzinfo)
                    remaining -= available
            day += timedelta(days=1)
        raise ValueError(f"{duration} of working time not reached within {MAX_SPAN_DAYS} days")

    def working_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Office time in ``[a, b)``; negative if ``b`` is before ``a``.

        Inverse of add_working_time: ``working_time_between(s,
        add_working_time(s, d)) == d``.
        """
        require_aware(a, "a")
        require_aware(b, "b")
        lo, hi = a.astimezone(UTC), b.astimezone(UTC)
        if hi < lo:
            return -self.working_time_between(b, a)
        if hi - lo > timedelta(days=MAX_SPAN_DAYS):
            raise ValueError(f"span {hi - lo} exceeds {MAX_SPAN_DAYS} days")
        total = _ZERO
        day = lo.astimezone(self.tz).date()
        last = hi.astimezone(self.tz).date()
        while day <= last:
            if self.is_working_day(day):
                opens, closes = self._window(day)
                overlap = min(hi, closes) - max(lo, opens)
                if overlap > _ZERO:
                    total += overlap
            day += timedelta(days=1)
        return total
