"""The forensic test: 210 tipsters with distinctive identities take every path a citizen
can take, with `database.echo` on; then someone with the whole data directory (database,
its -wal/-shm/-journal files, config.toml's keys), the logs and everything staff and
officials received looks for any of them. Nothing may be found.

Searched, for every tipster's id (= their private chat id), first and last name,
username and phone number:
- the raw bytes of the SQLite file and its -wal/-shm/-journal, while the bot runs and
  after it stops (ids also as the big-endian integers SQLite stores);
- every table, dumped; every `*_enc` column decrypted with the data key; every Fernet
  token found anywhere in the raw files (old page images included) decrypted with it;
- a later copy (the journal key's period over, the journal's upkeep run), while the bot
  runs and after it stops: the database files and the journal key directory. Every token
  in them, in the earlier copy, and every sealed value ever written to the database (what
  PostgreSQL's dead tuples, WAL segments and archives keep) is tried with every key in
  the copied key directory;
- the logs (echo on: every statement), and every message, caption, button, edit and
  callback answer sent to staff and officials.
Also: the times a tipster's actions stamp are whole minutes, and everything about a tip
that staff receive is protected from forwarding and saving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Engine, MetaData, Table, and_, event, inspect, select
from sqlalchemy.engine import make_url

from bot.minimal import chat_of
from tests.conftest import TEST_DATA_KEY
from tests.e2e.citizen_paths import GROUP, LEAD, STAFF_CHATS, flatten, other_paths, said, setup_staff
from tests.e2e.conftest import Harness, e2e_config
from tests.fakebot import FakeBotAPI

TIPSTERS = 210
FULL_PATHS_EVERY = 42  # every 42nd tipster also takes every other path (5 of them)
# Sealed under the journal's rotating keys (bot/sealing.py), searched with the keys a later
# copy of the key directory holds.
JOURNAL = ("update_journal.payload_enc",)
JOURNAL_SEARCHED = True
FERNET_TOKEN = re.compile(rb"gAAAAA[A-Za-z0-9_\-]{40,}={0,2}")


# What a message about a tip carries: its card, the tipster's words, an addition, an answer.
ABOUT_A_TIP = ("📥 举报 #", "窗口人员上班时间玩手机", "举报人回答了问题", "举报人补充", "大约上午九点四十")


def identity(i: int) -> dict[str, Any]:
    return {
        "id": 6_120_000_000 + i * 7_919,
        "first_name": f"Xiaoqing{i:03d}Zhou",
        "last_name": f"Wuyang{i:03d}Lin",
        "username": f"tipster_zq_{i:03d}",
        "phone": f"+86139{i:08d}"[:14],
    }


def needles(p: dict[str, Any]) -> dict[str, list[bytes]]:
    """What betrays tipster `p`, as bytes: the text forms, and the id as SQLite and
    PostgreSQL store integers (big-endian, 6 or 8 bytes)."""
    ident = int(p["id"])
    return {
        "id": [str(ident).encode(), ident.to_bytes(6, "big"), ident.to_bytes(8, "big"),
               ident.to_bytes(8, "little")],
        "first_name": [p["first_name"].encode()],
        "last_name": [p["last_name"].encode()],
        "username": [p["username"].encode()],
        "phone": [p["phone"].encode(), p["phone"][1:].encode()],
    }


def dump_database(engine: Engine) -> str:
    """Every row of every table (reflected: a table the models do not know is searched too)."""
    lines: list[str] = []
    with engine.connect() as conn:
        meta = MetaData()
        for name in inspect(conn).get_table_names():
            table = Table(name, meta, autoload_with=conn)
            for row in conn.execute(select(table)):
                lines.append(f"{name}: " + " | ".join(f"{k}={v!r}" for k, v in row._mapping.items()))
    return "\n".join(lines)


def decrypt_columns(engine: Engine, fernet: Fernet) -> tuple[dict[str, str], int]:
    """Every `*_enc` value that the data key opens, decrypted, by column (the contact
    key's column holds opted-in chats by design and is left out: see the README)."""
    out: dict[str, list[str]] = {}
    opened = 0
    with engine.connect() as conn:
        meta = MetaData()
        for name in inspect(conn).get_table_names():
            table = Table(name, meta, autoload_with=conn)
            for column in table.columns:
                if not column.name.endswith("_enc") or (name, column.name) == ("notify_contacts", "chat_enc"):
                    continue
                for (value,) in conn.execute(select(column).where(column.is_not(None))):
                    if f"{name}.{column.name}" in JOURNAL and not value.startswith("gAAAAA"):
                        continue  # sealed under the journal's own keys: searched with those
                    out.setdefault(f"{name}.{column.name}", []).append(fernet.decrypt(value.encode()).decode())
                    opened += 1
    return {k: "\n".join(v) for k, v in out.items()}, opened


def is_update(plain: str) -> bool:
    """A journalled Telegram update (as opposed to tip content, a card, ...)."""
    try:
        data = json.loads(plain)
    except ValueError:
        return False
    return isinstance(data, dict) and "update_id" in data


def fernet_lengths(longest: int) -> list[int]:
    """The lengths a Fernet token can have (57 + 16n bytes, in base64), longest first."""
    out, n = [], 0
    while (length := -(-(57 + 16 * n) // 3) * 4) <= longest:
        out.append(length)
        n += 1
    return out[::-1]


def decrypt_tokens(raw: bytes, fernet: Fernet | MultiFernet) -> tuple[str, str, int]:
    """Every Fernet token in raw bytes (live rows and old page images alike) that the key
    opens: (journalled updates, everything else, how many opened). A token may run straight
    into the next column's bytes, so each is also tried at every shorter length a token has."""
    updates, other, opened = [], [], 0
    for match in set(FERNET_TOKEN.findall(raw)):
        for token in (match, *(match[:n] for n in fernet_lengths(len(match) - 1))):
            try:
                plain = fernet.decrypt(token).decode("utf-8", "replace")
            except (InvalidToken, ValueError):
                continue  # cut off by a page boundary, or another key's
            opened += 1
            (updates if is_update(plain) else other).append(plain)
            break
    return "\n".join(updates), "\n".join(other), opened


def journal_fernet(key_dir: Path) -> MultiFernet | None:
    """Every journal key in a (copied) key directory."""
    keys = [Fernet(p.read_bytes().strip()) for p in sorted(key_dir.glob("*.key"))]
    return MultiFernet(keys) if keys else None


def journal_state(engine: Engine) -> tuple[int, list[int]]:
    """(entries not yet handled, ids of those waiting for a retry)."""
    from storage.models import UpdateJournal

    with engine.connect() as conn:
        rows = conn.execute(select(UpdateJournal.update_id, UpdateJournal.next_attempt_at)
                            .where(UpdateJournal.processed_at.is_(None))).all()
    return len(rows), [r.update_id for r in rows if r.next_attempt_at is not None]


async def outlive_the_period(h: Harness, user: dict[str, Any]) -> None:
    """A handler fails on the user's next update, and its retry is an hour away: the entry
    waits in the journal past its key's period (the failing-handler path, made certain)."""
    from storage.models import UpdateJournal

    assert h.runtime is not None
    poller = h.runtime.poller
    quick, handle = poller.cfg, poller._handle
    chat = ("chat", user["id"])

    async def failing(entry: Any) -> bool:
        return True if entry.chat == chat else await handle(entry)

    poller.cfg = quick.model_copy(update={"retry_seconds": 3600.0})
    poller._handle = failing  # type: ignore[method-assign]
    try:
        h.server.push_message(user, "/help")

        def waiting() -> bool:
            with h.runtime.engine.connect() as conn:  # type: ignore[union-attr]
                return bool(conn.scalar(select(UpdateJournal.update_id).where(
                    UpdateJournal.next_attempt_at.is_not(None), UpdateJournal.processed_at.is_(None))))

        await h.server.wait_for(waiting, timeout=30, message="the failed update waiting for its retry")
    finally:
        poller.cfg, poller._handle = quick, handle  # type: ignore[method-assign]


def waiting_chat_ids(engine: Engine, keys: Any) -> set[int]:
    """The chats of the updates still in the journal (opened with the bot's own keys)."""
    from storage.models import UpdateJournal

    with engine.connect() as conn:
        tokens = conn.scalars(select(UpdateJournal.payload_enc).where(UpdateJournal.payload_enc.is_not(None)))
        return {int(chat_of(json.loads(keys.open(t)))[1]) for t in tokens}


def copy_data(database_url: str, key_dir: Path, into: Path) -> tuple[bytes, Path]:
    """What someone copying the data directory takes: the database files (SQLite) and the
    journal key directory. Returns the database files' bytes and the copied key directory."""
    into.mkdir(parents=True)
    files = sqlite_files(database_url) if database_url.startswith("sqlite") else []
    for path in files:
        shutil.copyfile(path, into / path.name)
    keys = into / "keys"
    shutil.copytree(key_dir, keys) if key_dir.is_dir() else keys.mkdir()
    return raw_bytes([into / p.name for p in files]), keys


def record_sealed_writes(engine: Engine) -> list[str]:
    """Every string value written by any statement: what WAL segments, archives, dead
    tuples and backups may keep long after the row changed."""
    written: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            for v in flatten(parameters):
                v = getattr(v, "obj", v)  # bytes as the driver's Binary (the outbox's parts)
                if isinstance(v, bytes):
                    v = v.decode("ascii", "replace")
                if isinstance(v, str) and "gAAAAA" in v:
                    written.append(v)

    event.listen(engine, "before_cursor_execute", capture)
    return written


def sqlite_files(url: str) -> list[Path]:
    database = Path(make_url(url).database or "")
    return [p for p in (database, *(database.with_name(database.name + s) for s in ("-wal", "-shm", "-journal")))
            if p.exists()]


def raw_bytes(files: list[Path]) -> bytes:
    return b"\n".join(p.read_bytes() for p in files)


async def _tips_by_code(h: Harness, codes: list[str]) -> dict[int, int]:
    """Tip number -> index of the tipster, found the way the office cannot: by the codes."""
    from bot.services.followup import find_tip

    out = {}
    with h.deps.sessions.begin() as session:
        for i, code in enumerate(codes):
            tip = find_tip(session, h.deps.keyring.receipt_hash(code.replace(" ", "")))
            assert tip is not None
            out[tip.id] = i
    return out


async def test_forensics_find_no_tipster(echo_harness: Harness, database_url: str, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)  # echo's level: every statement
    h = echo_harness
    assert h.runtime is not None
    ever_written = record_sealed_writes(h.runtime.engine)
    srv = h.server
    staff = await setup_staff(h)
    lead = staff["lead"]
    people = [identity(i) for i in range(TIPSTERS)]
    users = [srv.user(p["id"], p["first_name"], username=p["username"], last_name=p["last_name"])
             for p in people]

    async def one(i: int, user: dict[str, Any]) -> str:
        if i % 10 == 0:  # some share their contact card by mistake: refused, not kept
            srv.push_message(user, contact={"phone_number": people[i]["phone"], "first_name": user["first_name"],
                                            "last_name": user["last_name"], "user_id": user["id"]})
            await h.expect(user["id"], "不支持", after=0)
        code = await h.report(user, evidence=1 if i % 7 == 0 else 0, notify=i % 4 == 0,
                              text=f"第{i}号举报：窗口人员上班时间玩手机，群众等了半小时。")
        if i % 4 == 1:
            await said(h, user, "/help")
        if i % 6 == 2:
            await said(h, user, f"{i:04d} 0000 1111 2222")  # a wrong code
        if i % 5 == 0:
            await h.say(user, code, expect="举报 #")  # the right one: the timeline
        return code

    codes = []
    for start in range(0, TIPSTERS, 15):  # tipsters act concurrently, as they would
        batch = list(enumerate(users))[start : start + 15]
        codes += await asyncio.gather(*(one(i, u) for i, u in batch))
    assert len(set(codes)) == TIPSTERS
    await srv.wait_for(lambda: len([r for r in srv.sent_to(GROUP) if "举报 #" in (r.get("plain_text") or "")])
                       >= TIPSTERS, timeout=60)

    # The lead acknowledges three tips and asks their tipsters a question; they answer.
    cards = {n: next(r for r in srv.sent_to(GROUP) if (r.get("plain_text") or "").startswith(f"📥 举报 #{n}\n"))
             for n in (1, 2, 5)}
    for n, card in cards.items():
        srv.press(lead, card, "签收")
        await srv.wait_for(lambda card=card: "询问举报人" in str(srv.message(GROUP, card["message_id"])["reply_markup"]))
        srv.press(lead, srv.message(GROUP, card["message_id"]), "询问举报人")
        await h.expect(LEAD, "请输入要问举报人的问题")
        await h.say(lead, f"第{n}号举报：请问具体是几点？", expect="问题已记录")
    by_tip = await _tips_by_code(h, codes)
    for n in cards:
        i = by_tip[n]
        user = users[i]
        timeline = await h.say(user, codes[i], expect="督查组的问题")
        await h.press(user, timeline, "回答", expect="回答")
        await h.say(user, "大约上午九点四十。", expect="文字 1 条")
        await h.press(user, await h.expect_button(user["id"], "发送给督查组"), "发送给督查组", expect="已送达")
        await h.expect(GROUP, f"举报 #{n}：举报人回答了问题")
    # Every 7th tipster takes every other path too; one of them meets a failing handler.
    full = [i for i in range(TIPSTERS) if i % FULL_PATHS_EVERY == 0]
    await other_paths(h, users[full[0]], codes[full[0]], fail_once=True)
    for start in range(1, len(full), 10):
        await asyncio.gather(*(other_paths(h, users[i], codes[i]) for i in full[start : start + 10]))
    await srv.wait_for(lambda: sum("有新进展" in (r.get("plain_text") or "") for r in srv.sent) >= 1)
    for i, user in enumerate(users):  # everyone else blocks the bot as well
        if i % FULL_PATHS_EVERY:
            srv.push_raw({"my_chat_member": {
                "chat": {"id": user["id"], "type": "private", "first_name": user["first_name"]},
                "from": user, "date": 1_790_000_000,
                "old_chat_member": {"status": "member", "user": srv.bot_user},
                "new_chat_member": {"status": "kicked", "user": srv.bot_user, "until_date": 0}}})
    await h.say(lead, "/help", expect="")  # after the blocks: all processed

    assert h.runtime is not None
    engine = h.runtime.engine
    sqlite = engine.dialect.name == "sqlite"
    fernet = Fernet(TEST_DATA_KEY)
    running_raw = raw_bytes(sqlite_files(database_url)) if sqlite else b""
    database = dump_database(engine)
    decrypted, opened = decrypt_columns(engine, fernet)
    minute_checks = _minute_stamped(engine)
    # Later copies: the journal key's period is over and the journal's upkeep has run.
    # Stage A: updates still wait for their retry (the failing handler's, and any other a
    # loaded machine made fail); their tipsters are the one thing the keys on disk may open.
    # Stage B: they have been handled, another period is over: nothing opens.
    from storage.models import UpdateJournal

    key_dir = Path(h.config.journal.key_dir)
    poller = h.runtime.poller
    waiting_user = users[full[0]]
    await outlive_the_period(h, waiting_user)
    await srv.wait_for(lambda: (lambda n, w: n == len(w) >= 1)(*journal_state(engine)), timeout=60,
                       message="the journal handled, but for the updates waiting for their retry")
    waiting_chats = waiting_chat_ids(engine, poller.keys)
    assert waiting_user["id"] in waiting_chats
    sealed_anywhere = [running_raw, database.encode()]
    copies: dict[str, Path] = {}
    for stage in ("A", "B"):
        for _ in range(h.config.journal.max_attempts):
            if stage == "A" or journal_state(engine)[0] == 0:
                break
            # The retry's time comes (the database's clock, not the injected one).
            with engine.begin() as conn:
                conn.execute(UpdateJournal.__table__.update().values(next_attempt_at=None))
            await srv.wait_for(lambda: (lambda n, w: n == len(w))(*journal_state(engine)), timeout=60,
                               message="the retries handled")
        assert stage == "A" or journal_state(engine)[0] == 0
        h.clock.advance(minutes=h.config.journal.key_rotate_minutes + 3)  # past the period and its grace
        before = set(key_dir.glob("*.key"))
        await asyncio.to_thread(h.runtime.poller.maintain)
        if stage == "B":  # the search below is about keys that really went
            assert before and not before & set(key_dir.glob("*.key"))
        raw, copies[f"{stage}, while running"] = copy_data(database_url, key_dir, tmp_path / f"{stage}-running")
        sealed_anywhere += [raw, dump_database(engine).encode()]
    await h.stop()  # and after it stops
    stopped_raw = raw_bytes(sqlite_files(database_url)) if sqlite else b""
    raw, copies["B, stopped"] = copy_data(database_url, key_dir, tmp_path / "B-stopped")
    sealed_anywhere += [stopped_raw, raw]
    raw_updates, raw_text, raw_opened = decrypt_tokens(running_raw + stopped_raw, fernet)
    # Everything sealed, wherever a copy may hold it (raw files, tables, every value ever
    # written: WAL archives, dead tuples), tried with every key each later copy holds.
    assert len(ever_written) > TIPSTERS
    everything_sealed = b"\n".join(sealed_anywhere) + "\n".join(ever_written).encode()
    journal_texts: dict[str, str] = {}
    for stage, keys in copies.items():
        journal_keys = journal_fernet(keys)
        if journal_keys is not None:
            updates, other, _ = decrypt_tokens(everything_sealed, journal_keys)
            journal_texts[stage] = updates + "\n" + other

    to_staff_records = [r for r in srv.sent if r["chat_id"] in STAFF_CHATS]
    to_staff = json.dumps(to_staff_records, ensure_ascii=False, default=str)
    to_staff += json.dumps([e for e in srv.edits if e.get("chat_id") in STAFF_CHATS], ensure_ascii=False,
                           default=str)
    to_staff += json.dumps(srv.callback_answers, ensure_ascii=False, default=str)
    logs = caplog.text
    # The haystacks are real.
    assert "举报 #" in to_staff and "tips:" in database and opened > TIPSTERS and "SELECT" in logs
    assert "窗口人员上班时间玩手机" in decrypted["tips.text_enc"]
    if sqlite:
        assert running_raw and stopped_raw and raw_opened > TIPSTERS

    haystacks: dict[str, bytes] = {
        "database dump": database.encode(),
        **{f"decrypted {column}": text.encode() for column, text in decrypted.items() if column not in JOURNAL},
        "logs": logs.encode(),
        "staff messages": to_staff.encode(),
        "staff messages (escaped)": to_staff.encode("unicode_escape"),
        "raw database files": b"\n".join(sealed_anywhere),
        "tokens in raw files, decrypted": raw_text.encode(),
    }
    if JOURNAL_SEARCHED:
        haystacks["journal payloads decrypted with the data key"] = (raw_updates + "\n".join(
            decrypted.get(c, "") for c in JOURNAL)).encode()
        for stage, text in journal_texts.items():
            haystacks[f"everything sealed, opened with the journal keys of copy {stage}"] = text.encode()
    leaks, still_needed = [], []
    for p in people:
        for key, forms in needles(p).items():
            for form in forms:
                text_form = len(form) > 8 or key != "id"
                for name, haystack in haystacks.items():
                    if not text_form and name not in ("raw database files",):
                        continue  # binary forms of the id only in the raw files
                    if form in haystack:
                        leak = f"{key} {form!r} in {name}"
                        # An update waiting for its retry still opens in stage A: it is needed.
                        needed = name.endswith("copy A, while running") and p["id"] in waiting_chats
                        (still_needed if needed else leaks).append(leak)
    assert any(str(people[full[0]]["id"]) in leak for leak in still_needed)  # the search finds what is there
    assert not leaks, leaks[:10]
    for code in codes:  # and no receipt code in clear either
        digits = code.replace(" ", "")
        assert digits not in database and code not in database and digits.encode() not in running_raw

    # Times a tipster's action stamps: whole minutes.
    assert minute_checks["rows"] > TIPSTERS
    assert not minute_checks["exact"], minute_checks["exact"][:5]
    # Everything about a tip that staff received is protected (no forwarding, no saving).
    about_tips = [r for r in to_staff_records if r["chat_id"] in (GROUP, LEAD) and (
        r["method"] != "sendMessage" or any(mark in (r.get("plain_text") or "") for mark in ABOUT_A_TIP))]
    assert len(about_tips) > TIPSTERS
    unprotected = [(r["method"], (r.get("plain_text") or "")[:60]) for r in about_tips if not r["protect_content"]]
    assert not unprotected, unprotected[:5]


TIPSTERS_MESSAGES = ("card", "card_text", "evidence", "addition")  # queued by a tipster's action


def _minute_stamped(engine: Engine) -> dict[str, Any]:
    """Every time a tipster's action stamped (tips received, evidence, additions, answers,
    opt-ins, their events and the messages they queued) and whether it is a whole minute."""
    from storage.models import Evidence, NotifyContact, OutboxMessage, Question, Tip, TipAddition, TipEvent

    checks = [
        (Tip.created_at, None), (Tip.routed_at, None), (Evidence.added_at, None), (TipAddition.added_at, None),
        (Question.answered_at, None), (NotifyContact.created_at, None),
        (TipEvent.at, TipEvent.kind.in_(("received", "routed", "info_added", "answered"))),
        (OutboxMessage.created_at, OutboxMessage.purpose.in_(TIPSTERS_MESSAGES)),
        # and when what was about their tip reached staff (seconds after they sent it)
        (OutboxMessage.sent_at, OutboxMessage.tip_id.is_not(None)),
        (OutboxMessage.next_attempt_at, and_(OutboxMessage.purpose.in_(TIPSTERS_MESSAGES),
                                             OutboxMessage.status == "sent")),
    ]
    exact, rows = [], 0
    with engine.connect() as conn:
        for column, where in checks:
            query = select(column).where(column.is_not(None))
            if where is not None:
                query = query.where(where)
            for (value,) in conn.execute(query):
                rows += 1
                if value.second or value.microsecond:
                    exact.append(f"{column}: {value}")
    return {"rows": rows, "exact": exact}


def test_needles_are_found_where_they_are() -> None:
    """The search is real: a planted identity is found in each kind of haystack."""
    p = identity(3)
    planted = b"row " + int(p["id"]).to_bytes(6, "big") + b" " + p["username"].encode()
    assert any(form in planted for form in needles(p)["id"])
    assert any(form in planted for form in needles(p)["username"])
    fernet = Fernet(TEST_DATA_KEY)
    raw = b"\x00\x01" + fernet.encrypt(p["first_name"].encode()) + b"\x00"
    updates, text, opened = decrypt_tokens(raw, fernet)
    assert opened == 1 and p["first_name"] in text and not updates
    assert list(flatten({"a": [1, (2, "x")]})) == [1, 2, "x"]


async def test_the_journal_upkeep_runs_by_itself(database_url: str, server: FakeBotAPI) -> None:
    """Nobody calls maintain(): the bot's own job destroys the expired key and prunes the
    handled ids (the journal is not only pruned by tests)."""
    from storage.models import UpdateJournal

    h = Harness(server, e2e_config(database_url, server, journal={"maintenance_seconds": 0.5, "keep_ids_hours": 1}))
    await h.start()
    try:
        assert h.runtime is not None
        engine = h.runtime.engine
        await said(h, server.user(identity(1)["id"], "A"), "/help")
        key_dir = Path(h.config.journal.key_dir)
        keys = set(key_dir.glob("*.key"))
        assert keys

        def ids() -> int:
            with engine.connect() as conn:
                return len(conn.execute(select(UpdateJournal.update_id)).all())

        await server.wait_for(lambda: journal_state(engine)[0] == 0 and ids(), message="the update handled")
        h.clock.advance(hours=2, minutes=3)
        await server.wait_for(lambda: not keys & set(key_dir.glob("*.key")) and ids() == 0, timeout=15,
                              message="the expired key destroyed and the handled ids pruned by the job")
    finally:
        await h.stop()
