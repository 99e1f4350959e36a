"""Province scale: the bulletin draft rendered once per language (not per office member);
the export streamed, its audit entries written in batches."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, Text, event, func, select, text

from bot.clock import FakeClock
from bot.deps import Deps
from bot.services import bulletins, schedule
from storage.models import OutboxMessage
from storage.models_officials import Bulletin
from tests.officials_data import add_person, local, verified_case

from .conftest import is_postgres, payload


def test_the_bulletin_draft_is_rendered_and_split_once_per_language(deps: Deps, clock: FakeClock,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    clock.set(local(2026, 11, 3, 8))
    with deps.sessions.begin() as s:
        office = [add_person(s, deps, 6100 + i, f"Office {i}", "office", lang="en" if i < 2 else "zh-CN").id
                  for i in range(5)]
        for i in range(60):  # long enough to need several messages
            verified_case(s, deps, office[0], at=local(2026, 11, 2, 10, i % 60), name=f"某{i:03d}" * 8,
                          post="岗位" * 20)
    calls: list[str] = []
    real_split = bulletins.split_html
    monkeypatch.setattr(bulletins, "split_html", lambda html: calls.append(html) or real_split(html))
    clock.set(local(2026, 11, 3, 9, 1))
    assert schedule.run_due(deps)[-1] == ("bulletin", "2026-11-03", "bulletin 1 draft (new)")
    assert len(calls) == 2  # en and zh-CN, whatever the number of office members
    with deps.sessions.begin() as s:
        b = s.scalar(select(Bulletin))
        assert len(json.loads(b.breach_ids)) == 60
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.purpose == "bulletin_draft")
                         .order_by(OutboxMessage.id)).all()
        by_chat: dict[int, list[dict]] = {}
        for r in rows:
            by_chat.setdefault(r.chat_id, []).append(payload(deps, r))
        assert sorted(by_chat) == [6100 + i for i in range(5)]
        parts = {len(p) for p in by_chat.values()}
        assert min(parts) > 1
        for chat, items in by_chat.items():  # every member gets all the parts, buttons on the last
            assert [p["buttons"] is not None for p in items] == [False] * (len(items) - 1) + [True]
            assert "某059" * 8 in "".join(p["text"] for p in items)
        assert by_chat[6100] == by_chat[6101] and by_chat[6102] == by_chat[6104]
        assert s.scalar(select(func.count()).select_from(Bulletin)) == 1
        bulletins.send_draft(s, deps, clock.now(), b)  # the same revision again: nothing more queued
        assert s.scalar(select(func.count()).select_from(OutboxMessage)
                        .where(OutboxMessage.purpose == "bulletin_draft")) == len(rows)


def test_export_with_content_keeps_nothing_per_row(deps: Deps, clock: FakeClock) -> None:
    """Batches go out as they are read; each batch's audit entries are one INSERT that the
    session does not hold (a million of them were 2.5 GB of ORM objects)."""
    import io

    from bot.services import audit, export
    from storage.models import AuditEntry
    from tests.officials_data import add_tip

    with deps.sessions.begin() as s:
        for i in range(23):
            add_tip(s, deps, category="absence", unit="land", team=1, created=local(2026, 11, 1, 10, i),
                    ack_due=local(2026, 11, 1, 14))
    sizes: list[int] = []
    with deps.sessions.begin() as s:
        s.expunge_all()
        now = clock.now()

        def record(ids: list[int]) -> None:
            sizes.append(len(ids))
            audit.record_many(s, staff_id=None, tip_ids=ids, action="exported", detail="cli, with content", at=now)
            assert not s.new and len(s.identity_map) == 0

        buffer = io.BytesIO()
        result = export.export(s, deps, buffer, fmt="csv", with_content=True, batch_size=5, on_batch=record)
    assert result.tips == 23 and sizes == [5, 5, 5, 5, 3]
    assert buffer.getvalue().count(b"\r\n") == 24
    with deps.sessions.begin() as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "exported")) == 23


def test_export_csv_guards_every_typed_column(deps: Deps, clock: FakeClock) -> None:
    """Only typed columns are checked for a formula (the rest are keys and names made safe
    once): a staff member's name and a person named in an outcome are typed."""
    import csv
    import io

    from bot.services import export
    from storage.models import Outcome
    from tests.officials_data import add_tip

    clock.set(local(2026, 11, 2, 9))
    with deps.sessions.begin() as s:
        lead = add_person(s, deps, 6200, "=HYPERLINK(1)", "lead", team=1)
        tip = add_tip(s, deps, category="absence", unit="land", team=1, created=local(2026, 11, 1, 10, 7),
                      ack_due=local(2026, 11, 1, 14), acked=local(2026, 11, 1, 11), by=lead.id)
        s.add(Outcome(tip_id=tip.id, outcome="verified", unit_key="land", person_name="-2+3", person_post="@cmd",
                      breach_category="absence", recorded_by=lead.id, recorded_at=local(2026, 11, 1, 12, 59)))
    buffer = io.BytesIO()
    with deps.sessions.begin() as s:
        export.export(s, deps, buffer, fmt="csv")
    header, line = list(csv.reader(io.StringIO(buffer.getvalue().decode("utf-8-sig"))))
    row = dict(zip(header, line))
    assert (row["acknowledged_by"], row["person"], row["post"]) == ("'=HYPERLINK(1)", "'-2+3", "'@cmd")
    assert (row["received"], row["acknowledged_at"], row["outcome_recorded_at"], row["ack_met"]) == (
        "2026-11-01 10:07", "2026-11-01 11:00", "2026-11-01 12:59", "yes")


