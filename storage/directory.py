"""Who is staff, known in memory, so that a citizen's Telegram id never reaches SQL.

A citizen's id must not be a bound parameter of any statement: a failing statement's log
line, `database.echo` or a PostgreSQL server with `log_statement` would record it. So
every look-up "is this user staff?" is answered first from this in-memory view of the
Telegram ids of staff and officials and the chat ids of bound groups; only an id found
here is ever used in SQL.

The view is kept in step with the database by `directory_version.stamp`, which database
triggers change on every insert, update or delete in `staff` and `team_chats` (whoever
makes it: this process, another process on PostgreSQL, or a shell). Each check reads the
stamp (a statement with no parameter) and reloads the ids when it changed. The stamp is
random rather than a counter, so a rolled-back change cannot be mistaken for a later one.
"""

from __future__ import annotations

import threading
import weakref

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from storage.models import DirectoryVersion, Staff, TeamChat


class Directory:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stamp: int | None = None
        self._users: frozenset[int] = frozenset()
        self._chats: frozenset[int] = frozenset()

    def _fresh(self, session: Session) -> None:
        stamp = session.scalar(select(DirectoryVersion.stamp).where(DirectoryVersion.id == 1))
        if stamp is not None and stamp == self._stamp:
            return
        users = frozenset(session.scalars(select(Staff.telegram_user_id)))
        chats = frozenset(session.scalars(select(TeamChat.chat_id)))
        with self._lock:
            self._stamp, self._users, self._chats = stamp, users, chats

    def is_staff(self, session: Session, user_id: int) -> bool:
        """A registered staff member or official (active or not)."""
        self._fresh(session)
        return user_id in self._users

    def is_team_chat(self, session: Session, chat_id: int) -> bool:
        """A group bound to a team or to the office (active or not)."""
        self._fresh(session)
        return chat_id in self._chats


_directories: weakref.WeakKeyDictionary[Engine, Directory] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def directory_of(session: Session) -> Directory:
    """The directory of the session's database (one per engine)."""
    engine = session.get_bind()
    if not isinstance(engine, Engine):
        engine = engine.engine
    with _registry_lock:
        directory = _directories.get(engine)
        if directory is None:
            directory = _directories[engine] = Directory()
        return directory


def is_staff(session: Session, user_id: int) -> bool:
    return directory_of(session).is_staff(session, user_id)


def is_team_chat(session: Session, chat_id: int) -> bool:
    return directory_of(session).is_team_chat(session, chat_id)
