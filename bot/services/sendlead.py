"""The sender lead: one process at a time sends the outbox.

Telegram's limits (about 30 messages a second overall, 1 a second in a private chat, 20 a
minute in a group) are per bot token. Each process paces its own requests (bot/ratelimit.py),
so several processes on one token (webhook mode on PostgreSQL) would add up past them.
Instead, one row (`sender_lead`) names the process that sends: it renews its lease on the
database's clock about once a second; every other process keeps queueing rows and tries to
take the lead at the same pace, which succeeds only once the holder's lease has run out
(it died, stalled or lost the database). The rows themselves keep their own leases
(bot/services/outbox.py), so a change of lead never sends a row twice.

A holder lets a request leave only while its lead is sure to last one more second
(`HANDOVER`, the span over which Telegram counts the overall limit), and a new holder
sends its first request no sooner than one `HANDOVER` after the previous lead ended
(bot/ratelimit.py: `hold`; only what remains of it, nothing if nobody ever held the lead):
the two never have requests counted in the same second. A holder that stops releases the
lead (its `until` becomes now) after waiting for its requests in flight. Repositories
never commit: each function is one statement, and the sender runs them on its autocommit
claim connection.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage.db import is_postgres
from storage.models import SenderLead

NAME = "outbox"
HANDOVER = 1.0  # seconds: Telegram's window for the overall limit
_T = SenderLead.__table__


def holder_name() -> str:
    """Who holds the lead, as the operator sees it: host, process id, and a random part
    (two senders in one process, a pid reused after a restart)."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(3)}"


def _clock(session: Session) -> Any:
    # PostgreSQL: the database's clock, in the statement (processes on several machines
    # agree on it); SQLite is one machine: its clock.
    return func.clock_timestamp() if is_postgres(session) else datetime.now(UTC)


def ensure(session: Session) -> None:
    """The lead's row exists (inserted once; nobody holds it yet)."""
    insert = pg_insert if is_postgres(session) else sqlite_insert
    session.execute(insert(_T).values(name=NAME).on_conflict_do_nothing(index_elements=[_T.c.name]))


def take(session: Session, holder: str, lease: timedelta, *, force: bool = False, seen: Status | None = None
         ) -> bool:
    """Take the lead, or renew it if this holder has it: True if it holds it now (for
    `lease` from the database's clock). Fails while another holder's lease runs, unless
    `force`: a SQLite file has one process, so at its start whoever held it is gone. With
    `seen` (the lead as `status` read it), fails too if it changed since: the new holder
    reckons its hold from when the lead it read ended."""
    now = _clock(session)
    free = or_(_T.c.holder == holder, _T.c.holder.is_(None), _T.c.until.is_(None), _T.c.until <= now)
    where = [_T.c.name == NAME]
    if not force:
        where.append(free)
    if seen is not None:
        where.append(_T.c.holder.is_(None) if seen.holder is None else _T.c.holder == seen.holder)
        where.append(_T.c.until.is_(None) if seen.until is None else _T.c.until == seen.until)
    result = session.execute(
        update(_T).where(*where)
        .values(holder=holder, until=now + lease, renewed_at=now,
                since=case((_T.c.holder == holder, _T.c.since), else_=now))
    )
    return bool(result.rowcount)


def release(session: Session, holder: str) -> bool:
    """A holder that stops hands the lead on at once (its name stays, for the status)."""
    now = _clock(session)
    result = session.execute(update(_T).where(_T.c.name == NAME, _T.c.holder == holder, _T.c.until > now)
                             .values(until=now))
    return bool(result.rowcount)


@dataclass(frozen=True, slots=True)
class Status:
    holder: str | None
    since: datetime | None
    renewed_at: datetime | None
    until: datetime | None
    now: datetime

    @property
    def held(self) -> bool:
        return self.holder is not None and self.until is not None and self.until > self.now


def status(session: Session) -> Status:
    row = session.execute(select(_T.c.holder, _T.c.since, _T.c.renewed_at, _T.c.until).where(_T.c.name == NAME)).first()
    now = session.scalar(select(func.clock_timestamp())) if is_postgres(session) else datetime.now(UTC)
    assert isinstance(now, datetime)
    now = now.astimezone(UTC)
    if row is None:
        return Status(None, None, None, None, now)
    return Status(row.holder, row.since, row.renewed_at, row.until, now)


def ended_ago(s: Status) -> float | None:
    """Seconds since the last holder's lead ended, on the database's clock: 0 while it still
    runs (a lead taken by force), None if nobody ever held it (nobody ever sent)."""
    if s.holder is None or s.until is None:
        return None
    return max(0.0, (s.now - s.until).total_seconds())


def describe(s: Status) -> str:
    """One line for `tipline outbox`."""
    if s.held:
        assert s.until is not None and s.since is not None and s.renewed_at is not None
        return (f"sender: {s.holder} sends (since {s.since:%Y-%m-%d %H:%M:%S} UTC, renewed "
                f"{(s.now - s.renewed_at).total_seconds():.1f} s ago, lead runs out in "
                f"{(s.until - s.now).total_seconds():.1f} s)")
    if s.holder is None:
        return "sender: none yet (no process has sent since the database was created)"
    assert s.until is not None
    return (f"sender: none now (the last, {s.holder}, stopped "
            f"{(s.now - s.until).total_seconds():.0f} s ago): messages wait until a process takes the lead")
