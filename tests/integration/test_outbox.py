"""The durable outbox: idempotent enqueueing, per-chat ordering, leases, retries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from bot.clock import FakeClock, to_minute
from bot.deps import Deps
from bot.services import outbox
from storage.models import OutboxMessage

from .conftest import is_postgres, payload

LEASE = timedelta(seconds=60)
CHAT_A = 1001
CHAT_B = -2002
CHAT_C = 3003


def put(session: Session, deps: Deps, key: str, chat_id: int, text_: str = "hello", **kw: object) -> OutboxMessage:
    return outbox.enqueue(session, deps.keyring, deps.clock.now(), dedupe_key=key, chat_id=chat_id,
                          method="send_message", payload={"text": text_}, purpose="card", **kw)


def claim(deps: Deps, limit: int = 10) -> list[int]:
    with deps.sessions.begin() as session:
        return [r.id for r in outbox.claim_due(session, deps.clock.now(), limit, LEASE)]


def row(deps: Deps, row_id: int) -> OutboxMessage:
    with deps.sessions.begin() as session:
        found = session.get(OutboxMessage, row_id)
        assert found is not None
        return found


def test_enqueue_is_idempotent_by_dedupe_key(deps: Deps) -> None:
    with deps.sessions.begin() as session:
        first = put(session, deps, "k1", CHAT_A, "first text")
        first_id = first.id
    deps.clock.advance(minutes=5)
    with deps.sessions.begin() as session:
        again = put(session, deps, "k1", CHAT_B, "other text")
        assert again.id == first_id
        assert (again.chat_id, payload(deps, again)) == (CHAT_A, {"text": "first text"})
        other = put(session, deps, "k2", CHAT_A, "second")
        assert other.id > first_id
    with deps.sessions.begin() as session:
        rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        assert [r.dedupe_key for r in rows] == ["k1", "k2"]
        assert rows[0].created_at == rows[0].next_attempt_at == deps.clock.now() - timedelta(minutes=5)
        assert (rows[0].status, rows[0].attempts, rows[0].lease_until) == ("pending", 0, None)


def test_enqueue_refuses_an_unknown_method(deps: Deps) -> None:
    with deps.sessions.begin() as session, pytest.raises(ValueError):
        outbox.enqueue(session, deps.keyring, deps.clock.now(), dedupe_key="x", chat_id=1, method="ban_chat_member",
                       payload={}, purpose="card")


def test_payload_is_encrypted_at_rest(deps: Deps, engine: Engine) -> None:
    with deps.sessions.begin() as session:
        row_id = put(session, deps, "secret", CHAT_A, "the mayor's nephew PLATYPUS took the car").id
    with engine.connect() as conn:
        raw = conn.execute(text("SELECT payload_enc FROM outbox WHERE id = :id"), {"id": row_id}).scalar_one()
    assert "PLATYPUS" not in raw and "mayor" not in raw
    assert deps.keyring.decrypt(raw) == '{"text": "the mayor\'s nephew PLATYPUS took the car"}'


def test_only_the_oldest_undelivered_row_of_a_chat_is_due(deps: Deps, clock: FakeClock) -> None:
    with deps.sessions.begin() as session:
        a1 = put(session, deps, "a1", CHAT_A).id
        b1 = put(session, deps, "b1", CHAT_B).id
        a2 = put(session, deps, "a2", CHAT_A).id
        a3 = put(session, deps, "a3", CHAT_A).id
        b2 = put(session, deps, "b2", CHAT_B).id

    assert claim(deps) == [a1, b1]
    assert claim(deps) == []  # a1 and b1 are leased; a2 and b2 wait behind them
    claimed = row(deps, a1)
    assert (claimed.status, claimed.attempts, claimed.lease_until) == ("sending", 1, clock.now() + LEASE)

    with deps.sessions.begin() as session:
        outbox.mark_sent(session, a1, 1, clock.now(), message_id=77)
    assert claim(deps) == [a2]
    with deps.sessions.begin() as session:
        outbox.mark_failed(session, b1, 1, "Forbidden: bot was kicked")
    assert claim(deps) == [b2]  # a failed row no longer holds its chat up
    with deps.sessions.begin() as session:
        outbox.mark_sent(session, a2, 1, clock.now(), message_id=78)
        outbox.mark_sent(session, b2, 1, clock.now(), message_id=79)
    assert claim(deps) == [a3]
    with deps.sessions.begin() as session:
        outbox.mark_sent(session, a3, 1, clock.now(), message_id=80)
        assert outbox.counts(session) == {"sent": 4, "failed": 1}
    assert claim(deps) == []


def test_claim_respects_the_limit_oldest_first(deps: Deps) -> None:
    with deps.sessions.begin() as session:
        c1 = put(session, deps, "c1", CHAT_C).id
        b1 = put(session, deps, "b1", CHAT_B).id
        a1 = put(session, deps, "a1", CHAT_A).id
    assert claim(deps, limit=2) == [c1, b1]
    assert claim(deps, limit=2) == [a1]


def test_retry_waits_for_next_attempt_at(deps: Deps, clock: FakeClock) -> None:
    with deps.sessions.begin() as session:
        a1 = put(session, deps, "a1", CHAT_A).id
        a2 = put(session, deps, "a2", CHAT_A).id
    assert claim(deps) == [a1]
    retry_at = clock.now() + timedelta(seconds=30)
    with deps.sessions.begin() as session:
        outbox.mark_retry(session, a1, 1, retry_at, "RetryAfter " + "x" * 400)
    retried = row(deps, a1)
    assert (retried.status, retried.next_attempt_at, retried.lease_until) == ("pending", retry_at, None)
    assert retried.last_error.startswith("RetryAfter") and len(retried.last_error) == 256
    assert retried.attempts == 1

    clock.advance(seconds=29)
    assert claim(deps) == []  # not yet, and a2 does not jump the queue
    clock.advance(seconds=1)
    assert claim(deps) == [a1]
    assert row(deps, a1).attempts == 2
    with deps.sessions.begin() as session:
        outbox.mark_sent(session, a1, 2, clock.now(), message_id=5)
    sent = row(deps, a1)
    assert clock.now().second  # a time within a minute: only the minute is kept
    assert (sent.status, sent.sent_at, sent.message_id, sent.lease_until, sent.last_error) == (
        "sent", to_minute(clock.now()), 5, None, None)
    assert sent.next_attempt_at == sent.created_at  # the exact retry time is gone once sent
    with deps.sessions.begin() as session:
        assert outbox.message_id_of(session, a1) == 5
        assert outbox.message_id_of(session, a2) is None
    assert claim(deps) == [a2]


def test_an_expired_lease_is_claimed_again(deps: Deps, clock: FakeClock) -> None:
    """A sender that claimed a row and died: once the lease runs out, another sender takes it."""
    with deps.sessions.begin() as session:
        a1 = put(session, deps, "a1", CHAT_A).id
        put(session, deps, "a2", CHAT_A)
    assert claim(deps) == [a1]
    clock.advance(LEASE - timedelta(seconds=1))
    assert claim(deps) == []
    clock.advance(seconds=1)
    assert claim(deps) == [a1]
    again = row(deps, a1)
    assert (again.status, again.attempts, again.lease_until) == ("sending", 2, clock.now() + LEASE)
    # The first sender wakes up late: its outcome is not recorded over the second's.
    with deps.sessions.begin() as session:
        assert outbox.mark_retry(session, a1, 1, clock.now(), "late") is False
        assert outbox.mark_sent(session, a1, 2, clock.now(), message_id=9) is True
    with deps.sessions.begin() as session:
        assert outbox.mark_retry(session, a1, 2, clock.now(), "late again") is False
    assert row(deps, a1).status == "sent"


def test_mark_failed(deps: Deps, clock: FakeClock) -> None:
    with deps.sessions.begin() as session:
        a1 = put(session, deps, "a1", CHAT_A).id
    assert claim(deps) == [a1]
    with deps.sessions.begin() as session:
        outbox.mark_failed(session, a1, 1, "Bad Request: chat not found")
    failed = row(deps, a1)
    assert (failed.status, failed.lease_until, failed.sent_at, failed.last_error) == (
        "failed", None, None, "Bad Request: chat not found")
    clock.advance(hours=1)
    assert claim(deps) == []  # never again


def test_concurrent_claims_never_share_a_row(deps: Deps, engine: Engine, clock: FakeClock) -> None:
    if not is_postgres(engine):
        pytest.skip("SQLite is single-process by design: one sender, no concurrent claims")
    with deps.sessions.begin() as session:
        a1 = put(session, deps, "a1", CHAT_A).id
        b1 = put(session, deps, "b1", CHAT_B).id
        c1 = put(session, deps, "c1", CHAT_C).id
        put(session, deps, "a2", CHAT_A)
    first = Session(engine)
    second = Session(engine)
    try:
        first.begin()
        got_first = [r.id for r in outbox.claim_due(first, clock.now(), 1, LEASE)]
        assert got_first == [a1]  # locked, not committed
        second.begin()
        # without SKIP LOCKED the second claim would wait for the first: fail instead of hanging
        second.execute(text("SET LOCAL lock_timeout = '5s'"))
        got_second = [r.id for r in outbox.claim_due(second, clock.now(), 10, LEASE)]
        assert got_second == [b1, c1]  # skips a1 (locked) and a2 (behind a1)
        assert not set(got_first) & set(got_second)
        second.commit()
        first.commit()
    finally:
        first.close()
        second.close()
    for row_id in (a1, b1, c1):
        assert (row(deps, row_id).status, row(deps, row_id).attempts) == ("sending", 1)
    assert claim(deps) == []
