"""Working-hours calendar: weekends, holidays, make-up days, DST, long spans."""

from __future__ import annotations

import random
import time as clock
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.domain.calendar import (
    MAX_SPAN_DAYS,
    AlwaysOpen,
    Calendar,
    WorkingCalendar,
    require_aware,
)

SH = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
H = timedelta(hours=1)
MON_FRI = frozenset(range(5))

# National Day 2026 as a Chinese-style schedule: Thu 1 Oct - Wed 7 Oct off,
# with make-up working days on Sun 20 Sep and Sat 10 Oct.
NATIONAL_DAY = frozenset(date(2026, 10, d) for d in range(1, 8))
MAKE_UP = frozenset({date(2026, 9, 20), date(2026, 10, 10)})


def office(tz: ZoneInfo = SH, holidays: frozenset[date] = frozenset(),
           workdays: frozenset[date] = frozenset()) -> WorkingCalendar:
    return WorkingCalendar(tz, MON_FRI, time(8, 30), time(17, 30), holidays, workdays)


def sh(
    y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0
) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=SH)


def be(
    y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0
) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=BERLIN)


CAL = office()
CN = office(holidays=NATIONAL_DAY, workdays=MAKE_UP)


def test_both_calendars_satisfy_protocol() -> None:
    assert isinstance(CAL, Calendar)
    assert isinstance(AlwaysOpen(SH), Calendar)


# --- add_working_time --------------------------------------------------------

@pytest.mark.parametrize(
    ("start", "duration", "expected"),
    [
        # Friday at closing time, 4 h deadline -> Monday 12:30.
        (sh(2026, 11, 27, 17, 30), 4 * H, sh(2026, 11, 30, 12, 30)),
        # Friday 16:00: 1.5 h on Friday, 2.5 h on Monday.
        (sh(2026, 11, 27, 16, 0), 4 * H, sh(2026, 11, 30, 11, 0)),
        # Saturday and Sunday do not count.
        (sh(2026, 11, 28, 10, 0), 4 * H, sh(2026, 11, 30, 12, 30)),
        (sh(2026, 11, 29, 23, 59), H, sh(2026, 11, 30, 9, 30)),
        # Before opening: counting starts at 08:30.
        (sh(2026, 11, 30, 7, 0), H, sh(2026, 11, 30, 9, 30)),
        # After closing: next morning.
        (sh(2026, 11, 30, 20, 0), H, sh(2026, 12, 1, 9, 30)),
        # Inside hours, same day.
        (sh(2026, 11, 30, 10, 15), 2 * H, sh(2026, 11, 30, 12, 15)),
        # Landing exactly on closing time stays there.
        (sh(2026, 11, 30, 8, 30), 9 * H, sh(2026, 11, 30, 17, 30)),
        # One second more spills to the next morning.
        (sh(2026, 11, 30, 8, 30), 9 * H + timedelta(seconds=1), sh(2026, 12, 1, 8, 30, 1)),
        # A whole working week.
        (sh(2026, 11, 30, 8, 30), 45 * H, sh(2026, 12, 4, 17, 30)),
        (sh(2026, 11, 30, 8, 30), 90 * H, sh(2026, 12, 11, 17, 30)),
        # Seconds and microseconds are kept.
        (sh(2026, 11, 30, 9, 0, 0, 250), timedelta(seconds=62), sh(2026, 11, 30, 9, 1, 2, 250)),
    ],
)
def test_add_working_time_shanghai(
    start: datetime, duration: timedelta, expected: datetime
) -> None:
    result = CAL.add_working_time(start, duration)
    assert result == expected
    assert result.utcoffset() == timedelta(hours=8)


def test_zero_duration_returns_start_unchanged() -> None:
    saturday = sh(2026, 11, 28, 10, 0)
    assert CAL.add_working_time(saturday, timedelta(0)) is saturday


@pytest.mark.parametrize(
    ("start", "duration", "expected"),
    [
        # Received on a holiday: counting starts on Thu 8 Oct.
        (sh(2026, 10, 1, 10, 0), 4 * H, sh(2026, 10, 8, 12, 30)),
        (sh(2026, 10, 4, 3, 0), H, sh(2026, 10, 8, 9, 30)),
        # Half an hour before the holiday, half an hour after it.
        (sh(2026, 9, 30, 17, 0), H, sh(2026, 10, 8, 9, 0)),
        # Friday 9 Oct evening -> the make-up Saturday counts.
        (sh(2026, 10, 9, 17, 0), H, sh(2026, 10, 10, 9, 0)),
        # Saturday 19 Sep -> make-up Sunday 20 Sep.
        (sh(2026, 9, 19, 10, 0), H, sh(2026, 9, 20, 9, 30)),
        # Make-up Sunday itself has office hours.
        (sh(2026, 9, 20, 16, 30), 2 * H, sh(2026, 9, 21, 9, 30)),
        # 3 working days from Wed 30 Sep 08:30: 30 Sep, 8 Oct, 9 Oct.
        (sh(2026, 9, 30, 8, 30), 27 * H, sh(2026, 10, 9, 17, 30)),
        # ...and the 4th is the make-up Saturday.
        (sh(2026, 9, 30, 8, 30), 28 * H, sh(2026, 10, 10, 9, 30)),
    ],
)
def test_add_working_time_holidays_and_make_up_days(
    start: datetime, duration: timedelta, expected: datetime
) -> None:
    assert CN.add_working_time(start, duration) == expected


