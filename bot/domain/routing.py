"""Routing rules: which inspection team a tip goes to. Plain Python, no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

FALLBACK_RULE_ID = "fallback"


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    team: int
    category: str | None = None
    unit: str | None = None
    unit_kind: str | None = None

    @property
    def specificity(self) -> int:
        # category + unit (4) > category + unit_kind (3) > category = unit (2) > unit_kind (1)
        place = 2 if self.unit is not None else (1 if self.unit_kind is not None else 0)
        return place + (2 if self.category is not None else 0)

    def matches(self, category: str, unit: str, unit_kind: str | None) -> bool:
        if self.category is not None and self.category != category:
            return False
        if self.unit is not None and self.unit != unit:
            return False
        if self.unit_kind is not None and self.unit_kind != unit_kind:
            return False
        return True


@dataclass(frozen=True, slots=True)
class Decision:
    team: int
    rule_id: str
    reason: str  # a short, staff-readable account of why; stored with the tip


class Router:
    """Most specific matching rule wins; equal specificity goes to the earlier rule."""

    def __init__(self, rules: Iterable[Rule], fallback_team: int) -> None:
        indexed = list(enumerate(rules))
        # Sort once: highest specificity first, then file order.
        self._rules = [r for _, r in sorted(indexed, key=lambda p: (-p[1].specificity, p[0]))]
        self._fallback = fallback_team

    def route(self, category: str, unit: str, unit_kind: str | None) -> Decision:
        for rule in self._rules:
            if rule.matches(category, unit, unit_kind):
                return Decision(rule.team, rule.id, _describe(rule))
        return Decision(self._fallback, FALLBACK_RULE_ID, "no rule matched: fallback team")


def _describe(rule: Rule) -> str:
    parts = [
        f"{name}={value}"
        for name, value in (("category", rule.category), ("unit", rule.unit), ("unit_kind", rule.unit_kind))
        if value is not None
    ]
    return f"rule {rule.id}: " + ", ".join(parts)
