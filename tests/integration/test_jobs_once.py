"""Scheduled work done once when several processes share the database (webhook mode): the
news for tipsters is told by one process at a time (a PostgreSQL advisory lock); due steps
and scheduled runs have their own guards (SKIP LOCKED claims, `scheduled_runs`)."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine

from bot.app import build_deps
from bot.clock import FakeClock
from bot.jobs import _news_once
from bot.services import notify
from storage.db import make_engine
from tests.conftest import make_config

from .conftest import is_postgres


class SlowBot:
    """Sends take a moment, so that two processes' job runs overlap."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    async def send_message(self, chat_id: int, text: str, **_: object) -> None:
        await asyncio.sleep(0.2)
        self.sent.append(chat_id)


async def test_two_processes_tell_each_tipster_once(engine: Engine, database_url: str, clock: FakeClock) -> None:
    if not is_postgres(engine):
        pytest.skip("one process per SQLite database")
    config = make_config(database_url, security={"contact_key": Fernet.generate_key().decode()})
    first, _ = build_deps(config, clock, engine)
    with first.sessions.begin() as session:
        for tip_id in range(1, 4):
            assert notify.opt_in(session, first, tip_id, 5_930_000 + tip_id, clock.now())
            notify.news(session, first, tip_id, clock.now())
    other_engine = make_engine(database_url)
    try:
        second, _ = build_deps(config, clock, other_engine)
        bot = SlowBot()
        told = await asyncio.gather(_news_once(first, bot), _news_once(second, bot))
        told += await asyncio.gather(_news_once(first, bot), _news_once(second, bot))
    finally:
        other_engine.dispose()
    assert sorted(bot.sent) == [5_930_001, 5_930_002, 5_930_003], bot.sent
    assert sum(told) == 3
