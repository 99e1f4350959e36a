"""The update journal of DurablePoller: saved before confirmed, deduplicated, erased, pruned.

journal() and prune() only use `deps`; process() hands the update to `app.process_update`,
so a small stand-in application records what it is given (the database is the real one).
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select
from telegram import Update

from bot.clock import FakeClock
from bot.deps import Deps
from bot.polling import KEEP_IDS, MAX_ATTEMPTS, OFFSET_KEY, DurablePoller
from storage.models import KeyValue, UpdateJournal

from .conftest import dump_database

FIRST_NAME = "Ximena-Quillfeather"
CHAT_ID = 48151623


def update(update_id: int, text: str = "hello there") -> Update:
    data = {
        "update_id": update_id,
        "message": {
            "message_id": update_id * 10,
            "date": 1772415000,
            "chat": {"id": CHAT_ID, "type": "private", "first_name": FIRST_NAME},
            "from": {"id": CHAT_ID, "is_bot": False, "first_name": FIRST_NAME, "language_code": "en"},
            "text": text,
        },
    }
    parsed = Update.de_json(data, None)
    assert parsed is not None and parsed.effective_user.first_name == FIRST_NAME
    return parsed


class StandInApp:
    """What process() needs of a PTB Application: `bot` and `process_update`."""

    def __init__(self) -> None:
        self.bot = None
        self.seen: list[Update] = []
        self.poller: DurablePoller | None = None
        self.fail: set[int] = set()

    async def process_update(self, upd: Update) -> None:
        self.seen.append(upd)
        if upd.update_id in self.fail and self.poller is not None:
            self.poller.failed_updates.add(upd.update_id)  # what the error handler does


@pytest.fixture
def app() -> StandInApp:
    return StandInApp()


@pytest.fixture
def poller(deps: Deps, app: StandInApp) -> DurablePoller:
    made = DurablePoller(app, deps)  # type: ignore[arg-type]
    app.poller = made
    return made


def journal_rows(deps: Deps) -> dict[int, UpdateJournal]:
    with deps.sessions.begin() as session:
        return {r.update_id: r for r in session.scalars(select(UpdateJournal))}


def offset(deps: Deps) -> str | None:
    with deps.sessions.begin() as session:
        row = session.get(KeyValue, OFFSET_KEY)
        return row.value if row else None


def test_journal_saves_encrypted_updates_and_the_offset(poller: DurablePoller, deps: Deps, engine: Engine,
                                                        clock: FakeClock) -> None:
    assert poller.journal([]) == []
    assert offset(deps) is None
    assert poller.journal([update(100), update(101), update(103, "report SECRETWORD")]) == [100, 101, 103]
    assert offset(deps) == "104"
    assert poller._offset() == 104

    rows = journal_rows(deps)
    assert set(rows) == {100, 101, 103}
    assert all(r.received_at == clock.now() and r.processed_at is None and r.attempts == 0 for r in rows.values())
    stored = deps.keyring.decrypt(rows[103].payload_enc)
    assert FIRST_NAME in stored and "SECRETWORD" in stored  # the whole update is kept ...
    assert Update.de_json(json.loads(stored), None).message.text == "report SECRETWORD"
    dump = dump_database(engine)  # ... but only encrypted
    assert "update_journal:" in dump
    for secret in (FIRST_NAME, "Ximena", "SECRETWORD", str(CHAT_ID)):
        assert secret not in dump
    assert poller.pending() == [100, 101, 103]


def test_journal_recognises_an_update_delivered_twice(poller: DurablePoller, deps: Deps) -> None:
    assert poller.journal([update(200)]) == [200]
    before = journal_rows(deps)[200].payload_enc
    assert poller.journal([update(200, "changed")]) == []
    assert poller.journal([update(201), update(201), update(200)]) == [201]
    rows = journal_rows(deps)
    assert set(rows) == {200, 201}
    assert rows[200].payload_enc == before
    assert offset(deps) == "202"
    # an older batch (e.g. a retry after a timeout) never moves the offset back
    assert poller.journal([update(150)]) == [150]
    assert offset(deps) == "202"


async def test_processing_erases_the_payload(poller: DurablePoller, app: StandInApp, deps: Deps, engine: Engine,
                                             clock: FakeClock) -> None:
    poller.journal([update(300), update(301)])
    clock.advance(seconds=3)
    await poller.process_pending()
    assert [u.update_id for u in app.seen] == [300, 301]
    assert app.seen[0].effective_user.first_name == FIRST_NAME
    rows = journal_rows(deps)
    for update_id in (300, 301):
        assert rows[update_id].payload_enc is None
        assert rows[update_id].processed_at == clock.now()
        assert rows[update_id].attempts == 1
    assert poller.pending() == [] and poller.processed == 2
    # redelivered after processing: still recognised, and not brought back
    assert poller.journal([update(301)]) == []
    await poller.process(301)
    assert len(app.seen) == 2
    assert journal_rows(deps)[301].payload_enc is None


async def test_a_failing_update_is_tried_again_then_given_up(poller: DurablePoller, app: StandInApp,
                                                              deps: Deps) -> None:
    app.fail.add(400)
    poller.journal([update(400)])
    for attempt in range(1, MAX_ATTEMPTS):
        await poller.process(400)
        row = journal_rows(deps)[400]
        assert (row.attempts, row.processed_at) == (attempt, None)
        assert row.payload_enc is not None  # kept for the next try
    await poller.process(400)
    row = journal_rows(deps)[400]
    assert row.attempts == MAX_ATTEMPTS
    assert row.processed_at is not None and row.payload_enc is None
    assert len(app.seen) == MAX_ATTEMPTS


def test_erase_unprocessable(poller: DurablePoller, deps: Deps) -> None:
    poller.journal([update(500), update(501)])
    with deps.sessions.begin() as session:
        session.get(UpdateJournal, 500).attempts = MAX_ATTEMPTS  # e.g. crashed while handling it, each time
    poller.erase_unprocessable()
    rows = journal_rows(deps)
    assert rows[500].payload_enc is None and rows[500].processed_at is not None
    assert rows[501].payload_enc is not None and rows[501].processed_at is None


async def test_prune_keeps_recent_and_unprocessed_ids(poller: DurablePoller, deps: Deps, clock: FakeClock) -> None:
    assert KEEP_IDS == timedelta(days=2)
    poller.journal([update(600), update(601)])  # 601 stays unprocessed
    await poller.process(600)
    clock.advance(days=1)
    poller.journal([update(602)])
    await poller.process(602)

    clock.advance(days=1)  # 600 was processed exactly two days ago: kept
    assert poller.prune() == 0
    assert set(journal_rows(deps)) == {600, 601, 602}
    clock.advance(seconds=1)
    assert poller.prune() == 1
    assert set(journal_rows(deps)) == {601, 602}
    clock.advance(days=30)
    assert poller.prune() == 1
    assert set(journal_rows(deps)) == {601}  # never processed: never pruned
    assert offset(deps) == "603"
