"""Bulletin numbering, content selection and scheduled-run period keys.

Bulletins are public documents numbered 1, 2, 3...; a missing number looks
like a suppressed bulletin, so numbering refuses to continue past a gap.
Scheduled jobs (bulletin, daily summary) record the period key of each run
under a unique (job, period) key, making a run idempotent across restarts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Set
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

from bot.domain.calendar import require_aware

__all__ = [
    "BulletinCase",
    "bulletin_period_key",
    "next_bulletin_number",
    "select_cases",
    "summary_period_key",
]


def next_bulletin_number(issued_numbers: Iterable[int]) -> int:
    """The next number (max + 1) after checking ``issued_numbers`` is exactly 1..n."""
    numbers = list(issued_numbers)
    for n in numbers:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"bulletin numbers must be ints >= 1, got {n!r}")
    counts = Counter(numbers)
    unique = set(counts)
    if len(unique) != len(numbers):
        dupes = sorted(n for n, c in counts.items() if c > 1)
        raise ValueError(f"bulletin numbers issued twice: {dupes}")
    if not unique:
        return 1
    highest = max(unique)
    if len(unique) != highest:
        missing = sorted(set(range(1, highest + 1)) - unique)
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise ValueError(f"bulletin numbering has a gap: missing {shown}")
    return highest + 1


@dataclass(frozen=True)
class BulletinCase:
    """A verified case as it may appear in a bulletin (keys, not texts)."""

    case_id: int
    unit_key: str
    person_name: str
    post: str
    breach_category_key: str
    penalty_summary_keys: tuple[str, ...]
    verified_at: datetime

    def __post_init__(self) -> None:
        require_aware(self.verified_at, "verified_at")
        object.__setattr__(self, "penalty_summary_keys", tuple(self.penalty_summary_keys))


def select_cases(
    candidates: Iterable[BulletinCase], already_in_bulletin: Set[int], period_end: datetime
) -> list[BulletinCase]:
    """Verified cases not yet published and verified by ``period_end``.

    Ordered by verification time, then case id, so a re-run lists them
    identically. A case id given twice is refused: it would print twice.
    """
    require_aware(period_end, "period_end")
    chosen: list[BulletinCase] = []
    seen: set[int] = set()
    for case in candidates:
        if case.case_id in seen:
            raise ValueError(f"case {case.case_id} given twice")
        seen.add(case.case_id)
        if case.case_id in already_in_bulletin or case.verified_at > period_end:
            continue
        chosen.append(case)
    return sorted(chosen, key=lambda c: (c.verified_at, c.case_id))


def _run_at(day: date, at: time, tz: tzinfo) -> datetime:
    if at.tzinfo is not None:
        raise ValueError("'at' is a local wall-clock time; give it without tzinfo")
    return datetime.combine(day, at, tzinfo=tz)


def bulletin_period_key(
    now: datetime, tz: tzinfo, every_days: int, at: time, epoch: date
) -> str | None:
    """ISO date of the latest run at or before ``now``; None before the first run.

    Runs happen at local time ``at`` on ``epoch`` and every ``every_days``
    days after it, in time zone ``tz`` (``now`` may be in any zone).
    """
    require_aware(now, "now")
    if isinstance(every_days, bool) or not isinstance(every_days, int) or every_days < 1:
        raise ValueError(f"every_days must be an int >= 1, got {every_days!r}")
    local_day = now.astimezone(tz).date()
    elapsed = (local_day - epoch).days
    if elapsed < 0:
        return None
    run_day = epoch + timedelta(days=elapsed - elapsed % every_days)
    if _run_at(run_day, at, tz) > now:
        run_day -= timedelta(days=every_days)
        if run_day < epoch:
            return None
    return run_day.isoformat()


def summary_period_key(now: datetime, tz: tzinfo, at: time) -> str:
    """ISO date of the latest daily-summary run (local time ``at``) at or before ``now``."""
    require_aware(now, "now")
    local_day = now.astimezone(tz).date()
    if _run_at(local_day, at, tz) > now:
        local_day -= timedelta(days=1)
    return local_day.isoformat()
