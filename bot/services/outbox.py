"""The durable outbox: messages to staff are rows first, Telegram calls later.

A row is written in the same transaction as the decision to send it (a tip, an
acknowledgement), so a crash can lose neither. `dedupe_key` makes enqueueing idempotent.
Payloads are encrypted: a card carries tip content.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, Integer, LargeBinary, any_, bindparam, func, insert, not_, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from bot.clock import to_minute
from bot.security import Keyring
from storage.db import is_postgres
from storage.models import OutboxMessage

SEND_METHODS = frozenset(
    {"send_message", "send_photo", "send_document", "send_video", "send_voice", "send_audio", "edit_message_text"}
)


@dataclass(frozen=True, slots=True)
class Button:
    text: str
    data: str


def keyboard_payload(rows: list[list[Button]] | None) -> list[list[dict[str, str]]] | None:
    if rows is None:
        return None
    return [[{"text": b.text, "data": b.data} for b in row] for row in rows]


def enqueue(
    session: Session,
    keyring: Keyring,
    now: datetime,
    *,
    dedupe_key: str,
    chat_id: int,
    method: str,
    payload: dict[str, Any],
    purpose: str,
    tip_id: int | None = None,
    broadcast_id: int | None = None,
) -> OutboxMessage:
    if method not in SEND_METHODS:
        raise ValueError(f"unknown outbox method {method!r}")
    existing = session.scalar(select(OutboxMessage).where(OutboxMessage.dedupe_key == dedupe_key))
    if existing is not None:
        return existing
    if tip_id is not None and method != "edit_message_text":
        # Whatever is about a tip (its card, evidence, the team's notes) cannot be
        # forwarded or saved by whoever is in the chat (an edit keeps the original's).
        payload = {**payload, "protect": True}
    row = OutboxMessage(
        dedupe_key=dedupe_key,
        chat_id=chat_id,
        method=method,
        payload_enc=keyring.encrypt(json.dumps(payload, ensure_ascii=False)),
        purpose=purpose,
        tip_id=tip_id,
        broadcast_id=broadcast_id,
        status="pending",
        attempts=0,
        created_at=now,
        next_attempt_at=now,
    )
    lock_chats(session, [chat_id])
    session.add(row)
    session.flush()
    _mark_heads(session, [chat_id])
    return row


@dataclass(frozen=True, slots=True)
class Row:
    dedupe_key: str
    chat_id: int
    method: str
    payload: dict[str, Any]


def enqueue_many(
    session: Session, keyring: Keyring, now: datetime, rows: list[Row], *, purpose: str,
    broadcast_id: int | None = None,
) -> int:
    """Queue many new rows in one statement (a broadcast to thousands of chats).

    The caller guarantees the rows are new (a broadcast is made once, under its
    scheduled-run key); a repeated `dedupe_key` still fails on the unique index rather
    than sending twice. Rows keep the order given (ids increase), so a chat's messages
    arrive in that order.
    """
    for row in rows:
        if row.method not in SEND_METHODS:
            raise ValueError(f"unknown outbox method {row.method!r}")
    # One payload to many chats (a bulletin's parts to each office member, a summary to
    # every official) is encoded and encrypted once: found by the dict itself first (the
    # callers reuse one dict per part), else by its JSON.
    ciphertexts: list[str] = []
    by_object: dict[int, int] = {}
    by_text: dict[str, int] = {}

    def seal(payload: dict[str, Any]) -> int:
        found = by_object.get(id(payload))
        if found is None:
            text = json.dumps(payload, ensure_ascii=False)
            found = by_text.get(text)
            if found is None:
                found = by_text[text] = len(ciphertexts)
                ciphertexts.append(keyring.encrypt(text))
            by_object[id(payload)] = found
        return found

    sealed = [seal(r.payload) for r in rows]  # `rows` holds the dicts: their ids stay theirs
    chats = sorted({r.chat_id for r in rows})
    lock_all_chats(session)
    # The first row of a chat with nothing open becomes its head, ready at once. Which
    # chats have rows open is read under the lock that orders head changes (PostgreSQL),
    # or, on SQLite, after taking the write lock, so it cannot change before the insert.
    take_write_lock(session)
    busy: set[int] = set()
    for start in range(0, len(chats), 500):
        busy.update(session.scalars(
            select(OutboxMessage.chat_id)
            .where(OutboxMessage.chat_id.in_(chats[start : start + 500]), OutboxMessage.status.in_(OPEN))
            .distinct()))
    heads = []
    for r in rows:
        heads.append(r.chat_id not in busy)
        busy.add(r.chat_id)
    if is_postgres(session):
        _insert_selected(session, now, rows, sealed, ciphertexts, heads, purpose, broadcast_id)
        return len(rows)
    values = [
        {
            "dedupe_key": r.dedupe_key, "chat_id": r.chat_id, "method": r.method,
            "payload_enc": ciphertexts[i], "purpose": purpose,
            "tip_id": None, "broadcast_id": broadcast_id, "status": "pending", "attempts": 0,
            "created_at": now, "next_attempt_at": now, "ready_at": now if head else None,
        }
        for r, i, head in zip(rows, sealed, heads)
    ]
    for start in range(0, len(values), 1000):  # SQLite: in process, nothing to send
        session.execute(insert(_T), values[start : start + 1000])
    return len(values)


# PostgreSQL: the rows as arrays, each distinct payload once, in one statement. Row by row
# (executemany), a bulletin of 180 parts to 5 office members bound and sent 900 copies of
# 13 kB ciphertexts one by one. The payloads go as one bytes value (the tokens, ASCII,
# end to end) cut by offsets: the driver sends bytes as they are, where a list of str is
# quoted into an array literal in Python item by item (2.3 MB of a draft's parts: most
# of the statement's time as the caller saw it). The rows come out of unnest in the order
# given, so the sequence gives their ids in that order (a chat's rows go out in id order);
# the sort on the ordinality costs nothing, the planner knows it.
_INSERT_SELECTED = text(
    "INSERT INTO outbox (dedupe_key, chat_id, method, payload_enc, purpose, tip_id, broadcast_id, status, attempts, "
    "created_at, next_attempt_at, ready_at) "
    "SELECT r.dedupe_key, r.chat_id, r.method, "
    "convert_from(substring(CAST(:payloads AS BYTEA) FROM (CAST(:starts AS INTEGER[]))[r.payload] "
    "FOR (CAST(:lengths AS INTEGER[]))[r.payload]), 'UTF8'), :purpose, NULL, "
    ":broadcast_id, 'pending', 0, :now, :now, CASE WHEN r.head THEN CAST(:now AS TIMESTAMP WITH TIME ZONE) END "
    "FROM (SELECT * FROM unnest(CAST(:keys AS VARCHAR[]), CAST(:chats AS BIGINT[]), CAST(:methods AS VARCHAR[]), "
    "CAST(:payload AS INTEGER[]), CAST(:heads AS BOOLEAN[])) WITH ORDINALITY "
    "AS u(dedupe_key, chat_id, method, payload, head, n) ORDER BY n) AS r"
).bindparams(bindparam("now", type_=OutboxMessage.__table__.c.created_at.type), bindparam("broadcast_id", type_=Integer),
             bindparam("payloads", type_=LargeBinary))
INSERT_CHUNK = 20_000  # rows per statement: a 100k-row broadcast is five statements, not one of 10 MB


def _insert_selected(session: Session, now: datetime, rows: list[Row], sealed: list[int], ciphertexts: list[str],
                     heads: list[bool], purpose: str, broadcast_id: int | None) -> None:
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = range(start, min(start + INSERT_CHUNK, len(rows)))
        used: dict[int, int] = {}  # payload index -> its 1-based place in this statement's payloads
        for k in chunk:
            used.setdefault(sealed[k], len(used) + 1)
        tokens = [ciphertexts[i].encode("ascii") for i in used]
        starts, at = [], 1
        for token in tokens:
            starts.append(at)
            at += len(token)
        session.execute(_INSERT_SELECTED, {
            "purpose": purpose, "broadcast_id": broadcast_id, "now": now,
            "keys": [rows[k].dedupe_key for k in chunk], "chats": [rows[k].chat_id for k in chunk],
            "methods": [rows[k].method for k in chunk], "payload": [used[sealed[k]] for k in chunk],
            "heads": [heads[k] for k in chunk], "payloads": b"".join(tokens), "starts": starts,
            "lengths": [len(t) for t in tokens],
        })


def payload_of(row: Any, keyring: Keyring) -> dict[str, Any]:
    return json.loads(keyring.decrypt(row.payload_enc))


OPEN = ("pending", "sending")
CHAT_LOCK_NAMESPACE = 7_384_100  # PostgreSQL advisory locks (namespace, chat) for head changes


# Heads -----------------------------------------------------------------------------------
#
# A chat's messages go out one at a time, in id order: only the oldest open row of a chat
# (its head) may be sent. The head is marked by `ready_at` (when it may go; NULL for every
# other row, so a row with `ready_at` set is always a `pending` head), kept up to date
# where a chat's head can change: a row queued for a chat with
# nothing open becomes its head; a head sent or failed hands over to the chat's next open
# row (one probe of `ix_outbox_open_chat`). The claim then reads only due heads and run-out
# leases, through their own indexes: its cost depends on how many rows it takes, not on how
# many wait behind them (100k rows of a broadcast, one group's backlog).
#
# On PostgreSQL two transactions could otherwise both decide a head for the same chat (or
# none): queueing and handing over take a transaction-scoped advisory lock on the chat
# first, so each sees what the other committed. SQLite has one writer at a time, and the
# decision is made after the transaction's first write.


def lock_chats(session: Session, chat_ids: Iterable[int]) -> None:
    """Serialise head changes of these chats with other transactions (PostgreSQL), always
    in the same order so that two transactions never wait on each other in a cycle; and
    with a broadcast being queued (`lock_all_chats`)."""
    if not is_postgres(session):
        return
    session.execute(select(func.pg_advisory_xact_lock_shared(CHAT_LOCK_NAMESPACE, 0)))
    for chat_id in sorted(set(chat_ids)):
        session.execute(select(func.pg_advisory_xact_lock(CHAT_LOCK_NAMESPACE, _int4(chat_id) or 1)))


def take_write_lock(session: Session) -> None:
    """SQLite: start writing now (a write statement that changes nothing), so what this
    transaction reads next cannot change until it commits."""
    if not is_postgres(session):
        session.execute(update(OutboxMessage).where(OutboxMessage.id == -1).values(ready_at=None))


def lock_all_chats(session: Session) -> None:
    """A broadcast queues rows for thousands of chats: one lock for all of them (a lock
    per chat would fill PostgreSQL's lock table) until its transaction ends."""
    if is_postgres(session):
        session.execute(select(func.pg_advisory_xact_lock(CHAT_LOCK_NAMESPACE, 0)))


def _int4(chat_id: int) -> int:
    return (chat_id + 2**31) % 2**32 - 2**31


def _mark_heads(session: Session, chat_ids: Iterable[int]) -> None:
    """Make the oldest open row of each chat its head, if it waits and is not one yet."""
    for chat_id in sorted(set(chat_ids)):
        head = session.execute(
            select(OutboxMessage.id, OutboxMessage.status, OutboxMessage.next_attempt_at, OutboxMessage.ready_at)
            .where(OutboxMessage.chat_id == chat_id, OutboxMessage.status.in_(OPEN))
            .order_by(OutboxMessage.id).limit(1)
        ).first()
        if head is not None and head.status == "pending" and head.ready_at is None:
            session.execute(update(OutboxMessage).where(OutboxMessage.id == head.id)
                            .values(ready_at=head.next_attempt_at))


def db_now(session: Session) -> datetime:
    """The database's clock, for leases: processes on several machines (PostgreSQL) agree
    on it whatever their own clocks say. SQLite is one process on one machine: its clock
    is the machine's."""
    if is_postgres(session):
        value = session.scalar(select(func.clock_timestamp()))
        assert isinstance(value, datetime)
        return value.astimezone(UTC)
    return datetime.now(UTC)


_T = OutboxMessage.__table__
# What a sender needs of a claimed row (plain rows: no ORM objects to build and track).
CLAIMED = (_T.c.id, _T.c.chat_id, _T.c.method, _T.c.payload_enc, _T.c.attempts, _T.c.purpose, _T.c.broadcast_id,
           _T.c.tip_id)


DB_CLOCK = "db"  # `claim_due(lease_now=DB_CLOCK)`: leases from the database's own clock


def claim_due(session: Session, now: datetime, limit: int, lease: timedelta, *,
              lease_now: datetime | str | None = None, skip: Iterable[int] = (),
              expired: bool = True) -> list[Any]:
    """Heads due now (oldest first) and rows whose lease ran out, leased to this sender.

    `now` is the sender's clock (compared with `ready_at`, which it set); leases are
    compared and set with `lease_now`: `DB_CLOCK` for the database's clock (PostgreSQL's
    `clock_timestamp()`, in the statement itself; on SQLite, one process on one machine,
    the machine's), or a given time (tests). A `sending` row whose lease ran out belonged
    to a sender that died or lost touch: it is taken again (`expired=False` skips that
    look, which a sender needs only now and then). Each part is one statement, an UPDATE
    of the rows an index range finds (RETURNING them); on PostgreSQL `SKIP LOCKED` lets
    two processes share the work without sending a row twice.

    The heads are found by `ready_at` alone, read in the order of `ix_outbox_ready` (no
    sort): `ready_at` is set only on pending heads, and a condition on `status` as well
    would let a planner prefer `ix_outbox_due`, every pending row of the queue (SQLite
    does so at 100k rows). tests/integration/test_outbox_heads.py checks the plans.
    """
    postgres = is_postgres(session)
    if lease_now is None:
        lease_now = now
    clock: Any
    if lease_now == DB_CLOCK:
        clock = func.clock_timestamp() if postgres else datetime.now(UTC)
    else:
        clock = lease_now
    rows: list[OutboxMessage] = []
    if expired:
        rows += _take(session, limit, postgres, clock, lease,
                      (_T.c.lease_until <= clock, _T.c.status == "sending",
                       *((_T.c.id.not_in(list(skip)),) if skip else ())),
                      (_T.c.lease_until, _T.c.id))
    if len(rows) < limit:
        rows += _take(session, limit - len(rows), postgres, clock, lease, (_T.c.ready_at <= now,),
                      (_T.c.ready_at, _T.c.id))
    rows.sort(key=lambda r: r.id)
    return rows


def _take(session: Session, limit: int, postgres: bool, clock: Any, lease: timedelta, where: tuple[Any, ...],
          order: tuple[Any, ...]) -> list[Any]:
    return list(session.execute(_taking(limit, postgres, clock, lease, where, order)))


def _taking(limit: Any, postgres: bool, clock: Any, lease: Any, where: tuple[Any, ...],
            order: tuple[Any, ...]) -> Any:
    wanted = select(_T.c.id).where(*where).order_by(*order).limit(limit)
    if postgres:
        wanted = wanted.with_for_update(skip_locked=True)
    return (
        update(_T).where(_T.c.id.in_(wanted.scalar_subquery()))
        .values(status="sending", ready_at=None, lease_until=clock + lease, attempts=_T.c.attempts + 1)
        .returning(*CLAIMED)
    )


@dataclass(frozen=True, slots=True)
class HeadsClaim:
    """The claim of due heads as SQL text for the driver itself (PostgreSQL): the same
    statement as `claim_due(expired=False)` with the database's clock, compiled once."""

    sql: str
    defaults: dict[str, Any]

    @classmethod
    def compile(cls, dialect: Dialect) -> HeadsClaim:
        statement = _taking(bindparam("limit"), True, func.clock_timestamp(), bindparam("lease"),
                            (_T.c.ready_at <= bindparam("now"),), (_T.c.ready_at, _T.c.id))
        return cls._of(statement, dialect)

    @classmethod
    def _of(cls, statement: Any, dialect: Dialect) -> Any:
        compiled = statement.compile(dialect=dialect)
        assert not compiled.positional, "a named paramstyle (psycopg's)"
        return cls(compiled.string, dict(compiled.params))

    def parameters(self, now: datetime, limit: int, lease: timedelta) -> dict[str, Any]:
        return {**self.defaults, "now": now, "limit": limit, "lease": lease}


@dataclass(frozen=True, slots=True)
class ExpiredClaim(HeadsClaim):
    """The claim of rows whose lease ran out, for the driver likewise: `claim_due`'s first
    part on the database's clock. The rows still in flight at this sender are one array
    parameter (`id <> ALL`), not a list spelled out, so the statement text never changes
    and is prepared once like the heads' claim."""

    @classmethod
    def compile(cls, dialect: Dialect) -> ExpiredClaim:
        clock = func.clock_timestamp()
        statement = _taking(bindparam("limit"), True, clock, bindparam("lease"),
                            (_T.c.lease_until <= clock, _T.c.status == "sending",
                             not_(_T.c.id == any_(bindparam("skip", type_=ARRAY(Integer))))),
                            (_T.c.lease_until, _T.c.id))
        return cls._of(statement, dialect)

    def claim_parameters(self, limit: int, lease: timedelta, skip: Iterable[int]) -> dict[str, Any]:
        return {**self.defaults, "limit": limit, "lease": lease, "skip": list(skip)}


class ClaimConnection:
    """A connection of the sender's own for its claims, in autocommit mode: a claim is
    one statement and so its own transaction (no BEGIN and COMMIT round trips, no ping at
    each check-out from the pool). Used from one thread at a time; after an error it is
    dropped and the next claim opens a new one.

    On PostgreSQL the claim of due heads (the one made about twice per message sent) goes
    to the driver directly, as a prepared statement: the server plans it once, not at
    every claim, and no Session, ORM or statement compilation stands between. Measured
    at 100k open rows the statement runs in under 0.5 ms on the server; through a
    Session, parsing, planning and Python around it took 2.7-3.1 ms. The look for leases
    that ran out (about once a second) goes the same way."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None
        postgres = is_postgres(engine)
        self._heads = HeadsClaim.compile(engine.dialect) if postgres else None
        self._expired = ExpiredClaim.compile(engine.dialect) if postgres else None

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
                conn.close()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        conn = self._connection()
        try:
            with Session(bind=conn) as session:
                yield session
        except BaseException:
            self._drop()
            raise

    def claim(self, now: datetime, limit: int, lease: timedelta, *, expired: bool,
              skip: Iterable[int] = ()) -> list[Any]:
        """`claim_due` with leases on the database's clock, oldest first."""
        if self._heads is None or self._expired is None:  # SQLite
            with self.session() as session:
                return claim_due(session, now, limit, lease, lease_now=DB_CLOCK, skip=skip, expired=expired)
        rows = []
        if expired:  # run-out leases first (about once a second), as `claim_due` takes them
            rows = self._run(self._expired.sql, self._expired.claim_parameters(limit, lease, skip))
        if len(rows) < limit:
            rows += self._run(self._heads.sql, self._heads.parameters(now, limit - len(rows), lease))
        rows.sort(key=lambda r: r[0])
        return [ClaimedRow(*r) for r in rows]

    def _run(self, sql: str, parameters: dict[str, Any]) -> list[Any]:
        """One prepared statement through the driver (PostgreSQL)."""
        conn = self._connection()
        driver_error = self._engine.dialect.loaded_dbapi.Error
        try:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(sql, parameters, prepare=True)
                return cursor.fetchall()
            finally:
                cursor.close()
        except driver_error as exc:
            self._drop()
            # As SQLAlchemy would raise it: callers wait out any database trouble by that.
            raise DBAPIError.instance(sql, None, exc, driver_error, hide_parameters=True,
                                      dialect=self._engine.dialect) from exc
        except BaseException:
            self._drop()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


class ClaimedRow(NamedTuple):
    """A claimed row as the driver returns it (the columns of `CLAIMED`)."""

    id: int
    chat_id: int
    method: str
    payload_enc: str
    attempts: int
    purpose: str
    broadcast_id: int | None
    tip_id: int | None


def renew(session: Session, held: Iterable[tuple[int, int]], until: datetime) -> set[int]:
    """Extend the leases of rows still in flight; returns the ids this sender still holds."""
    kept: set[int] = set()
    for row_id, attempts in held:
        if session.execute(_claimed(row_id, attempts).values(lease_until=until)).rowcount:
            kept.add(row_id)
    return kept


def release_all(session: Session, now: datetime) -> int:
    """At start of a single-process database (SQLite): rows left `sending` belonged to a
    process that is gone; they wait again at once instead of when their lease runs out."""
    result = session.execute(
        update(OutboxMessage).where(OutboxMessage.status == "sending")
        .values(status="pending", lease_until=None, ready_at=now, next_attempt_at=now)
    )
    return int(result.rowcount or 0)


def _claimed(row_id: int, attempts: int):  # type: ignore[no-untyped-def]
    """Only the sender that holds the lease may record the outcome: a sender whose lease
    ran out (a very long RetryAfter) must not overwrite what its successor recorded."""
    return update(OutboxMessage).where(
        OutboxMessage.id == row_id, OutboxMessage.status == "sending", OutboxMessage.attempts == attempts
    )


def _finish(session: Session, row_id: int, attempts: int, chat_id: int | None, **values: Any) -> bool:
    if chat_id is None:
        chat_id = session.scalar(select(OutboxMessage.chat_id).where(OutboxMessage.id == row_id))
        if chat_id is None:
            return False
    lock_chats(session, [chat_id])
    # Once done, a row keeps no time finer than the minute (its card may date a tipster's
    # submission): the exact retry time goes back to the row's creation minute.
    result = session.execute(_claimed(row_id, attempts).values(lease_until=None, ready_at=None,
                                                               next_attempt_at=OutboxMessage.created_at, **values))
    if not result.rowcount:
        return False
    _mark_heads(session, [chat_id])
    return True


def mark_sent(session: Session, row_id: int, attempts: int, now: datetime, message_id: int | None, *,
              chat_id: int | None = None) -> bool:
    return _finish(session, row_id, attempts, chat_id, status="sent", sent_at=to_minute(now), message_id=message_id,
                   last_error=None)


def mark_retry(session: Session, row_id: int, attempts: int, at: datetime, error: str) -> bool:
    """Back to waiting, still its chat's head, until `at`."""
    result = session.execute(
        _claimed(row_id, attempts).values(status="pending", next_attempt_at=at, ready_at=at, lease_until=None,
                                          last_error=error[:256])
    )
    return bool(result.rowcount)


def mark_failed(session: Session, row_id: int, attempts: int, error: str, *, chat_id: int | None = None) -> bool:
    return _finish(session, row_id, attempts, chat_id, status="failed", last_error=error[:256])


def fail_open_rows(session: Session, chat_id: int, error: str) -> int:
    """Give up everything still waiting for a chat (it blocked the bot or removed it)."""
    lock_chats(session, [chat_id])
    result = session.execute(
        update(OutboxMessage).where(OutboxMessage.chat_id == chat_id, OutboxMessage.status == "pending")
        .values(status="failed", ready_at=None, last_error=error[:256])
    )
    return int(result.rowcount or 0)


def move_chat(session: Session, old: int, new: int, now: datetime) -> int:
    """A group became a supergroup: what waits for the old id goes to the new one, in order."""
    lock_chats(session, [old, new])
    result = session.execute(
        update(OutboxMessage).where(OutboxMessage.chat_id == old, OutboxMessage.status.in_(OPEN))
        .values(chat_id=new, ready_at=None)
    )
    session.execute(update(OutboxMessage).where(OutboxMessage.chat_id == new, OutboxMessage.status == "pending")
                    .values(ready_at=None))
    _mark_heads(session, [new])
    return int(result.rowcount or 0)


def requeue(session: Session, row_id: int, attempts: int, at: datetime, error: str) -> bool:
    """A row that failed through no fault of its own (Telegram's pace, its chat moved):
    waiting again until `at`, the attempt not counted."""
    result = session.execute(
        _claimed(row_id, attempts).values(status="pending", attempts=attempts - 1, next_attempt_at=at, ready_at=at,
                                          lease_until=None, last_error=error[:256])
    )
    return bool(result.rowcount)


def message_id_of(session: Session, row_id: int) -> int | None:
    return session.scalar(select(OutboxMessage.message_id).where(OutboxMessage.id == row_id))


def counts(session: Session) -> dict[str, int]:
    return dict(session.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)).all())
