"""Penalty ladder, campaign periods and person identity keys."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.domain.ladder import (
    DEFAULT_LADDER,
    CampaignPeriod,
    Ladder,
    LadderRung,
    Penalty,
    RequiredAction,
    count_in_period,
    person_key,
)

SH = ZoneInfo("Asia/Shanghai")


def rung(min_count: int, *, refer: bool = False, person: tuple[str, ...] = ("self_criticism",),
         unit: tuple[str, ...] = ("rectification_report",)) -> LadderRung:
    return LadderRung(min_count, person, unit, True, refer, refer)


# --- default ladder -------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 2])
def test_default_first_and_second_breach(count: int) -> None:
    r = DEFAULT_LADDER.rung_for(count)
    assert r.min_count == 1
    assert r.person_actions == ("self_criticism",)
    assert r.unit_actions == ("rectification_report",)
    assert r.in_bulletin is True
    assert r.refer_to_discipline is False
    assert r.hold_leader_accountable is False


@pytest.mark.parametrize("count", [3, 7, 100])
def test_default_third_breach_and_later(count: int) -> None:
    r = DEFAULT_LADDER.rung_for(count)
    assert r.min_count == 3
    assert r.person_actions == ("self_criticism",)
    assert r.unit_actions == ("rectification_report",)
    assert r.in_bulletin is True
    assert r.refer_to_discipline is True
    assert r.hold_leader_accountable is True


@pytest.mark.parametrize(
    ("prior", "number", "referral"),
    [(0, 1, False), (1, 2, False), (2, 3, True), (6, 7, True)],
)
def test_default_penalty_for(prior: int, number: int, referral: bool) -> None:
    penalty = DEFAULT_LADDER.penalty_for(prior)
    assert penalty.breach_number == number
    assert penalty.actions == (
        RequiredAction("person", "self_criticism"),
        RequiredAction("unit", "rectification_report"),
    )
    assert penalty.person_actions == ("self_criticism",)
    assert penalty.unit_actions == ("rectification_report",)
    assert penalty.in_bulletin is True
    assert penalty.referral is referral
    assert penalty.refer_to_discipline is referral
    assert penalty.hold_leader_accountable is referral


def test_penalty_summary_keys() -> None:
    first = DEFAULT_LADDER.penalty_for(0).summary_keys()
    assert first == ("self_criticism", "rectification_report")
    assert DEFAULT_LADDER.penalty_for(2).summary_keys() == (
        "self_criticism",
        "rectification_report",
        "refer_to_discipline",
        "hold_leader_accountable",
    )


@pytest.mark.parametrize("bad", [-1, True, 1.0, "1"])
def test_penalty_for_rejects_bad_prior(bad: object) -> None:
    with pytest.raises(ValueError, match="prior breaches"):
        DEFAULT_LADDER.penalty_for(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -3, False, 2.5])
def test_rung_for_rejects_bad_count(bad: object) -> None:
    with pytest.raises(ValueError, match="breach count"):
        DEFAULT_LADDER.rung_for(bad)  # type: ignore[arg-type]


# --- custom ladders and validation ------------------------------------------------

def test_custom_ladder_picks_highest_rung_not_above_count() -> None:
    ladder = Ladder((rung(1), rung(3, refer=True), rung(5, person=("suspension",), refer=True)))
    assert [ladder.rung_for(n).min_count for n in range(1, 9)] == [1, 1, 3, 3, 5, 5, 5, 5]
    seventh = ladder.penalty_for(6)
    assert seventh.person_actions == ("suspension",)
    assert seventh.actions[0] == RequiredAction("person", "suspension")


def test_rung_with_no_unit_action() -> None:
    ladder = Ladder((rung(1, unit=()),))
    assert ladder.penalty_for(0).actions == (RequiredAction("person", "self_criticism"),)
    assert ladder.penalty_for(0).unit_actions == ()


@pytest.mark.parametrize(
    ("rungs", "message"),
    [
        ((), "at least one rung"),
        ((rung(2),), "first rung must start at 1"),
        ((rung(1), rung(3), rung(3)), "duplicate rung for min_count 3"),
        ((rung(1), rung(5), rung(3)), "sorted"),
    ],
)
def test_ladder_validation(rungs: tuple[LadderRung, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Ladder(rungs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, ("a",), ("b",), True, False, False), "min_count must be >= 1"),
        ((True, ("a",), ("b",), True, False, False), "min_count must be an int"),
        ((1, "self_criticism", ("b",), True, False, False), "person_actions must be a sequence"),
        ((1, ("a", ""), ("b",), True, False, False), "non-empty strings"),
        ((1, ("a",), ("b", "b"), True, False, False), "duplicate"),
        ((1, ("a",), ("b",), "yes", False, False), "in_bulletin must be a bool"),
        ((1, ("a",), ("b",), True, 1, False), "refer_to_discipline must be a bool"),
    ],
)
def test_rung_validation(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LadderRung(*args)  # type: ignore[arg-type]


def test_rung_accepts_lists_from_config_as_tuples() -> None:
    r = LadderRung(1, ["a"], ["b"], True, False, False)  # type: ignore[arg-type]
    assert r.person_actions == ("a",) and isinstance(r.person_actions, tuple)
    hash(r)  # frozen and hashable once normalised


def test_from_config_matches_default() -> None:
    rows = [
        {
            "min_count": 1,
            "person_actions": ["self_criticism"],
            "unit_actions": ["rectification_report"],
            "in_bulletin": True,
        },
        {
            "min_count": 3,
            "person_actions": ["self_criticism"],
            "unit_actions": ["rectification_report"],
            "in_bulletin": True,
            "refer_to_discipline": True,
            "hold_leader_accountable": True,
        },
    ]
    assert Ladder.from_config(rows) == DEFAULT_LADDER


def test_from_config_errors() -> None:
    with pytest.raises(ValueError, match="missing 'min_count'"):
        Ladder.from_config([{"person_actions": ["a"]}])
    with pytest.raises(ValueError, match="first rung"):
        Ladder.from_config([{"min_count": 2}])


def test_penalty_is_a_plain_value() -> None:
    p = Penalty(1, (RequiredAction("unit", "x"),), True, False, False)
    assert p.unit_actions == ("x",) and p.person_actions == ()
    assert p != DEFAULT_LADDER.penalty_for(0)
    assert Penalty(1, DEFAULT_LADDER.penalty_for(0).actions, True, False, False) == (
        DEFAULT_LADDER.penalty_for(0)
    )


# --- campaign periods -----------------------------------------------------------

def test_period_contains_is_inclusive() -> None:
    period = CampaignPeriod(date(2026, 11, 1), date(2026, 12, 31))
    assert not period.contains(date(2026, 10, 31))
    assert period.contains(date(2026, 11, 1))
    assert period.contains(date(2026, 12, 31))
    assert not period.contains(date(2027, 1, 1))


def test_open_ended_period() -> None:
    period = CampaignPeriod(date(2026, 11, 1))
    assert period.contains(date(2030, 1, 1))
    assert not period.contains(date(2026, 10, 31))


def test_single_day_period() -> None:
    period = CampaignPeriod(date(2026, 11, 1), date(2026, 11, 1))
    assert period.contains(date(2026, 11, 1))
    assert not period.contains(date(2026, 11, 2))


def test_period_validation() -> None:
    with pytest.raises(ValueError, match="before start"):
        CampaignPeriod(date(2026, 12, 1), date(2026, 11, 30))
    with pytest.raises(TypeError, match="not a datetime"):
        CampaignPeriod(datetime(2026, 11, 1, tzinfo=SH))
    with pytest.raises(TypeError, match="not a datetime"):
        CampaignPeriod(date(2026, 11, 1)).contains(datetime(2026, 11, 2, tzinfo=SH))


def test_count_in_period() -> None:
    period = CampaignPeriod(date(2026, 11, 1), date(2026, 11, 30))
    dates = [date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 15), date(2026, 11, 15),
             date(2026, 11, 30), date(2026, 12, 1)]
    assert count_in_period(dates, period) == 4
    assert count_in_period([], period) == 0
    assert count_in_period(iter(dates), CampaignPeriod(date(2026, 12, 1))) == 1


def test_count_feeds_penalty() -> None:
    period = CampaignPeriod(date(2026, 11, 1), date(2026, 11, 30))
    prior = count_in_period([date(2026, 10, 5), date(2026, 11, 3), date(2026, 11, 9)], period)
    # Only two in this period: the next breach is the 3rd -> referral.
    assert DEFAULT_LADDER.penalty_for(prior).referral is True
    earlier = count_in_period([date(2026, 10, 5), date(2026, 11, 3)], period)
    assert DEFAULT_LADDER.penalty_for(earlier).referral is False


# --- person keys ---------------------------------------------------------------

@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("张三", "tax"), ("  张三 ", "tax")),
        (("张三", "tax"), ("张　三", "tax")),  # full-width padding space
        (("张三", "tax"), ("张 三", "tax")),
        (("John Smith", "tax"), ("  JOHN   smith ", "tax")),
        (("John Smith", "tax"), ("Ｊｏｈｎ　Ｓｍｉｔｈ", "tax")),  # full-width letters
        (("Straße", "tax"), ("STRASSE", "tax")),  # casefold
        (("张三", "Tax Bureau"), ("张三", "tax  bureau")),
        (("李四", "tax"), ("李四\t", "tax")),
    ],
)
def test_person_key_equal(a: tuple[str, str], b: tuple[str, str]) -> None:
    assert person_key(*a) == person_key(*b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("张三", "tax"), ("张三", "police")),  # same name, other unit
        (("张三", "tax"), ("张山", "tax")),
        (("John Smith", "tax"), ("JohnSmith", "tax")),  # Latin words stay separate
        (("张 John", "tax"), ("张John", "tax")),
        (("a", "b c"), ("b c", "a")),
        (("买买提·艾力", "tax"), ("买买提艾力", "tax")),  # the name dot is kept
    ],
)
def test_person_key_different(a: tuple[str, str], b: tuple[str, str]) -> None:
    assert person_key(*a) != person_key(*b)


def test_person_key_shape() -> None:
    assert person_key(" 张　三 ", "Tax") == "tax\x1f张三"
    assert person_key("Mary  Ann", "u") == "u\x1fmary ann"


def test_person_key_separator_cannot_be_forged() -> None:
    # The separator is whitespace to str.split, so it can never survive in a part.
    assert person_key("b\x1fc", "a") == person_key("b c", "a")
    assert person_key("c", "a\x1fb") != person_key("b\x1fc", "a")


@pytest.mark.parametrize(("name", "unit"), [("", "tax"), ("  　 ", "tax"), ("张三", " ")])
def test_person_key_rejects_empty(name: str, unit: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        person_key(name, unit)
