"""The penalty ladder: what a verified breach costs, by how many came before.

Penalties escalate per person within a campaign period: the 1st and 2nd
verified breach mean a written self-criticism (书面检查) for the person and
a rectification report (整改报告) from the unit; from the 3rd on the case
is also referred to the county discipline commission (县纪委) and the
unit's leader is held accountable (问责). Every verified breach is named in
the bulletin. Rungs come from config as plain data.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final, Literal

__all__ = [
    "DEFAULT_LADDER",
    "CampaignPeriod",
    "Ladder",
    "LadderRung",
    "Penalty",
    "RequiredAction",
    "count_in_period",
    "person_key",
]

ActionTarget = Literal["person", "unit"]


def _require_keys(value: object, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a sequence of action keys, got {value!r}")
    keys = tuple(value)
    for key in keys:
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"{name} must hold non-empty strings, got {key!r}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"{name} has duplicate keys: {keys}")
    return keys


@dataclass(frozen=True)
class LadderRung:
    """Penalties applying from the ``min_count``-th verified breach on."""

    min_count: int
    person_actions: tuple[str, ...]
    unit_actions: tuple[str, ...]
    in_bulletin: bool
    refer_to_discipline: bool
    hold_leader_accountable: bool

    def __post_init__(self) -> None:
        if isinstance(self.min_count, bool) or not isinstance(self.min_count, int):
            raise ValueError(f"min_count must be an int, got {self.min_count!r}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {self.min_count}")
        object.__setattr__(
            self, "person_actions", _require_keys(self.person_actions, "person_actions")
        )
        object.__setattr__(self, "unit_actions", _require_keys(self.unit_actions, "unit_actions"))
        for name in ("in_bulletin", "refer_to_discipline", "hold_leader_accountable"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class RequiredAction:
    """One action the penalty requires, from the person or from the unit."""

    target: ActionTarget
    key: str


@dataclass(frozen=True)
class Penalty:
    """What the ``breach_number``-th verified breach of a person requires."""

    breach_number: int
    actions: tuple[RequiredAction, ...]
    in_bulletin: bool
    refer_to_discipline: bool
    hold_leader_accountable: bool

    @property
    def person_actions(self) -> tuple[str, ...]:
        """Keys of the actions required from the person."""
        return tuple(a.key for a in self.actions if a.target == "person")

    @property
    def unit_actions(self) -> tuple[str, ...]:
        """Keys of the actions required from the unit."""
        return tuple(a.key for a in self.actions if a.target == "unit")

    @property
    def referral(self) -> bool:
        """True if the case goes to the discipline commission."""
        return self.refer_to_discipline

    def summary_keys(self) -> tuple[str, ...]:
        """Template keys summarising the penalty (for cards and bulletins)."""
        keys = [a.key for a in self.actions]
        if self.refer_to_discipline:
            keys.append("refer_to_discipline")
        if self.hold_leader_accountable:
            keys.append("hold_leader_accountable")
        return tuple(keys)


@dataclass(frozen=True)
class Ladder:
    """Rungs sorted by ``min_count``, the first at 1, with no duplicates."""

    rungs: tuple[LadderRung, ...]

    def __post_init__(self) -> None:
        rungs = tuple(self.rungs)
        if not rungs:
            raise ValueError("a ladder needs at least one rung")
        if rungs[0].min_count != 1:
            raise ValueError(f"the first rung must start at 1, got {rungs[0].min_count}")
        for lower, upper in zip(rungs, rungs[1:]):
            if upper.min_count == lower.min_count:
                raise ValueError(f"duplicate rung for min_count {upper.min_count}")
            if upper.min_count < lower.min_count:
                raise ValueError(
                    f"rungs must be sorted by min_count: {upper.min_count} after {lower.min_count}"
                )
        object.__setattr__(self, "rungs", rungs)

    @classmethod
    def from_config(cls, rows: Iterable[Mapping[str, Any]]) -> Ladder:
        """Build from config rows whose keys are LadderRung's field names."""
        rungs = []
        for row in rows:
            try:
                rungs.append(
                    LadderRung(
                        min_count=row["min_count"],
                        person_actions=tuple(row.get("person_actions", ())),
                        unit_actions=tuple(row.get("unit_actions", ())),
                        in_bulletin=row.get("in_bulletin", True),
                        refer_to_discipline=row.get("refer_to_discipline", False),
                        hold_leader_accountable=row.get("hold_leader_accountable", False),
                    )
                )
            except KeyError as exc:
                raise ValueError(f"ladder rung is missing {exc.args[0]!r}: {dict(row)!r}") from exc
        return cls(tuple(rungs))

    def rung_for(self, count: int) -> LadderRung:
        """The rung for a person's ``count``-th verified breach (count >= 1)."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"breach count must be an int >= 1, got {count!r}")
        chosen = self.rungs[0]
        for rung in self.rungs:
            if rung.min_count > count:
                break
            chosen = rung
        return chosen

    def penalty_for(self, prior_verified_breaches: int) -> Penalty:
        """Penalty for a new breach, given how many were verified before it."""
        if (
            isinstance(prior_verified_breaches, bool)
            or not isinstance(prior_verified_breaches, int)
            or prior_verified_breaches < 0
        ):
            raise ValueError(f"prior breaches must be an int >= 0, got {prior_verified_breaches!r}")
        number = prior_verified_breaches + 1
        rung = self.rung_for(number)
        actions = tuple(RequiredAction("person", k) for k in rung.person_actions) + tuple(
            RequiredAction("unit", k) for k in rung.unit_actions
        )
        return Penalty(
            breach_number=number,
            actions=actions,
            in_bulletin=rung.in_bulletin,
            refer_to_discipline=rung.refer_to_discipline,
            hold_leader_accountable=rung.hold_leader_accountable,
        )


DEFAULT_LADDER: Final = Ladder(
    (
        LadderRung(
            min_count=1,
            person_actions=("self_criticism",),
            unit_actions=("rectification_report",),
            in_bulletin=True,
            refer_to_discipline=False,
            hold_leader_accountable=False,
        ),
        LadderRung(
            min_count=3,
            person_actions=("self_criticism",),
            unit_actions=("rectification_report",),
            in_bulletin=True,
            refer_to_discipline=True,
            hold_leader_accountable=True,
        ),
    )
)


def _require_date(value: object, name: str) -> date:
    # datetime is a date subclass; a datetime here means a tz bug upstream.
    if isinstance(value, datetime) or not isinstance(value, date):
        raise TypeError(f"{name} must be a local date (not a datetime), got {value!r}")
    return value


@dataclass(frozen=True)
class CampaignPeriod:
    """Local dates of a campaign, both ends inclusive; ``end=None`` is open-ended."""

    start: date
    end: date | None = None

    def __post_init__(self) -> None:
        _require_date(self.start, "start")
        if self.end is not None:
            _require_date(self.end, "end")
            if self.end < self.start:
                raise ValueError(f"period end {self.end} is before start {self.start}")

    def contains(self, d: date) -> bool:
        """True if local date ``d`` lies within the period."""
        _require_date(d, "d")
        return self.start <= d and (self.end is None or d <= self.end)


def count_in_period(breach_dates: Iterable[date], period: CampaignPeriod) -> int:
    """How many of one person's verified breach dates fall in ``period``."""
    return sum(1 for d in breach_dates if period.contains(d))


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x3400 <= cp <= 0x4DBF
        or 0x4E00 <= cp <= 0x9FFF
        or 0xF900 <= cp <= 0xFAFF
        or 0x20000 <= cp <= 0x3134F
    )


def _normalize_text(text: str) -> str:
    words = unicodedata.normalize("NFKC", text).split()
    if not words:
        return ""
    out = words[0]
    for word in words[1:]:
        # Chinese lists pad two-character names with a full-width space to
        # align them ("张　三"); that padding is not part of the name.
        out += word if _is_cjk(out[-1]) and _is_cjk(word[0]) else " " + word
    return out.casefold()


def person_key(name: str, unit_key: str) -> str:
    """Identity key of a person for counting breaches.

    Staff type the name (there is no employee id), so name + unit is the
    identity. The key absorbs typing noise: NFKC (full-width forms),
    trimmed and collapsed whitespace, whitespace between two Chinese
    characters removed, case folded. Chinese characters are kept as they
    are (no pinyin or variant folding). Parts are joined with U+001F, which
    normalisation removes from both parts, so the key is unambiguous.
    """
    norm_name = _normalize_text(name)
    norm_unit = _normalize_text(unit_key)
    if not norm_name:
        raise ValueError("person name is empty")
    if not norm_unit:
        raise ValueError("unit key is empty")
    return f"{norm_unit}\x1f{norm_name}"
