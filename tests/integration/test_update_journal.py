"""The update journal of DurablePoller: minimal, sealed under keys that are destroyed,
idempotent, claimed, retried on a timer, fair per chat, pruned.

journal(), claim(), finish() and maintain() use `deps`; handling hands the update to
`app.process_update`, so a small stand-in application records what it is given (the
database is the real one).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Engine, select, update as sql_update
from telegram import Update

from bot.app import build_deps
from bot.clock import FakeClock
from bot.config import Config
from bot.deps import Deps
from bot.polling import OFFSET_KEY, DurablePoller
from bot.sealing import EphemeralKeys, KeyGone, key_id_of
from storage.db import make_engine
from storage.models import KeyValue, UpdateJournal

from .conftest import dump_database, is_postgres

FIRST_NAME = "Ximena-Quillfeather"
LAST_NAME = "Oyelaran-Vasquez"
USERNAME = "xq_secret_handle"
CHAT_ID = 48151623
PHONE = "+8613912345678"


def raw_update(update_id: int, text: str = "hello there", chat_id: int = CHAT_ID, **extra: object) -> dict:
    user = {"id": chat_id, "is_bot": False, "first_name": FIRST_NAME, "last_name": LAST_NAME,
            "username": USERNAME, "language_code": "en-GB"}
    message = {
        "message_id": update_id * 10,
        "date": 1772415037,
        "chat": {"id": chat_id, "type": "private", "first_name": FIRST_NAME, "last_name": LAST_NAME,
                 "username": USERNAME},
        "from": user,
        "text": text,
        **extra,
    }
    return {"update_id": update_id, "message": message}


def update(update_id: int, text: str = "hello there", chat_id: int = CHAT_ID, **extra: object) -> Update:
    parsed = Update.de_json(raw_update(update_id, text, chat_id, **extra), None)
    assert parsed is not None and parsed.effective_user.first_name == FIRST_NAME
    return parsed


class StandInApp:
    """What the poller needs of a PTB Application: `bot` and `process_update`."""

    def __init__(self) -> None:
        self.bot = None
        self.seen: list[Update] = []
        self.poller: DurablePoller | None = None
        self.fail: dict[int, int] = {}  # update id -> how many more times it fails
        self.delay: float = 0.0
        self.events: list[tuple[str, object, int]] = []  # ("start"|"end", chat, update id)
        self.explode: set[int] = set()  # raise from process_update itself

    async def process_update(self, upd: Update) -> None:
        self.seen.append(upd)
        if upd.update_id in self.explode:
            raise RuntimeError("not a handler error")
        chat = upd.effective_chat.id if upd.effective_chat else None
        self.events.append(("start", chat, upd.update_id))
        if self.delay:
            await asyncio.sleep(random.uniform(0, self.delay))
        self.events.append(("end", chat, upd.update_id))
        if self.fail.get(upd.update_id, 0) > 0 and self.poller is not None:
            self.fail[upd.update_id] -= 1
            self.poller.failed_updates.add(upd.update_id)  # what the error handler does


def make_poller(deps: Deps, app: StandInApp | None = None, **kw: object) -> tuple[DurablePoller, StandInApp]:
    app = app or StandInApp()
    made = DurablePoller(app, deps, **kw)  # type: ignore[arg-type]
    app.poller = made
    return made, app


@pytest.fixture
def config(database_url: str) -> Config:
    from tests.conftest import make_config

    return make_config(database_url, journal={"retry_seconds": 0.2, "max_attempts": 3, "key_rotate_minutes": 60})


@pytest.fixture
def poller(deps: Deps) -> DurablePoller:
    return make_poller(deps)[0]


def rows(deps: Deps) -> dict[int, UpdateJournal]:
    with deps.sessions.begin() as session:
        return {r.update_id: r for r in session.scalars(select(UpdateJournal))}


def offset(deps: Deps) -> str | None:
    with deps.sessions.begin() as session:
        row = session.get(KeyValue, OFFSET_KEY)
        return row.value if row else None


def keys_on_disk(directory: Path) -> list[Fernet]:
    return [Fernet(p.read_bytes().strip()) for p in directory.glob("*.key")]


def opens(token: str, keys: list[Fernet]) -> bool:
    body = token.partition(".")[2] or token
    for key in keys:
        try:
            key.decrypt(body.encode())
            return True
        except (InvalidToken, ValueError):
            continue
    return False


FERNET_TOKEN = re.compile(rb"gAAAAA[A-Za-z0-9_\-=]{40,}")


def openable_in(raw: bytes, keys: list[Fernet]) -> list[bytes]:
    """Every Fernet token in raw bytes that some key opens. A token may run straight into the
    next column's bytes, so each candidate is tried at every length a token can have."""
    found = []
    for match in FERNET_TOKEN.findall(raw):
        for end in range(len(match), 56, -1):
            if end % 4 == 0 and opens(match[:end].decode(), keys):
                found.append(match[:end])
                break
    return found


