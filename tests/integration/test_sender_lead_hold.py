"""Taking the sender lead holds the pacer only for what remains of the handover after the
previous lead ended (bot/services/sendlead.py, bot/ratelimit.py `hold`): nothing when nobody
ever held it or when it ran out long ago; the remainder right after it ran out or was
released. The lead's row is set on the database's clock; the pacer's waits are read from
its reservations, never timed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine, update

from bot.deps import Deps
from bot.ratelimit import PacingRateLimiter
from bot.sender import OutboxSender
from bot.services import sendlead
from storage.models import SenderLead

from .conftest import is_postgres

GROUP = 60.0 / 20 + 0.05  # a group's interval at 20 a minute, with the margin
LEAD = timedelta(seconds=3)


class Taker:
    def __init__(self, deps: Deps) -> None:
        self.limiter = PacingRateLimiter(global_per_second=30, per_chat_per_second=1, group_per_minute=20)
        self.sender = OutboxSender(SimpleNamespace(rate_limiter=self.limiter), deps, lead=LEAD)  # type: ignore[arg-type]

    def take(self) -> dict[str, float]:
        """Take the lead as the sender's loop does; how long each kind of request waits then."""
        started = time.monotonic()
        held, seen = self.sender._take_lead()
        assert held
        self.sender._lead_held(started, seen)
        assert self.sender.lead_taken == 1 and self.sender.leads()
        return {"overall": self.limiter._reserve(), "private": self.limiter._reserve_chat(6_400_001),
                "group": self.limiter._reserve_chat(-6_400_001)}

    def close(self) -> None:
        self.sender._claims.close()
        self.sender._pool.shutdown()
        self.sender._claim_pool.shutdown()


@pytest.fixture
def taker(deps: Deps) -> Iterator[Taker]:
    t = Taker(deps)
    yield t
    t.close()


def _lead_ended(deps: Deps, ago: float) -> None:
    """Another process held the lead until `ago` seconds ago (the database's clock)."""
    with deps.sessions.begin() as session:
        sendlead.ensure(session)
        now = sendlead.status(session).now
        until = now - timedelta(seconds=ago)
        session.execute(update(SenderLead).where(SenderLead.name == sendlead.NAME)
                        .values(holder="elsewhere:1:abcdef", since=until - timedelta(minutes=5),
                                renewed_at=until - LEAD, until=until))


async def test_a_lead_nobody_ever_held_holds_nothing(taker: Taker) -> None:
    assert taker.take() == {"overall": 0.0, "private": 0.0, "group": 0.0}


async def test_a_lead_that_ran_out_long_ago_holds_nothing(deps: Deps, taker: Taker) -> None:
    _lead_ended(deps, ago=60.0)
    assert taker.take() == {"overall": 0.0, "private": 0.0, "group": 0.0}


async def test_a_lead_that_just_ran_out_holds_what_remains_of_the_handover(deps: Deps, taker: Taker) -> None:
    _lead_ended(deps, ago=0.2)
    waits = taker.take()
    # At most the remainder (the time since it was read only shortens it), and not much less.
    assert 0.3 < waits["overall"] <= 0.8
    assert 0.3 < waits["private"] <= 0.8
    assert GROUP - 0.7 < waits["group"] <= GROUP - 0.2


async def test_a_released_lead_holds_what_remains_of_the_handover(deps: Deps, taker: Taker) -> None:
    with deps.sessions.begin() as session:
        sendlead.ensure(session)
        assert sendlead.take(session, "elsewhere:1:abcdef", LEAD)
    with deps.sessions.begin() as session:
        assert sendlead.release(session, "elsewhere:1:abcdef")  # a graceful stop: `until` is now
    waits = taker.take()
    assert 0.5 < waits["overall"] <= 1.0
    assert GROUP - 0.5 < waits["group"] <= GROUP


async def test_a_lead_taken_by_force_while_it_ran_holds_the_whole_handover(deps: Deps, engine: Engine,
                                                                          taker: Taker) -> None:
    """SQLite at start after a crash: the dead process's lead still runs, and is taken."""
    if is_postgres(engine):
        pytest.skip("PostgreSQL takes no lead by force")
    _lead_ended(deps, ago=-2.0)
    waits = taker.take()
    assert 0.7 < waits["overall"] <= 1.0
    assert GROUP - 0.3 < waits["group"] <= GROUP


def test_a_lead_that_changed_since_it_was_read_is_not_taken(deps: Deps) -> None:
    """The hold is reckoned from the lead as read: if another process took it (and let it go)
    in between, the take fails and the next try reads it again."""
    with deps.sessions.begin() as session:
        sendlead.ensure(session)
        seen = sendlead.status(session)
    assert seen.holder is None  # never held: it would hold nothing
    with deps.sessions.begin() as session:
        assert sendlead.take(session, "elsewhere:1:abcdef", LEAD)
        assert sendlead.release(session, "elsewhere:1:abcdef")
    with deps.sessions.begin() as session:
        assert not sendlead.take(session, "here:2:abcdef", LEAD, seen=seen)
        again = sendlead.status(session)
        assert again.holder == "elsewhere:1:abcdef"
        assert sendlead.take(session, "here:2:abcdef", LEAD, seen=again)
