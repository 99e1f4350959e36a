"""Routing precedence and fallbacks (pure)."""

from __future__ import annotations

from bot.deps import make_router
from bot.domain.routing import FALLBACK_RULE_ID, Router, Rule
from tests.conftest import make_config


def test_category_and_unit_beats_unit_beats_kind() -> None:
    router = Router(
        [
            Rule("kind", 6, unit_kind="department"),
            Rule("unit", 2, unit="land"),
            Rule("both", 3, category="absence", unit="land"),
            Rule("cat-kind", 4, category="absence", unit_kind="department"),
        ],
        fallback_team=8,
    )
    assert router.route("absence", "land", "department").team == 3
    assert router.route("absence", "housing", "department").team == 4
    assert router.route("extortion", "land", "department").team == 2
    assert router.route("extortion", "housing", "department").team == 6


def test_equal_specificity_goes_to_the_earlier_rule() -> None:
    router = Router([Rule("cat", 7, category="public-dining"), Rule("unit", 1, unit="dingchang")], fallback_team=8)
    assert router.route("public-dining", "dingchang", "township").rule_id == "cat"
    router = Router([Rule("unit", 1, unit="dingchang"), Rule("cat", 7, category="public-dining")], fallback_team=8)
    assert router.route("public-dining", "dingchang", "township").rule_id == "unit"


def test_no_match_goes_to_the_fallback_with_a_reason() -> None:
    router = Router([Rule("unit", 1, unit="dingchang")], fallback_team=8)
    decision = router.route("absence", "other", None)
    assert (decision.team, decision.rule_id) == (8, FALLBACK_RULE_ID)
    assert "fallback" in decision.reason


def test_decision_explains_the_rule() -> None:
    router = Router([Rule("r1", 5, category="absence", unit="nanli")], fallback_team=8)
    assert router.route("absence", "nanli", "township").reason == "rule r1: category=absence, unit=nanli"


def test_example_configuration_routes_as_documented() -> None:
    router = make_router(make_config())
    assert router.route("public-dining", "dingchang", "township").team == 7  # the dining team
    assert router.route("absence", "dingchang", "township").team == 1
    assert router.route("absence", "nanquan", "township").team == 5
    assert router.route("absence", "education", "department").team == 6
    assert router.route("project-delay", "education", "department").team == 8
    assert router.route("absence", "other", None).team == 8
