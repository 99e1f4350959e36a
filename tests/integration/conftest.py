"""Integration fixtures: the real services on a real, Alembic-migrated database.

The `database_url`, `engine` and `config` fixtures come from tests/conftest.py (a SQLite
file per test, or a fresh PostgreSQL schema when TIPLINE_TEST_DATABASE_URL is set).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, Table, inspect, select
from sqlalchemy.orm import Session

from bot.app import build_deps
from bot.clock import FakeClock
from bot.config import Config
from bot.deps import Deps
from bot.services import outbox, staff
from storage.db import is_postgres  # noqa: F401 - the tests import it from here
from storage.models import OutboxMessage

START = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def deps(config: Config, clock: FakeClock, engine: Engine) -> Deps:
    built, _ = build_deps(config, clock, engine)
    return built


def dump_database(engine: Engine) -> str:
    """Every row of every table that exists in the database (reflected, not taken from the
    models, so a table the models do not know is searched too), as one text."""
    lines: list[str] = []
    with engine.connect() as conn:
        names = inspect(conn).get_table_names()
        assert "tips" in names and "outbox" in names, names
        meta = MetaData()
        for name in names:
            table = Table(name, meta, autoload_with=conn)
            for row in conn.execute(select(table)):
                lines.append(f"{name}: " + " | ".join(f"{k}={v}" for k, v in row._mapping.items()))
    return "\n".join(lines)


def add_lead(session: Session, deps: Deps, team: int, user_id: int, name: str, lang: str = "en",
             role: str = "lead") -> staff.JoinResult:
    """Register a person the way staff do: an invite code, then /join with it."""
    now = deps.clock.now()
    code = staff.create_invite(session, deps.keyring, now, kind="person", role=role,
                               team_number=None if role == "office" else team)
    session.flush()
    result = staff.join(session, deps, code, user_id, name, lang, now)
    assert result.status is staff.JoinStatus.JOINED, result
    return result


def add_group(session: Session, deps: Deps, team: int, chat_id: int, title: str = "team group"
              ) -> staff.JoinResult:
    """Bind a Telegram group to a team with a group invite code."""
    now = deps.clock.now()
    code = staff.create_invite(session, deps.keyring, now, kind="group", role=None, team_number=team)
    session.flush()
    result = staff.bind_group(session, deps, code, chat_id, title, now)
    assert result.status is staff.JoinStatus.BOUND, result
    return result


def outbox_rows(session: Session, **where: Any) -> list[OutboxMessage]:
    query = select(OutboxMessage).order_by(OutboxMessage.id)
    for column, value in where.items():
        query = query.where(getattr(OutboxMessage, column) == value)
    return list(session.scalars(query))


def payload(deps: Deps, row: OutboxMessage) -> dict[str, Any]:
    return outbox.payload_of(row, deps.keyring)
