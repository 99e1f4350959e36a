"""Engines, sessions and migrations.

The session's lifetime belongs to the caller (one `with sessions.begin()` per update or
job); repositories never commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str, echo: bool = False) -> Engine:
    parsed = make_url(url)
    # Parameters never appear in an error or an echoed statement: they may be content.
    # (A citizen's Telegram id is never a parameter at all: see storage/directory.py.)
    kwargs: dict[str, Any] = {"echo": echo, "future": True, "hide_parameters": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def is_postgres(bind: Session | Connection | Engine) -> bool:
    """Whether a session, connection or engine works on PostgreSQL (tipline's other
    database is SQLite)."""
    dialect = bind.get_bind().dialect if isinstance(bind, Session) else bind.dialect
    return dialect.name == "postgresql"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # a tip the tipster was told about survives power loss
    cursor.execute("PRAGMA busy_timeout=30000")
    # Deleted and overwritten content is zeroed in the file, not left in free pages.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def db_now(session: Session) -> datetime:
    """The database server's clock (UTC): leases compared across processes use it."""
    if session.get_bind().dialect.name == "sqlite":
        raw = session.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
        return datetime.fromisoformat(raw).replace(tzinfo=UTC)
    value = session.execute(text("SELECT now()")).scalar_one()
    return value.astimezone(UTC)


def checkpoint_truncate(engine: Engine) -> bool:
    """SQLite: copy the WAL into the database and truncate it to zero bytes, so that old page
    images (erased content) do not linger in the -wal file. True if it completed."""
    if engine.dialect.name != "sqlite":
        return True
    with engine.connect() as conn:
        busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
    return busy is None or busy[0] == 0


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head", keyring: Any = None) -> None:
    """Create or upgrade the schema to `revision` (Alembic); at the head, check that the
    summary's counting triggers are in place (storage/rollup.py). A migration that
    encrypts what an older version kept in clear needs the keyring (bot.security.Keyring)."""
    cfg = alembic_config(engine)
    cfg.attributes["keyring"] = keyring
    command.upgrade(cfg, revision)
    if revision == "head":
        from storage import rollup

        with engine.begin() as connection:
            rollup.ensure(connection)
            refresh_statistics(connection)


def refresh_statistics(connection: Any) -> None:
    """SQLite's planner statistics, at start and daily (bot/services/schedule.py): without
    them the planner guesses, and may walk an index of the whole history where a range of
    it would do. `analysis_limit` makes ANALYZE sample each index, so this takes
    milliseconds at any size. PostgreSQL's autovacuum keeps its own statistics."""
    if connection.dialect.name != "sqlite":
        return
    connection.exec_driver_sql("PRAGMA analysis_limit=1000")
    connection.exec_driver_sql("ANALYZE")
    connection.exec_driver_sql("PRAGMA optimize")


def downgrade(engine: Engine, revision: str, keyring: Any = None) -> None:
    cfg = alembic_config(engine)
    cfg.attributes["keyring"] = keyring
    command.downgrade(cfg, revision)


@contextmanager
def unit_of_work(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions.begin() as session:
        yield session