def test_a_draft_to_several_members_is_one_insert_with_each_part_once(deps: Deps, clock: FakeClock,
                                                                       engine: Engine) -> None:
    """The same parts go to every office member: on PostgreSQL the outbox rows are one
    statement carrying each part's ciphertext once (row by row, 900 copies of 13 kB were
    most of a big draft's time); on SQLite one executemany. Ids follow the given order."""
    clock.set(local(2026, 11, 3, 8))
    with deps.sessions.begin() as s:
        office = [add_person(s, deps, 6300 + i, f"Office {i}", "office").id for i in range(5)]
        for i in range(40):
            verified_case(s, deps, office[0], at=local(2026, 11, 2, 10, i), name=f"某{i:03d}" * 8, post="岗位" * 20)
        b = bulletins.compile_draft(s, deps, clock.now(), "2026-11-03")[1]
    inserts: list[tuple[Any, bool]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT INTO OUTBOX"):
            inserts.append((parameters, executemany))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with deps.sessions.begin() as s:
            queued = bulletins.send_draft(s, deps, clock.now(), s.merge(b))
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    with deps.sessions.begin() as s:
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.purpose == "bulletin_draft")
                         .order_by(OutboxMessage.id)).all()
        parts = len(rows) // 5
        assert queued == len(rows) == 5 * parts and parts > 1
        # in the order queued: each member's parts in turn, ids increasing
        assert [(r.chat_id, r.dedupe_key.rsplit(":", 1)[1]) for r in rows] == [
            (6300 + m, str(i)) for m in range(5) for i in range(parts)]
        stored = {r.payload_enc for r in rows}
        assert len(stored) == parts  # encrypted once per part
        assert all(payload(deps, r)["text"] for r in rows)
        assert [r.ready_at is not None for r in rows] == ([True] + [False] * (parts - 1)) * 5
    if is_postgres(engine):
        assert len(inserts) == 1 and not inserts[0][1]
        params = inserts[0][0]
        assert len(params["starts"]) == parts and len(params["keys"]) == 5 * parts
        # each part's ciphertext once, as one bytes value (sent as it is, not quoted item by item)
        raw = getattr(params["payloads"], "obj", params["payloads"])  # the driver's Binary wraps it
        assert isinstance(raw, bytes)
        assert len(raw) == sum(len(p) for p in stored) == sum(params["lengths"])
    else:
        assert len(inserts) == 1 and inserts[0][1]


def _ciphertext_columns() -> list[tuple[str, str]]:
    """Every column of the models that holds a Fernet token: `*_enc` and `sealed`."""
    from storage.models import Base

    found = [(t.name, c.name) for t in Base.metadata.sorted_tables for c in t.columns
             if c.name.endswith("_enc") or c.name == "sealed"]
    assert all(isinstance(Base.metadata.tables[t].c[c].type, Text) for t, c in found)
    return sorted(found)


def test_ciphertext_is_stored_uncompressed_on_postgres(engine: Engine) -> None:
    """Ciphertext does not compress: pglz's attempt on every value over 2 kB was most of
    the time of queueing a big draft (migration 0013d, the outbox), and costs the same on a
    long tip's text, its journal row and its conversation (0014c, the others). Clear
    columns that compress keep the default."""
    if not is_postgres(engine):
        pytest.skip("a PostgreSQL storage setting")
    wanted = _ciphertext_columns()
    assert ("outbox", "payload_enc") in wanted and ("tips", "text_enc") in wanted
    assert ("update_journal", "payload_enc") in wanted and ("conversations", "sealed") in wanted
    with engine.connect() as conn:
        storage = {(t, c): s for t, c, s in conn.execute(text(
            "SELECT a.attrelid::regclass::text, a.attname, a.attstorage FROM pg_attribute a "
            "JOIN pg_class k ON k.oid = a.attrelid JOIN pg_namespace n ON n.oid = k.relnamespace "
            "WHERE n.nspname = current_schema() AND k.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped"))}
    assert {col: storage[col] for col in wanted} == {col: "e" for col in wanted}  # EXTERNAL: never compressed
    assert storage[("blobs", "content")] == "x"  # a document in clear: EXTENDED, compressed


def test_the_draft_is_built_with_the_collector_paused(deps: Deps, clock: FakeClock,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten thousand cases are short-lived objects without cycles: the cyclic collector is
    paused while they are made (it was half of reading them) and back on after."""
    import gc

    clock.set(local(2026, 11, 3, 8))
    with deps.sessions.begin() as s:
        office = add_person(s, deps, 6400, "Office", "office").id
        verified_case(s, deps, office, at=local(2026, 11, 2, 10), name="某人", post="岗位")
        b = bulletins.compile_draft(s, deps, clock.now(), "2026-11-03")[1]
    seen: list[bool] = []
    real = bulletins.case_lines
    monkeypatch.setattr(bulletins, "case_lines", lambda *a: seen.append(gc.isenabled()) or real(*a))
    assert gc.isenabled()
    with deps.sessions.begin() as s:
        assert bulletins.send_draft(s, deps, clock.now(), s.merge(b)) >= 1
    assert seen == [False] and gc.isenabled()
