"""storage.db.is_postgres: one answer for a session, a connection and an engine."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from storage.db import is_postgres


def test_is_postgres_for_a_session_a_connection_and_an_engine(engine: Engine) -> None:
    expected = engine.url.get_backend_name() == "postgresql"
    with Session(engine) as session, engine.connect() as connection:
        assert [is_postgres(session), is_postgres(connection), is_postgres(engine)] == [expected] * 3
