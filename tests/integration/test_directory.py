"""The in-memory directory of staff ids stays in step with the database: changes made
through another engine (another process on PostgreSQL) or by plain SQL are seen at the
next look-up, because triggers change `directory_version.stamp`."""

from __future__ import annotations

from sqlalchemy import Engine, text

from bot.app import build_deps
from bot.clock import FakeClock
from bot.config import Config
from bot.deps import Deps
from bot.services import staff, workflow
from bot.services import officials as official_service
from storage.db import make_engine

from .conftest import START, add_group, add_lead


def test_another_process_changes_are_seen(config: Config, engine: Engine, deps: Deps, database_url: str) -> None:
    other_engine = make_engine(database_url)  # a second process, as far as the database can tell
    other, _ = build_deps(config, FakeClock(START), other_engine)
    try:
        with deps.sessions.begin() as session:  # this process loads its view: nobody yet
            assert staff.staff_by_user(session, 8_000_001) is None
            assert not staff.staff_by_user(session, 8_000_002)
        with other.sessions.begin() as session:
            add_lead(session, other, 1, 8_000_001, "Lead One")
            add_group(session, other, 1, -100_800)
        with deps.sessions.begin() as session:
            member = staff.staff_by_user(session, 8_000_001)
            assert member is not None and member.display_name == "Lead One"
            assert workflow.staff_of(session, 8_000_001) is not None
        # Plain SQL from a shell: the triggers see it too.
        with other_engine.begin() as conn:
            conn.execute(text("INSERT INTO staff (telegram_user_id, display_name, role, team_number, language, "
                              "active, joined_at) VALUES (8000002, 'Official Two', 'official', NULL, 'en', "
                              ":yes, :at)"), {"yes": True, "at": START.replace(tzinfo=None)})
        with deps.sessions.begin() as session:
            assert official_service.official(session, 8_000_002) is not None
        with other_engine.begin() as conn:
            conn.execute(text("DELETE FROM staff WHERE telegram_user_id = 8000002"))
        with deps.sessions.begin() as session:
            assert official_service.official(session, 8_000_002) is None
            from storage.directory import is_team_chat

            assert is_team_chat(session, -100_800) and not is_team_chat(session, -100_801)
    finally:
        other_engine.dispose()


def test_a_rolled_back_change_is_forgotten(deps: Deps) -> None:
    try:
        with deps.sessions.begin() as session:
            add_lead(session, deps, 1, 8_000_003, "Brief")
            assert staff.staff_by_user(session, 8_000_003) is not None  # seen inside its transaction
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    with deps.sessions.begin() as session:
        assert staff.staff_by_user(session, 8_000_003) is None