def sqlite_files(engine: Engine) -> list[Path]:
    base = Path(engine.url.database or "")
    return [p for p in (base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-journal")) if p.exists()]


# --- what is journaled ------------------------------------------------------------------------
def test_the_journal_seals_only_what_handlers_need(poller: DurablePoller, deps: Deps, engine: Engine) -> None:
    contact = {"phone_number": PHONE, "first_name": FIRST_NAME, "user_id": CHAT_ID}
    document = {"file_id": "F1", "file_unique_id": "U1", "file_name": f"{FIRST_NAME} statement.docx",
                "mime_type": "application/msword", "file_size": 1234}
    fresh = poller.journal([update(100, "report SECRETWORD", document=document), update(101, "", contact=contact),
                            update(102, "/join abcd-efgh-jkmn", entities=[{"type": "bot_command", "offset": 0,
                                                                               "length": 5}])])
    assert [e.update_id for e in fresh] == [100, 101, 102]
    assert offset(deps) == "103"
    stored = rows(deps)
    opened = {i: poller.keys.open(stored[i].payload_enc).decode() for i in (100, 101)}
    for text in opened.values():
        for secret in (FIRST_NAME, LAST_NAME, USERNAME, PHONE, "en-GB", "Ximena"):
            assert secret not in text
    assert "SECRETWORD" in opened[100]
    replay = Update.de_json(json.loads(opened[100]), None)
    assert replay.message.text == "report SECRETWORD" and replay.effective_chat.id == CHAT_ID
    assert replay.effective_user.language_code == "en"  # the language tipline picks, no more
    doc = replay.message.document  # what evidence is judged by, without the file's name
    assert (doc.file_id, doc.file_name, doc.mime_type, doc.file_size) == ("F1", "file.docx", "application/msword", 1234)
    assert Update.de_json(json.loads(opened[101]), None).message.contact is not None  # refused by kind
    # staff joining are named (they are not anonymous); nobody else is
    joined = Update.de_json(json.loads(poller.keys.open(stored[102].payload_enc)), None)
    assert joined.effective_user.first_name == FIRST_NAME and joined.message.entities
    assert all(r.received_at.second == 0 and r.received_at.microsecond == 0 for r in stored.values())
    dump = dump_database(engine)
    for secret in (FIRST_NAME, USERNAME, "SECRETWORD", str(CHAT_ID)):
        assert secret not in dump


def test_a_wrong_join_leaves_no_name_in_the_journal(poller: DurablePoller, deps: Deps) -> None:
    """Only a code of the form tipline makes can make a staff member (whose name is then
    stored): a citizen's mistyped /join is journaled without the sender's name."""
    command = [{"type": "bot_command", "offset": 0, "length": 5}]
    poller.journal([update(110, "/join WRONG", entities=command), update(111, "/join ABCDEF", entities=command),
                    update(112, "/join ABCD-EFGH-1234", entities=command),  # 1 is never in a code
                    update(113, "/join@tipline_bot WRONG-CODE-1234", entities=command),
                    update(114, "/join ABCD-EFGH-JKMN", entities=command)])
    stored = rows(deps)
    opened = {i: poller.keys.open(stored[i].payload_enc).decode() for i in range(110, 115)}
    for i in range(110, 114):
        assert FIRST_NAME not in opened[i] and LAST_NAME not in opened[i], i
        replay = Update.de_json(json.loads(opened[i]), None)
        assert replay.message.text.startswith("/join") and replay.effective_user.id == CHAT_ID
    assert FIRST_NAME in opened[114] and LAST_NAME in opened[114]  # a staff member's join is named


def test_journal_inserts_are_idempotent_across_pollers(deps: Deps, config: Config, clock: FakeClock,
                                                       engine: Engine) -> None:
    first, _ = make_poller(deps)
    other_deps, _ = build_deps(config, clock, engine)
    second, _ = make_poller(other_deps)
    assert [e.update_id for e in first.journal([update(200)])] == [200]
    before = rows(deps)[200].payload_enc
    # No UNIQUE violation; 201 is of the chat `first` holds: left for it, in order after 200.
    assert second.journal([update(200, "changed"), update(201), update(201)]) == []
    assert [e.update_id for e in first.journal([update(201), update(200)])] == []
    stored = rows(deps)
    assert set(stored) == {200, 201}
    assert stored[200].payload_enc == before and stored[200].claimed_by == first.owner
    assert stored[201].claimed_by is None and stored[201].chat_key == stored[200].chat_key
    assert offset(deps) == "202"
    first.journal([update(150)])  # an older batch never moves the offset back
    assert offset(deps) == "202"


# --- erased, and the keys destroyed ----------------------------------------------------------
async def test_after_processing_and_key_destruction_nothing_can_be_read(
        deps: Deps, engine: Engine, clock: FakeClock, config: Config) -> None:
    poller, app = make_poller(deps)
    tipsters = [(CHAT_ID + i, f"IDENT{i:03d}XQ") for i in range(20)]
    poller.journal([update(300 + i, f"report {word}", chat_id=chat) for i, (chat, word) in enumerate(tipsters)])
    # A copy of the database taken while the entries were waiting:
    with deps.sessions.begin() as session:
        copied = [t for t in session.scalars(select(UpdateJournal.payload_enc)) if t]
    assert len(copied) == 20 and all(poller.keys.open(t) for t in copied)

    await poller.process_pending()
    assert len(app.seen) == 20 and all(r.payload_enc is None for r in rows(deps).values())
    key_dir = Path(config.journal.key_dir)
    if not is_postgres(engine):
        # Still within the key's hour: erased content must not linger in the file or its WAL.
        poller.maintain()
        assert keys_on_disk(key_dir)
        raw = b"".join(p.read_bytes() for p in sqlite_files(engine))
        assert not openable_in(raw, keys_on_disk(key_dir))

    clock.advance(hours=1, minutes=3)  # the key's period and its grace are over
    assert poller.maintain()[1]  # destroyed
    fresh_keys = EphemeralKeys(key_dir, timedelta(hours=1))  # nothing cached: what is on disk
    for token in copied:
        assert not opens(token, keys_on_disk(key_dir))
        with pytest.raises(KeyGone):
            fresh_keys.open(token)
    assert oct(key_dir.stat().st_mode & 0o777) == "0o700"
    if not is_postgres(engine):
        raw = b"".join(p.read_bytes() for p in sqlite_files(engine))
        for chat, word in tipsters:
            for secret in (str(chat).encode(), word.encode(), FIRST_NAME.encode(), USERNAME.encode()):
                assert secret not in raw
        assert not openable_in(raw, keys_on_disk(key_dir))


async def test_an_entry_that_outlives_its_period_moves_to_the_current_key(
        deps: Deps, clock: FakeClock, config: Config, engine: Engine) -> None:
    """An entry waiting for its retry when its key's period ends is re-sealed under the
    current key; the old key, which also opens every other entry of its period (erased,
    but their old images linger in the WAL, dead tuples, archives), is destroyed."""
    poller, app = make_poller(deps)
    app.fail[400] = 99
    poller.journal([update(400, "still waiting"), *(update(401 + i, f"HANDLED{i:02d}QX") for i in range(5))])
    with deps.sessions.begin() as session:  # what a copy (or the WAL) keeps of the handled ones
        copied = [t for t in session.scalars(select(UpdateJournal.payload_enc)
                                              .where(UpdateJournal.update_id != 400))]
    await poller.process_pending()
    old_key = rows(deps)[400].key_id
    clock.advance(hours=1, minutes=3)
    _, gone = poller.maintain()
    assert gone == [old_key]
    key_dir = Path(config.journal.key_dir)
    fresh_keys = EphemeralKeys(key_dir, timedelta(hours=1))  # nothing cached: what is on disk
    waiting = rows(deps)[400]
    assert waiting.key_id != old_key and waiting.payload_enc.startswith(waiting.key_id + ".")
    assert waiting.chat_key is None or waiting.chat_key.startswith(waiting.key_id + ":")  # its chat's tag too
    assert json.loads(fresh_keys.open(waiting.payload_enc))["message"]["text"] == "still waiting"
    for token in copied:
        assert not opens(token, keys_on_disk(key_dir))
    for _ in range(5):  # it is still handled, from its new seal, until given up
        await asyncio.sleep(0.45)
        await poller.process_pending()
    assert [u.update_id for u in app.seen].count(400) == 3 and rows(deps)[400].processed_at is not None
    clock.advance(hours=1, minutes=3)
    poller.maintain()
    assert poller.keys.key_ids() == []


async def test_a_crash_between_reseal_and_destruction_loses_nothing(
        deps: Deps, clock: FakeClock, config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    poller, app = make_poller(deps)
    poller.journal([update(410, "waits a period")])
    old_key = rows(deps)[410].key_id
    clock.advance(hours=1, minutes=3)
    # A crash before the re-seal commits: the old token and its key are both still there.
    monkeypatch.setattr(poller.keys, "seal", lambda *a: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError):
        poller.maintain()
    monkeypatch.undo()
    assert rows(deps)[410].key_id == old_key and old_key in poller.keys.key_ids()
    # A crash after the commit, before the old key is destroyed: the entry opens with the new one.
    monkeypatch.setattr(poller.keys, "destroy", lambda key_id: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        poller.maintain()
    monkeypatch.undo()
    fresh_keys = EphemeralKeys(Path(config.journal.key_dir), timedelta(hours=1))
    row = rows(deps)[410]
    assert row.key_id != old_key and json.loads(fresh_keys.open(row.payload_enc))["message"]["text"] == "waits a period"
    assert poller.maintain()[1] == [old_key]  # the next run finishes the job
    await poller.process_pending()
    assert [u.update_id for u in app.seen] == [410] and rows(deps)[410].processed_at is not None


async def test_a_receipt_waiting_for_delivery_moves_to_the_current_key(
        deps: Deps, clock: FakeClock, config: Config) -> None:
    from bot.services import receipts
    from storage.models import PendingReceipt

    poller, _ = make_poller(deps)
    poller.journal([update(420, "a tip")])
    await poller.process_pending()
    now = clock.now()
    receipt = receipts.Receipt(chat_id=CHAT_ID, code="1234 5678 9012 3456", lang="en", kind="citizen")
    tip_id = _a_tip(deps)
    with deps.sessions.begin() as session:
        receipts.keep(session, deps, tip_id, receipt, now)
    with deps.sessions.begin() as session:
        old_key = key_id_of(session.get(PendingReceipt, tip_id).sealed)
    clock.advance(hours=1, minutes=3)
    assert poller.maintain()[1] == [old_key]
    with deps.sessions.begin() as session:
        sealed = session.get(PendingReceipt, tip_id).sealed
        assert key_id_of(sealed) != old_key
        fresh = EphemeralKeys(Path(config.journal.key_dir), timedelta(hours=1))
        assert json.loads(fresh.open(sealed))["code"] == receipt.code
        assert receipts.take(session, deps, tip_id, clock.now(), force=True) == receipt


def _a_tip(deps: Deps) -> int:
    from bot.domain.receipt import new_receipt_code
    from bot.services import intake
    from bot.services.intake import NewTip

    with deps.sessions.begin() as session:
        return intake.submit(session, deps, NewTip("absence", "dingchang", None, "Town hall", "Nobody at nine"),
                             deps.keyring.receipt_hash(new_receipt_code()), deps.clock.now())


def test_key_files_are_private(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    keys = EphemeralKeys(tmp_path / "k", timedelta(minutes=5))
    token = keys.seal(b"x", datetime(2026, 3, 2, tzinfo=UTC))
    assert keys.open(token) == b"x"
    assert oct((tmp_path / "k").stat().st_mode & 0o777) == "0o700"
    assert {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "k").iterdir()} == {"0o600"}
    keys.hold(token.partition(".")[0], datetime(2026, 3, 2, 2, tzinfo=UTC))
    assert keys.destroy_unneeded(datetime(2026, 3, 2, 1, tzinfo=UTC), []) == []  # held
    assert keys.destroy_unneeded(datetime(2026, 3, 2, 2, 3, tzinfo=UTC), []) != []
    with pytest.raises(KeyGone):
        EphemeralKeys(tmp_path / "k", timedelta(minutes=5)).open(token)


# --- handled once, attempts, retries -----------------------------------------------------------
async def test_a_redelivered_update_is_handled_once(poller: DurablePoller, deps: Deps, clock: FakeClock) -> None:
    app = poller.app
    clock.advance(seconds=17.25)
    poller.journal([update(500)])
    await poller.process_pending()
    row = rows(deps)[500]  # what stays says nothing finer than the minute
    assert (row.received_at.second, row.processed_at.second, row.processed_at.microsecond) == (0, 0, 0)
    assert poller.journal([update(500)]) == []
    await poller.process_pending()
    assert [u.update_id for u in app.seen] == [500]  # type: ignore[attr-defined]


async def test_attempts_count_only_when_a_handler_failed(deps: Deps, config: Config, clock: FakeClock,
                                                         engine: Engine) -> None:
    first, _ = make_poller(deps)
    first.journal([update(600)])
    first.drop_owner_lock()  # killed before handling it
    for _ in range(4):  # four more starts, each killed after taking the entry, before its handler ran
        again, _ = make_poller(build_deps(config, clock, engine)[0])
        entries, lost = again.claim()
        assert [e.update_id for e in entries] == [600] and lost == []
        again.drop_owner_lock()
    assert rows(deps)[600].attempts == 0 and rows(deps)[600].processed_at is None
    last, app = make_poller(build_deps(config, clock, engine)[0])
    await last.process_pending()
    assert [u.update_id for u in app.seen] == [600]
    row = rows(deps)[600]
    assert row.processed_at is not None and row.attempts == 0 and last.given_up == 0


async def test_a_failed_update_is_retried_on_a_timer_then_given_up(deps: Deps, caplog: pytest.LogCaptureFixture
                                                                   ) -> None:
    poller, app = make_poller(deps)
    app.fail[700] = 99
    poller.journal([update(700)])
    await poller.process_pending()
    assert rows(deps)[700].attempts == 1 and rows(deps)[700].next_attempt_at is not None
    await poller.process_pending()  # not yet due: nothing runs, however often one looks
    assert len(app.seen) == 1
    await asyncio.sleep(0.3)
    await poller.process_pending()
    assert len(app.seen) == 2 and rows(deps)[700].attempts == 2
    with caplog.at_level(logging.ERROR, logger="bot.polling"):
        await asyncio.sleep(0.5)
        await poller.process_pending()
    row = rows(deps)[700]
    assert len(app.seen) == 3 and row.processed_at is not None and row.payload_enc is None
    assert poller.given_up == 1 and poller.failed_attempts == 3
    lines = [r.getMessage() for r in caplog.records if "given up" in r.getMessage()]
    assert lines == ["journal entry 700 given up after 3 failed attempts"]


async def test_an_error_outside_the_handlers_counts_as_a_failed_attempt(deps: Deps) -> None:
    poller, app = make_poller(deps)
    app.explode.add(800)
    poller.journal([update(800), update(801, chat_id=CHAT_ID)])
    await poller.process_pending()
    stored = rows(deps)
    assert stored[800].attempts == 1 and stored[800].processed_at is None
    assert stored[801].processed_at is not None  # the chat goes on
    assert poller.failed_attempts == 1


async def test_two_processes_never_handle_one_entry(deps: Deps, config: Config, clock: FakeClock,
                                                    database_url: str) -> None:
    writer, _ = make_poller(deps)
    writer.journal([update(1000 + i, chat_id=CHAT_ID + i % 7) for i in range(120)])
    writer.drop_owner_lock()  # the process that journaled them died
    engines = [make_engine(database_url), make_engine(database_url)]
    try:
        pollers = [make_poller(build_deps(config, clock, e)[0]) for e in engines]
        for _, app in pollers:
            app.delay = 0.005
        for _ in range(40):  # a chat held by one is left by the other: rounds until all is done
            await asyncio.gather(*(p.process_pending() for p, _ in pollers))
            if all(r.processed_at is not None for r in rows(deps).values()):
                break
        handled = [[u.update_id for u in app.seen] for _, app in pollers]
        everything = sorted(handled[0] + handled[1])
        assert everything == list(range(1000, 1120)), (len(handled[0]), len(handled[1]))
        assert all(r.processed_at is not None for r in rows(deps).values())
    finally:
        for e in engines:
            e.dispose()


async def test_a_live_process_keeps_its_entries(deps: Deps, config: Config, clock: FakeClock, engine: Engine) -> None:
    holder, _ = make_poller(deps)
    holder.journal([update(1200)])
    other, app = make_poller(build_deps(config, clock, engine)[0])
    await other.process_pending()
    assert app.seen == []  # held by a live process under its lease
    with deps.sessions.begin() as session:  # its lease runs out (e.g. another host, stalled)
        session.execute(sql_update(UpdateJournal).values(lease_until=clock.now() - timedelta(days=1)))
    await other.process_pending()
    assert [u.update_id for u in app.seen] == [1200]


# --- order and fairness -----------------------------------------------------------------------
async def test_a_chats_updates_run_one_at_a_time_in_order(deps: Deps) -> None:
    poller, app = make_poller(deps, concurrency=8)
    app.delay = 0.01
    ids = list(range(2000, 2150))
    chats = {i: CHAT_ID + (i * 7919) % 5 for i in ids}
    random.seed(7)
    for batch in (ids[:50], ids[50:100], ids[100:]):
        poller.journal([update(i, chat_id=chats[i]) for i in batch])
    await poller.process_pending()
    assert sorted(u.update_id for u in app.seen) == ids
    for chat in set(chats.values()):
        mine = [(kind, uid) for kind, c, uid in app.events if c == chat]
        starts = [uid for kind, uid in mine if kind == "start"]
        assert starts == sorted(starts), chat  # in order
        for n in range(0, len(mine), 2):  # start, end, start, end ...: never two at once
            assert mine[n][0] == "start" and mine[n + 1] == ("end", mine[n][1]), (chat, mine[n:n + 3])


async def test_one_chats_backlog_does_not_hold_the_others(deps: Deps) -> None:
    poller, app = make_poller(deps, concurrency=4)
    app.delay = 0.004
    flood = [update(3000 + i, chat_id=1) for i in range(100)]
    others = [update(3200 + i, chat_id=100 + i) for i in range(50)]
    poller.journal(flood)
    poller.journal(others)
    await poller.process_pending()
    ends = [uid for kind, _, uid in app.events if kind == "end"]
    last_other = max(ends.index(3200 + i) for i in range(50))
    flood_before = sum(1 for uid in ends[:last_other] if uid < 3200)
    # Four slots: the flood holds one of them at most, the others share the other three.
    assert flood_before <= 30, flood_before


# --- pruning ---------------------------------------------------------------------------------
async def test_prune_keeps_recent_and_unprocessed_ids(deps: Deps, clock: FakeClock, config: Config) -> None:
    poller, _ = make_poller(deps)
    hours = config.journal.keep_ids_hours
    poller.journal([update(600), update(601)])
    with deps.sessions.begin() as session:  # 601 belongs to a live process elsewhere
        session.get(UpdateJournal, 601).claimed_by = "elsewhere"
    await poller.process_pending()
    clock.advance(hours=hours // 2)
    poller.journal([update(602, chat_id=CHAT_ID + 1)])  # (601's chat waits for the process that has it)
    await poller.process_pending()
    clock.advance(hours=hours - hours // 2)
    assert poller.prune() == 0
    clock.advance(minutes=1)
    assert poller.prune() == 1
    assert set(rows(deps)) == {601, 602}
    clock.advance(days=30)
    poller.maintain()
    assert set(rows(deps)) == {601}  # never processed: never pruned
    assert offset(deps) == "603"
    row = rows(deps)[601]
    assert row.received_at.second == 0 and row.received_at.microsecond == 0


def test_sqlite_zeroes_what_it_deletes(engine: Engine) -> None:
    if is_postgres(engine):
        pytest.skip("SQLite only (PostgreSQL: the journal keys' destruction covers dead tuples)")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1


async def test_a_poller_that_keeps_dying_gives_up_so_the_process_exits(deps: Deps) -> None:
    from bot.supervise import Backoff, LoopGaveUp

    class DeadBot:
        calls = 0

        async def delete_webhook(self, **_: object) -> None:
            DeadBot.calls += 1
            raise RuntimeError("always")

    poller, app = make_poller(deps)
    app.bot = DeadBot()  # type: ignore[assignment]
    poller.restart_backoff = lambda: Backoff(base=0.001, cap=0.001)
    with pytest.raises(LoopGaveUp):
        await asyncio.wait_for(poller.run(), timeout=20)
    assert DeadBot.calls == 6  # the first run and five restarts


def test_tipline_run_exits_non_zero_when_a_loop_gave_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bot import cli
    from bot.supervise import LoopGaveUp

    async def serve(_config: object) -> None:
        raise LoopGaveUp("poller")

    monkeypatch.setattr("bot.app.serve", serve)
    monkeypatch.setattr(cli, "require_secrets", lambda _c: None)
    monkeypatch.setattr(cli.logs, "configure", lambda *_: None)
    monkeypatch.setattr(cli, "_config", lambda _args: type("C", (), {"logging": type("L", (), {"level": "INFO"})})())
    assert cli.main(["run"]) == 1


# --- one chat at a time across processes (webhook mode) -----------------------------------------
async def test_a_chat_stays_with_the_process_that_has_it(deps: Deps, config: Config, clock: FakeClock,
                                                          engine: Engine) -> None:
    first, first_app = make_poller(deps)
    second, second_app = make_poller(build_deps(config, clock, engine)[0])
    assert [e.update_id for e in first.journal([update(4000)], advance_offset=False)] == [4000]
    # The chat's next update reaches the other process: journaled, left for the first one.
    assert second.journal([update(4001), update(4100, chat_id=CHAT_ID + 1)], advance_offset=False) != []
    stored = rows(deps)
    assert stored[4001].claimed_by is None and stored[4001].chat_key == stored[4000].chat_key
    assert stored[4100].claimed_by == second.owner and stored[4100].chat_key != stored[4000].chat_key
    assert str(CHAT_ID) not in stored[4000].chat_key  # a tag, not the id
    await second.process_pending()  # its sweep leaves the first one's chat alone
    assert [u.update_id for u in second_app.seen] == [4100]
    # The first handles 4000, then takes 4001 up when it records 4000.
    outcome, following = first.finish_and_next(4000, failed=False)
    assert outcome == "done" and [e.update_id for e in following] == [4001]
    assert rows(deps)[4001].claimed_by == first.owner
    assert rows(deps)[4000].chat_key is None  # erased with the payload
    # Once the chat has nothing waiting, whichever process gets its next update has it.
    first.finish(4001, failed=False)
    assert [e.update_id for e in second.journal([update(4002)], advance_offset=False)] == [4002]


async def test_a_dead_processs_chat_goes_to_the_next_receiver_in_order(deps: Deps, config: Config,
                                                                        clock: FakeClock, engine: Engine) -> None:
    first, _ = make_poller(deps)
    second, _ = make_poller(build_deps(config, clock, engine)[0])
    first.journal([update(4200), update(4201)], advance_offset=False)
    first.drop_owner_lock()  # killed after its 200s, before handling them
    fresh = second.journal([update(4202)], advance_offset=False)
    assert [e.update_id for e in fresh] == [4200, 4201, 4202]
    assert {r.claimed_by for r in rows(deps).values()} == {second.owner}


# --- handled updates recorded together (finish_many) ----------------------------------------------
def _statements(engine: Engine) -> tuple[list[str], object]:
    from sqlalchemy import event

    seen: list[str] = []

    def count(_conn, _cursor, statement, _params, _context, _many):  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    return seen, lambda: event.remove(engine, "before_cursor_execute", count)


def test_recording_many_handled_updates_costs_a_few_statements(deps: Deps, engine: Engine) -> None:
    poller, _ = make_poller(deps)
    chats = 30
    entries = poller.journal([update(7000 + i, chat_id=CHAT_ID + i) for i in range(chats)], advance_offset=False)
    assert len(entries) == chats
    seen, stop = _statements(engine)
    try:
        answers = poller.finish_many([(7000 + i, i == 0) for i in range(chats)])
    finally:
        stop()  # type: ignore[operator]
    assert [a[0] for a in answers] == ["retry"] + ["done"] * (chats - 1)
    stored = rows(deps)
    assert stored[7000].processed_at is None and stored[7000].attempts == 1
    assert all(stored[7000 + i].processed_at is not None for i in range(1, chats))
    # One transaction: read the rows, the database's clock, one UPDATE per kind of change,
    # the chats' waiting rows; not four statements per update (PostgreSQL adds one statement
    # taking every chat's advisory lock: bot/chatorder.py).
    counted = [s for s in seen if s.strip().upper() not in ("BEGIN", "COMMIT")]
    assert len(counted) <= (7 if is_postgres(engine) else 6), counted
    assert len([s for s in seen if "pg_advisory_xact_lock" in s]) <= 1


def test_a_crash_while_recording_a_batch_loses_nothing_and_handles_nothing_twice(
        deps: Deps, config: Config, clock: FakeClock, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    first, _ = make_poller(deps)
    ids = [7100 + i for i in range(5)]
    first.journal([update(u, chat_id=CHAT_ID + i) for i, u in enumerate(ids)], advance_offset=False)
    first.finish_many([(ids[0], False)])  # an earlier batch, committed
    erase = DurablePoller._erase
    calls = {"n": 0}

    def dies_on_the_third(self: DurablePoller, row: UpdateJournal) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise SystemExit("killed while recording the batch")
        erase(self, row)

    monkeypatch.setattr(DurablePoller, "_erase", dies_on_the_third)
    with pytest.raises(SystemExit):
        first.finish_many([(u, False) for u in ids[1:]])
    monkeypatch.setattr(DurablePoller, "_erase", erase)
    first.drop_owner_lock()
    # None of the batch was recorded: the next process takes up exactly those four, not the first.
    assert [u for u, r in sorted(rows(deps).items()) if r.processed_at is None] == ids[1:]
    second, _ = make_poller(build_deps(config, clock, engine)[0])
    entries, lost = second.claim()
    assert sorted(e.update_id for e in entries) == ids[1:] and lost == []
    assert [a[0] for a in second.finish_many([(u, False) for u in ids[1:]])] == ["done"] * 4
    assert all(r.processed_at is not None for r in rows(deps).values())
    assert second.claim() == ([], [])  # nothing left to handle again


async def test_updates_finishing_together_are_recorded_together(deps: Deps) -> None:
    poller, app = make_poller(deps)
    batches: list[list[int]] = []
    original = poller.finish_many

    def spy(results: list[tuple[int, bool]]) -> list[tuple[str, list[object]]]:
        batches.append([u for u, _ in results])
        return original(results)  # type: ignore[return-value]

    poller.finish_many = spy  # type: ignore[method-assign]
    chats = 20
    poller.journal([update(7200 + i, chat_id=CHAT_ID + i) for i in range(chats)], advance_offset=False)
    await poller.process_pending()
    assert sorted(u.update_id for u in app.seen) == [7200 + i for i in range(chats)]
    assert sorted(u for b in batches for u in b) == [7200 + i for i in range(chats)]  # each once
    assert len(batches) < chats  # the ones finishing while a batch was written went together
    assert all(r.processed_at is not None for r in rows(deps).values())


def test_journaling_a_batch_reads_the_waiting_rows_once(deps: Deps, engine: Engine) -> None:
    poller, _ = make_poller(deps)
    poller.journal([update(7300, chat_id=CHAT_ID)], advance_offset=False)  # a chat with a row waiting
    seen, stop = _statements(engine)
    try:
        fresh = poller.journal([update(7301 + i, chat_id=CHAT_ID + i) for i in range(30)]
                               + [update(7331, chat_id=CHAT_ID + 1)], advance_offset=False)
    finally:
        stop()  # type: ignore[operator]
    assert [e.update_id for e in fresh] == list(range(7301, 7332))
    assert rows(deps)[7301].chat_key == rows(deps)[7300].chat_key  # the waiting row's chat found
    assert rows(deps)[7331].chat_key == rows(deps)[7302].chat_key
    reads = [s for s in seen if s.lstrip().upper().startswith("SELECT") and "update_journal" in s]
    # one read of every chat's waiting rows, and one more for the chat with a second update
    assert len(reads) == 2, reads
    # the 29 chats with one update each: one INSERT; the chat with two: one INSERT each
    inserts = [s for s in seen if s.lstrip().upper().startswith("INSERT INTO UPDATE_JOURNAL")]
    assert len(inserts) == 3, inserts
    assert len(rows(deps)) == 32


def test_a_batch_of_chats_is_locked_in_one_statement(deps: Deps, engine: Engine) -> None:
    """PostgreSQL: the advisory locks of a batch's chats are taken by one statement, in one
    order, and all held until the transaction ends (another connection cannot take one)."""
    if not is_postgres(engine):
        pytest.skip("advisory locks: PostgreSQL only (SQLite is one process per database)")
    from sqlalchemy import text as sql_text

    from bot import chatorder

    tags = [f"chat-tag-{i}" for i in range(12)]
    seen, stop = _statements(engine)
    try:
        with deps.sessions.begin() as session:
            chatorder.lock(session, tags)
            assert len([s for s in seen if "pg_advisory_xact_lock" in s]) == 1
            held = session.scalar(sql_text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                           "AND pid = pg_backend_pid() AND granted"))
            assert held == len({chatorder._number(t) for t in tags})  # noqa: SLF001
            with engine.connect() as other:
                for tag in (tags[0], tags[-1]):
                    assert other.scalar(sql_text("SELECT pg_try_advisory_lock(:ns, :n)"),
                                        {"ns": chatorder.NAMESPACE, "n": chatorder._number(tag)}) is False  # noqa: SLF001
    finally:
        stop()  # type: ignore[operator]
    with engine.connect() as other:  # released with the transaction
        n = chatorder._number(tags[0])  # noqa: SLF001
        assert other.scalar(sql_text("SELECT pg_try_advisory_lock(:ns, :n)"), {"ns": chatorder.NAMESPACE, "n": n})
        other.execute(sql_text("SELECT pg_advisory_unlock(:ns, :n)"), {"ns": chatorder.NAMESPACE, "n": n})


def test_an_update_handled_already_comes_again_beside_another_of_its_chat(deps: Deps) -> None:
    """A chat with two updates in one batch is journaled update by update; one of them,
    handled already, is found by its conflict and neither journaled nor handled again."""
    poller, _ = make_poller(deps)
    assert [e.update_id for e in poller.journal([update(7400, chat_id=CHAT_ID)], advance_offset=False)] == [7400]
    poller.finish_many([(7400, False)])
    fresh, new_ids = poller.journal_batch([update(7400, chat_id=CHAT_ID), update(7401, chat_id=CHAT_ID)],
                                          advance_offset=False)
    assert [e.update_id for e in fresh] == [7401] and new_ids == {7401}
    # and a single-update chat's redelivery, through the batch's one INSERT
    poller.finish_many([(7401, False)])
    fresh, new_ids = poller.journal_batch([update(7401, chat_id=CHAT_ID)], advance_offset=False)
    assert fresh == [] and new_ids == set()