def test_same_span_without_holiday_calendar_differs() -> None:
    # Guards the previous test: the holidays are what moves the result.
    assert CAL.add_working_time(sh(2026, 10, 1, 10, 0), 4 * H) == sh(2026, 10, 1, 14, 0)
    assert CAL.add_working_time(sh(2026, 10, 9, 17, 0), H) == sh(2026, 10, 12, 9, 0)


def test_result_is_in_the_input_timezone() -> None:
    # Friday 17:30 in Shanghai is 09:30 UTC.
    start = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    result = CAL.add_working_time(start, 4 * H)
    assert result.tzinfo is UTC
    assert result == datetime(2026, 11, 30, 4, 30, tzinfo=UTC)


def test_utc_start_on_a_different_local_date() -> None:
    # Sunday 23:00 UTC is Monday 07:00 in Shanghai: counting starts 08:30 Monday.
    start = datetime(2026, 11, 29, 23, 0, tzinfo=UTC)
    assert CAL.add_working_time(start, H) == sh(2026, 11, 30, 9, 30)


def test_many_days_is_exact_and_fast() -> None:
    start = sh(2026, 1, 5, 8, 30)  # Monday
    t0 = clock.perf_counter()
    result = CAL.add_working_time(start, 100 * 9 * H)  # 100 working days
    elapsed = clock.perf_counter() - t0
    assert result == sh(2026, 5, 22, 17, 30)
    assert CAL.working_time_between(start, result) == 900 * H
    assert elapsed < 0.5


def test_years_of_working_time_is_fast() -> None:
    start = sh(2026, 1, 5, 8, 30)
    t0 = clock.perf_counter()
    result = CAL.add_working_time(start, 1000 * 9 * H)  # ~3.8 years of weekdays
    assert clock.perf_counter() - t0 < 0.5
    assert result.weekday() < 5 and result.time() == time(17, 30)
    assert CAL.working_time_between(start, result) == 9000 * H


# --- working_time_between ---------------------------------------------------

@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (sh(2026, 11, 27, 17, 0), sh(2026, 11, 30, 9, 0), H),
        (sh(2026, 11, 28, 0, 0), sh(2026, 11, 29, 23, 59), timedelta(0)),
        (sh(2026, 11, 30, 10, 0), sh(2026, 11, 30, 10, 45), timedelta(minutes=45)),
        (sh(2026, 11, 30, 6, 0), sh(2026, 11, 30, 20, 0), 9 * H),
        (sh(2026, 11, 30, 0, 0), sh(2026, 12, 7, 0, 0), 45 * H),
        (sh(2026, 11, 30, 12, 0), sh(2026, 11, 30, 12, 0), timedelta(0)),
    ],
)
def test_working_time_between(a: datetime, b: datetime, expected: timedelta) -> None:
    assert CAL.working_time_between(a, b) == expected
    assert CAL.working_time_between(b, a) == -expected


def test_working_time_between_holidays() -> None:
    # 29 Sep to 11 Oct: 29, 30 Sep, 8, 9, 10 (make-up) Oct = 5 days.
    assert CN.working_time_between(sh(2026, 9, 29, 0, 0), sh(2026, 10, 11, 0, 0)) == 45 * H
    assert CAL.working_time_between(sh(2026, 9, 29, 0, 0), sh(2026, 10, 11, 0, 0)) == 81 * H


def test_working_time_between_mixed_timezones() -> None:
    a = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)  # 09:00 Shanghai
    b = sh(2026, 11, 30, 11, 0)
    assert CAL.working_time_between(a, b) == 2 * H


# --- is_working_time / next_working_moment -----------------------------------

def test_is_working_time_bounds() -> None:
    assert CAL.is_working_time(sh(2026, 11, 30, 8, 30))
    assert not CAL.is_working_time(sh(2026, 11, 30, 8, 29, 59))
    assert CAL.is_working_time(sh(2026, 11, 30, 17, 29, 59))
    assert not CAL.is_working_time(sh(2026, 11, 30, 17, 30))
    assert not CAL.is_working_time(sh(2026, 11, 28, 10, 0))
    assert not CN.is_working_time(sh(2026, 10, 5, 10, 0))
    assert CN.is_working_time(sh(2026, 10, 10, 10, 0))


