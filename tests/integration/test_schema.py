"""The ORM models and the Alembic migrations describe the same schema, on both backends."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Text,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session

from storage.db import alembic_config, downgrade, upgrade
from storage.models import Base, KeyValue, UpdateJournal, UTCDateTime

from .conftest import is_postgres

# Type comparison is on (it is Alembic's default since 1.12; said explicitly so that a change
# of default cannot turn this test into a no-op). No special case is needed for UTCDateTime:
# Alembic compares a TypeDecorator through its `impl` (DateTime(timezone=True)) with the
# reflected column, and the probes below show this finds real type differences. SQLite has
# no time-zone-aware column type, so on SQLite a lost `timezone=True` cannot be seen by the
# comparison; `test_datetime_columns_are_timestamptz_on_postgresql` covers that on PostgreSQL.
COMPARE_OPTS = {"compare_type": True, "compare_server_default": True}


def diffs(engine: Engine, metadata: MetaData) -> list[object]:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts=COMPARE_OPTS), metadata)


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def copy_of_models() -> MetaData:
    md = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(md)
    return md


def test_models_match_migrations(engine: Engine) -> None:
    assert current_revision(engine) == head_revision(engine) is not None
    assert diffs(engine, Base.metadata) == []


def _drop_index(md: MetaData) -> None:
    table = md.tables["tips"]
    table.indexes.discard(next(ix for ix in table.indexes if ix.name == "ix_tips_state"))


MUTATIONS: dict[str, Callable[[MetaData], None]] = {
    "column type": lambda md: setattr(md.tables["outbox"].c.next_attempt_at, "type", Text()),
    "string length": lambda md: setattr(md.tables["tips"].c.receipt_hash, "type", String(65)),
    "nullability": lambda md: setattr(md.tables["tips"].c.routed_at, "nullable", True),
    "new column": lambda md: md.tables["kv"].append_column(Column("extra", Integer)),
    "missing index": _drop_index,
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_comparison_sees_a_difference(engine: Engine, mutation: str) -> None:
    """The comparison above is not vacuous: a model that differs from the migration is seen."""
    md = copy_of_models()
    assert diffs(engine, md) == []
    MUTATIONS[mutation](md)
    assert diffs(engine, md) != []


def test_datetime_columns_are_timestamptz_on_postgresql(engine: Engine) -> None:
    if not is_postgres(engine):
        pytest.skip("SQLite has no time-zone-aware column type; the UTCDateTime decorator covers it")
    md = copy_of_models()
    md.tables["tips"].c.created_at.type = DateTime(timezone=False)
    assert diffs(engine, md) != [], "a naive timestamp column must show up as a difference"
    columns = {c["name"]: c["type"] for c in inspect(engine).get_columns("outbox")}
    assert getattr(columns["next_attempt_at"], "timezone", None) is True


def test_every_datetime_column_is_utc_datetime() -> None:
    found = []
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            # a plain DateTime column would hand back naive datetimes on SQLite
            assert not isinstance(column.type, DateTime), f"{table.name}.{column.name} is {column.type!r}"
            if isinstance(column.type, UTCDateTime):
                found.append(f"{table.name}.{column.name}")
    assert "tips.created_at" in found and "outbox.lease_until" in found


def test_downgrade_to_base_then_upgrade_again(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        session.add(KeyValue(key="before", value="1"))
    downgrade(engine, "base")
    assert current_revision(engine) is None
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}

    upgrade(engine)
    assert current_revision(engine) == head_revision(engine)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    assert diffs(engine, Base.metadata) == []
    with Session(engine) as session, session.begin():
        assert session.get(KeyValue, "before") is None  # the tables are new
        session.add(KeyValue(key="after", value="2"))
    with Session(engine) as session:
        assert session.get(KeyValue, "after").value == "2"
    upgrade(engine)  # at head already: nothing to do, nothing breaks
    assert current_revision(engine) == head_revision(engine)


CST = timezone(timedelta(hours=8))


def test_utc_datetime_round_trip(engine: Engine) -> None:
    # 09:00:00.123456 in UTC+8 is 01:00:00.123456 UTC
    local = datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=CST)
    with Session(engine) as session, session.begin():
        session.add(UpdateJournal(update_id=1, payload_enc=None, received_at=local, attempts=0))
    with Session(engine) as session:
        row = session.get(UpdateJournal, 1)
        assert row is not None
        assert row.received_at.tzinfo is not None
        assert row.received_at.utcoffset() == timedelta(0)
        assert row.received_at == local
        assert row.received_at.replace(tzinfo=None) == datetime(2026, 3, 2, 1, 0, 0, 123456)
        assert row.processed_at is None


def test_utc_datetime_refuses_naive(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(UpdateJournal(update_id=2, received_at=datetime(2026, 3, 2, 9, 0), attempts=0))
        with pytest.raises(StatementError) as info:
            session.flush()
        assert isinstance(info.value.orig, ValueError)
        assert "naive" in str(info.value.orig)
        session.rollback()
    with Session(engine) as session:
        assert session.scalars(select(UpdateJournal)).all() == []


def test_utc_datetime_compares_instants_in_sql(engine: Engine) -> None:
    """Values given in different zones are stored as one instant, so SQL orders and filters
    by time, not by wall-clock text (the outbox's `next_attempt_at <= now` relies on it)."""
    early_local_late_wall = datetime(2026, 3, 2, 9, 0, tzinfo=CST)  # 01:00 UTC
    late_local_early_wall = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # 02:00 UTC
    with Session(engine) as session, session.begin():
        session.add(UpdateJournal(update_id=10, received_at=late_local_early_wall, attempts=0))
        session.add(UpdateJournal(update_id=11, received_at=early_local_late_wall, attempts=0))
    with Session(engine) as session:
        ordered = session.scalars(select(UpdateJournal.update_id).order_by(UpdateJournal.received_at)).all()
        assert ordered == [11, 10]
        cutoff = datetime(2026, 3, 2, 9, 30, tzinfo=CST)  # 01:30 UTC
        before = session.scalars(select(UpdateJournal.update_id).where(UpdateJournal.received_at <= cutoff)).all()
        assert before == [11]
        if not is_postgres(engine):
            # SQLite keeps the UTC wall time as text: comparisons are textual, so it must be UTC.
            raw = session.execute(text("SELECT received_at FROM update_journal WHERE update_id = 11")).scalar_one()
            assert str(raw).startswith("2026-03-02 01:00:00")
