"""Bulletin numbering, case selection and scheduled-run period keys."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.domain.bulletins import (
    BulletinCase,
    bulletin_period_key,
    next_bulletin_number,
    select_cases,
    summary_period_key,
)

SH = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
SEC = timedelta(seconds=1)


def utc(
    y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0
) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


def sh(
    y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0
) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=SH)


# --- numbering ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("issued", "expected"),
    [([], 1), ([1], 2), ([1, 2, 3], 4), ([3, 1, 2], 4), (range(1, 101), 101)],
)
def test_next_bulletin_number(issued: list[int], expected: int) -> None:
    assert next_bulletin_number(issued) == expected


def test_next_bulletin_number_accepts_a_generator() -> None:
    assert next_bulletin_number(n for n in (2, 1)) == 3


@pytest.mark.parametrize(
    ("issued", "message"),
    [
        ([1, 3], "gap: missing 2$"),
        ([2, 3], "gap: missing 1$"),
        ([1, 2, 5, 7], "gap: missing 3, 4, 6$"),
        ([30], r"missing 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 \.\.\.$"),
        ([1, 2, 2], r"issued twice: \[2\]"),
        ([0, 1], ">= 1"),
        ([-1], ">= 1"),
        ([True], "ints"),
        ([1.0], "ints"),
    ],
)
def test_next_bulletin_number_rejects(issued: list[object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        next_bulletin_number(issued)  # type: ignore[arg-type]


# --- selection ------------------------------------------------------------------

def case(case_id: int, verified_at: datetime) -> BulletinCase:
    return BulletinCase(case_id, "tax", "张三", "clerk", "attitude", ("self_criticism",), verified_at)


def test_select_cases_filters_and_orders() -> None:
    end = sh(2026, 11, 26, 9, 0)
    candidates = [
        case(5, sh(2026, 11, 20, 10, 0)),
        case(2, sh(2026, 11, 20, 10, 0)),  # same time as 5: lower id first
        case(9, sh(2026, 11, 18, 8, 0)),
        case(3, sh(2026, 11, 19, 8, 0)),  # already published
        case(7, sh(2026, 11, 26, 9, 0)),  # exactly at period end: included
        case(8, sh(2026, 11, 26, 9, 0, 1)),  # one second late: next bulletin
    ]
    result = select_cases(candidates, {3, 42}, end)
    assert [c.case_id for c in result] == [9, 2, 5, 7]


def test_select_cases_compares_instants_across_timezones() -> None:
    end = utc(2026, 11, 26, 1, 0)  # 09:00 Shanghai
    early = case(1, sh(2026, 11, 26, 8, 59, 59))
    late = case(2, sh(2026, 11, 26, 9, 0, 1))
    utc_case = case(3, utc(2026, 11, 25, 23, 0))  # 07:00 Shanghai
    assert [c.case_id for c in select_cases([late, early, utc_case], set(), end)] == [3, 1]


def test_select_cases_empty_and_all_published() -> None:
    end = sh(2026, 11, 26, 9, 0)
    assert select_cases([], set(), end) == []
    assert select_cases([case(1, sh(2026, 11, 1, 9, 0))], {1}, end) == []


def test_select_cases_rejects_duplicate_ids() -> None:
    with pytest.raises(ValueError, match="case 4 given twice"):
        select_cases([case(4, sh(2026, 11, 1, 9, 0)), case(4, sh(2026, 11, 2, 9, 0))], set(),
                     sh(2026, 11, 26, 9, 0))


def test_select_cases_rejects_naive_period_end() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        select_cases([], set(), datetime(2026, 11, 26, 9, 0))


def test_bulletin_case_validation() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        case(1, datetime(2026, 11, 26, 9, 0))
    keys: Any = ["a", "b"]  # config/DB code may hand over a list
    c = BulletinCase(1, "tax", "张三", "clerk", "attitude", keys, sh(2026, 11, 1))
    assert c.penalty_summary_keys == ("a", "b")


# --- bulletin period keys --------------------------------------------------------

EPOCH = date(2026, 11, 5)  # weekly on Thursdays at 09:00 Shanghai (= 01:00 UTC)
NINE = time(9, 0)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2026, 11, 4, 12, 0), None),  # before the epoch date
        (utc(2026, 11, 5, 0, 59, 59), None),  # epoch day, one second before the first run
        (utc(2026, 11, 5, 1, 0), "2026-11-05"),  # the first run
        (utc(2026, 11, 12, 0, 59, 59), "2026-11-05"),
        (utc(2026, 11, 26, 0, 59, 59), "2026-11-19"),  # one second before the run
        (utc(2026, 11, 26, 1, 0, 0), "2026-11-26"),  # exactly at the run
        (utc(2026, 11, 26, 1, 0, 1), "2026-11-26"),  # one second after
        (utc(2026, 11, 30, 12, 0), "2026-11-26"),
        (utc(2026, 12, 3, 0, 59, 59), "2026-11-26"),
    ],
)
def test_weekly_bulletin_period_key(now: datetime, expected: str | None) -> None:
    assert bulletin_period_key(now, SH, 7, NINE, EPOCH) == expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # Runs at 00:30 Shanghai = 16:30 UTC the day before.
        (utc(2026, 11, 25, 16, 29, 59), "2026-11-19"),
        (utc(2026, 11, 25, 16, 30, 0), "2026-11-26"),  # UTC date is still the 25th
        (utc(2026, 11, 25, 16, 30, 1), "2026-11-26"),
    ],
)
def test_bulletin_run_just_after_local_midnight(now: datetime, expected: str) -> None:
    assert bulletin_period_key(now, SH, 7, time(0, 30), EPOCH) == expected


def test_bulletin_period_key_every_three_days() -> None:
    # Runs on 5, 8, 11, 14 Nov at 09:00 Shanghai.
    assert bulletin_period_key(sh(2026, 11, 10, 23, 0), SH, 3, NINE, EPOCH) == "2026-11-08"
    assert bulletin_period_key(sh(2026, 11, 11, 8, 59, 59), SH, 3, NINE, EPOCH) == "2026-11-08"
    assert bulletin_period_key(sh(2026, 11, 11, 9, 0), SH, 3, NINE, EPOCH) == "2026-11-11"


def test_bulletin_period_key_daily() -> None:
    assert bulletin_period_key(sh(2026, 11, 26, 8, 0), SH, 1, NINE, EPOCH) == "2026-11-25"
    assert bulletin_period_key(sh(2026, 11, 26, 9, 0), SH, 1, NINE, EPOCH) == "2026-11-26"


def test_bulletin_period_key_across_dst_change() -> None:
    # Berlin, weekly Saturdays 09:00 from 21 Mar 2026; DST begins 29 Mar.
    epoch = date(2026, 3, 21)
    before = datetime(2026, 3, 28, 7, 59, 59, tzinfo=UTC)  # 08:59:59 CET
    at = datetime(2026, 3, 28, 8, 0, tzinfo=UTC)  # 09:00 CET
    assert bulletin_period_key(before, BERLIN, 7, NINE, epoch) == "2026-03-21"
    assert bulletin_period_key(at, BERLIN, 7, NINE, epoch) == "2026-03-28"
    # On 4 Apr 09:00 is CEST = 07:00 UTC.
    assert bulletin_period_key(utc(2026, 4, 4, 6, 59, 59), BERLIN, 7, NINE, epoch) == "2026-03-28"
    assert bulletin_period_key(utc(2026, 4, 4, 7, 0), BERLIN, 7, NINE, epoch) == "2026-04-04"


@pytest.mark.parametrize("every", [0, -7, True])
def test_bulletin_period_key_rejects_bad_interval(every: int) -> None:
    with pytest.raises(ValueError, match="every_days"):
        bulletin_period_key(utc(2026, 11, 26, 1, 0), SH, every, NINE, EPOCH)


def test_period_keys_reject_naive_now_and_aware_at() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        bulletin_period_key(datetime(2026, 11, 26, 9, 0), SH, 7, NINE, EPOCH)
    with pytest.raises(ValueError, match="timezone-aware"):
        summary_period_key(datetime(2026, 11, 26, 9, 0), SH, NINE)
    with pytest.raises(ValueError, match="without tzinfo"):
        summary_period_key(utc(2026, 11, 26, 9, 0), SH, time(9, tzinfo=UTC))


# --- daily summary period keys -----------------------------------------------------

@pytest.mark.parametrize(
    ("now", "at", "expected"),
    [
        # 18:00 Shanghai = 10:00 UTC.
        (utc(2026, 11, 26, 9, 59, 59), time(18, 0), "2026-11-25"),
        (utc(2026, 11, 26, 10, 0, 0), time(18, 0), "2026-11-26"),
        (utc(2026, 11, 26, 10, 0, 1), time(18, 0), "2026-11-26"),
        # 00:30 Shanghai = 16:30 UTC on the previous UTC date.
        (utc(2026, 11, 25, 16, 29, 59), time(0, 30), "2026-11-25"),
        (utc(2026, 11, 25, 16, 30, 0), time(0, 30), "2026-11-26"),
        # 23:30 Shanghai; just after local midnight the latest run is still yesterday's.
        (utc(2026, 11, 26, 15, 29, 59), time(23, 30), "2026-11-25"),
        (utc(2026, 11, 26, 15, 30, 0), time(23, 30), "2026-11-26"),
        (utc(2026, 11, 26, 16, 10, 0), time(23, 30), "2026-11-26"),
    ],
)
def test_summary_period_key(now: datetime, at: time, expected: str) -> None:
    assert summary_period_key(now, SH, at) == expected


def test_summary_period_key_same_instant_any_input_zone() -> None:
    instant = utc(2026, 11, 26, 10, 0)
    assert summary_period_key(instant, SH, time(18)) == summary_period_key(
        instant.astimezone(BERLIN), SH, time(18)
    ) == "2026-11-26"