def test_next_working_moment() -> None:
    inside = sh(2026, 11, 30, 10, 0)
    assert CAL.next_working_moment(inside) == inside
    assert CAL.next_working_moment(sh(2026, 11, 27, 17, 30)) == sh(2026, 11, 30, 8, 30)
    assert CN.next_working_moment(sh(2026, 10, 1, 9, 0)) == sh(2026, 10, 8, 8, 30)
    result = CAL.next_working_moment(datetime(2026, 11, 28, 0, 0, tzinfo=UTC))
    assert result == datetime(2026, 11, 30, 0, 30, tzinfo=UTC) and result.tzinfo is UTC


def test_is_working_day() -> None:
    assert CN.is_working_day(date(2026, 9, 20))  # make-up Sunday
    assert not CN.is_working_day(date(2026, 10, 2))  # holiday Friday
    assert not CN.is_working_day(date(2026, 10, 11))  # ordinary Sunday
    assert CN.is_working_day(date(2026, 10, 8))


# --- DST (Europe/Berlin) -----------------------------------------------------

def test_berlin_weekend_across_spring_forward() -> None:
    cal = office(BERLIN)
    result = cal.add_working_time(be(2026, 3, 27, 17, 0), H)  # Friday, CET
    assert result == be(2026, 3, 30, 9, 0)
    assert result.utcoffset() == 2 * H  # Monday is CEST
    assert cal.working_time_between(be(2026, 3, 27, 17, 0), be(2026, 3, 30, 9, 0)) == H


def test_berlin_window_across_autumn_back() -> None:
    cal = office(BERLIN)
    result = cal.add_working_time(be(2026, 10, 23, 17, 0), H)  # Friday, CEST
    assert result == be(2026, 10, 26, 9, 0)
    assert result.utcoffset() == H


def test_dst_day_window_is_real_elapsed_time() -> None:
    # Open 00:00-06:00 every day; on 29 Mar 2026 02:00 jumps to 03:00 (5 h
    # of real time), on 25 Oct 2026 03:00 falls back to 02:00 (7 h).
    night = WorkingCalendar(BERLIN, frozenset(range(7)), time(0, 0), time(6, 0), frozenset())
    spring = be(2026, 3, 29, 0, 0)
    assert night.working_time_between(spring, be(2026, 3, 30, 0, 0)) == 5 * H
    assert night.add_working_time(spring, 5 * H) == be(2026, 3, 29, 6, 0)
    assert night.add_working_time(spring, 6 * H) == be(2026, 3, 30, 1, 0)
    autumn = be(2026, 10, 25, 0, 0)
    assert night.working_time_between(autumn, be(2026, 10, 26, 0, 0)) == 7 * H
    assert night.add_working_time(autumn, 7 * H) == be(2026, 10, 25, 6, 0)
    assert night.add_working_time(autumn, 6 * H) == datetime(2026, 10, 25, 4, 0, tzinfo=UTC)
    # An ordinary day has 6 h.
    assert night.working_time_between(be(2026, 3, 28, 0, 0), be(2026, 3, 29, 0, 0)) == 6 * H


def test_always_open_counts_real_time_across_dst() -> None:
    open_ = AlwaysOpen(BERLIN)
    start = be(2026, 3, 28, 12, 0)  # Saturday CET
    result = open_.add_working_time(start, 24 * H)
    assert result == be(2026, 3, 29, 13, 0)  # wall clock moved 25 h
    assert result.utcoffset() == 2 * H
    assert open_.working_time_between(start, be(2026, 3, 29, 12, 0)) == 23 * H
    assert open_.working_time_between(be(2026, 3, 29, 12, 0), start) == -23 * H


def test_always_open_keeps_input_tz() -> None:
    start = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    result = AlwaysOpen(SH).add_working_time(start, 30 * H)
    assert result == datetime(2026, 11, 29, 16, 0, tzinfo=UTC)
    assert result.tzinfo is UTC


# --- validation ----------------------------------------------------------------

def test_naive_datetimes_rejected() -> None:
    naive = datetime(2026, 11, 30, 9, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        CAL.add_working_time(naive, H)
    with pytest.raises(ValueError, match="timezone-aware"):
        CAL.working_time_between(naive, sh(2026, 11, 30, 10, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        CAL.working_time_between(sh(2026, 11, 30, 10, 0), naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        AlwaysOpen(SH).add_working_time(naive, H)
    with pytest.raises(ValueError, match="timezone-aware"):
        CAL.is_working_time(naive)
    with pytest.raises(TypeError):
        require_aware(date(2026, 1, 1))  # type: ignore[arg-type]


def test_negative_and_huge_durations_rejected() -> None:
    start = sh(2026, 11, 30, 9, 0)
    with pytest.raises(ValueError, match="negative"):
        CAL.add_working_time(start, -H)
    with pytest.raises(ValueError, match="exceeds"):
        CAL.add_working_time(start, timedelta(days=MAX_SPAN_DAYS + 1))
    with pytest.raises(ValueError, match="exceeds"):
        AlwaysOpen(SH).add_working_time(start, timedelta(days=MAX_SPAN_DAYS + 1))
    with pytest.raises(ValueError, match="exceeds"):
        CAL.working_time_between(start, start + timedelta(days=MAX_SPAN_DAYS + 1))


def test_working_time_not_reachable_within_cap() -> None:
    # 1000 days of working time need ~11 years of 9-hour weekdays.
    with pytest.raises(ValueError, match="not reached"):
        CAL.add_working_time(sh(2026, 1, 5, 8, 30), timedelta(days=1000))


def test_calendar_whose_only_workday_is_past_gives_up() -> None:
    only = frozenset({date(2020, 1, 4)})
    cal = WorkingCalendar(SH, frozenset(), time(9), time(17), workdays=only)
    t0 = clock.perf_counter()
    with pytest.raises(ValueError):
        cal.add_working_time(sh(2026, 1, 1, 9, 0), H)
    with pytest.raises(ValueError):
        cal.next_working_moment(sh(2026, 1, 1, 9, 0))
    assert clock.perf_counter() - t0 < 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weekdays": frozenset({7})}, "0..6"),
        ({"weekdays": frozenset({-1, 2})}, "0..6"),
        ({"weekdays": frozenset()}, "no working days"),
        ({"start": time(17, 30), "end": time(8, 30)}, "before end"),
        ({"start": time(9), "end": time(9)}, "before end"),
        ({"start": time(9, tzinfo=UTC)}, "without tzinfo"),
        ({"holidays": frozenset({date(2026, 10, 10)}), "workdays": frozenset({date(2026, 10, 10)})},
         "both holiday and workday"),
    ],
)
def test_calendar_validation(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "tz": SH,
        "weekdays": MON_FRI,
        "start": time(8, 30),
        "end": time(17, 30),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        WorkingCalendar(**args)  # type: ignore[arg-type]


def test_calendar_rejects_non_tz() -> None:
    with pytest.raises(TypeError):
        WorkingCalendar("Asia/Shanghai", MON_FRI, time(8), time(17))  # type: ignore[arg-type]


# --- properties (seeded random sampling, deterministic) ----------------------

def _random_start(rng: random.Random, tz: ZoneInfo) -> datetime:
    base = datetime(2026, 1, 1, tzinfo=tz)
    return (base.astimezone(UTC) + timedelta(seconds=rng.randrange(366 * 86400))).astimezone(tz)


def _random_duration(rng: random.Random) -> timedelta:
    return timedelta(seconds=rng.choice([0, rng.randrange(3600), rng.randrange(40 * 3600)]))


@pytest.mark.parametrize("tz", [SH, BERLIN], ids=str)
def test_property_addition_composes(tz: ZoneInfo) -> None:
    rng = random.Random(20261126)
    cal = office(tz, holidays=NATIONAL_DAY, workdays=MAKE_UP)
    for _ in range(400):
        start, a, b = _random_start(rng, tz), _random_duration(rng), _random_duration(rng)
        assert cal.add_working_time(start, a + b) == cal.add_working_time(
            cal.add_working_time(start, a), b
        ), (start, a, b)


@pytest.mark.parametrize("tz", [SH, BERLIN], ids=str)
def test_property_between_inverts_add(tz: ZoneInfo) -> None:
    rng = random.Random(7)
    cal = office(tz, holidays=NATIONAL_DAY, workdays=MAKE_UP)
    for _ in range(400):
        start, d = _random_start(rng, tz), _random_duration(rng)
        end = cal.add_working_time(start, d)
        assert end >= start
        assert cal.working_time_between(start, end) == d, (start, d)


@pytest.mark.parametrize("tz", [SH, BERLIN], ids=str)
def test_property_add_of_between_never_overshoots(tz: ZoneInfo) -> None:
    rng = random.Random(99)
    cal = office(tz)
    for _ in range(400):
        a = _random_start(rng, tz)
        b = a + timedelta(seconds=rng.randrange(10 * 86400))
        worked = cal.working_time_between(a, b)
        assert worked >= timedelta(0)
        reached = cal.add_working_time(a, worked)
        assert reached <= b
        if worked > timedelta(0) and cal.is_working_time(b):
            assert reached == b
