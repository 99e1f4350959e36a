"""The audit trail: who did what to which tip, and when; recorded in the action's transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, func, select

from bot.clock import FakeClock
from bot.deps import Deps
from bot.domain.receipt import new_receipt_code
from bot.services import audit, entry, intake, staff
from bot.services.intake import NewTip
from storage.models import AuditEntry, Staff

from .conftest import add_group, add_lead

TEXT = "窗口工作人员九点半还没有到岗，群众排队等了很久。"


def submit(deps: Deps, channel: str = "telegram") -> int:
    with deps.sessions.begin() as session:
        return intake.submit(session, deps, NewTip("absence", "dingchang", None, "大厅", TEXT, channel=channel),
                             deps.keyring.receipt_hash(new_receipt_code()), deps.clock.now())


def test_record_and_trail_in_order_with_names(deps: Deps, clock: FakeClock) -> None:
    tip_id = submit(deps)
    with deps.sessions.begin() as session:
        add_lead(session, deps, 1, 801, "Lead Zhao", lang="zh-CN")
        lead = session.scalar(select(Staff).where(Staff.telegram_user_id == 801))
        assert lead is not None
        later = clock.now() + timedelta(minutes=5)
        audit.record(session, staff_id=lead.id, tip_id=tip_id, action="asked", detail="a question", at=later)
        audit.record(session, staff_id=None, tip_id=tip_id, action="viewed_audit", detail="cli", at=clock.now())
        audit.record(session, staff_id=None, tip_id=None, action="exported", detail="cli", at=clock.now())
    with deps.sessions.begin() as session:
        trail = audit.trail(session, tip_id)
    assert [(e.at, e.who, e.action, e.detail) for e in trail] == [
        (clock.now(), "cli", "viewed_audit", "cli"),
        (clock.now() + timedelta(minutes=5), "Lead Zhao (lead)", "asked", "a question"),
    ]


def test_record_never_commits_on_its_own(deps: Deps) -> None:
    tip_id = submit(deps)
    with pytest.raises(RuntimeError), deps.sessions.begin() as session:
        audit.record(session, staff_id=None, tip_id=tip_id, action="viewed_audit", detail="cli", at=deps.clock.now())
        session.flush()
        raise RuntimeError("the action failed")
    with deps.sessions.begin() as session:
        assert session.scalar(select(func.count(AuditEntry.id))) == 0


def test_record_checks_its_arguments_and_shortens_long_details(deps: Deps) -> None:
    tip_id = submit(deps)
    with deps.sessions.begin() as session:
        with pytest.raises(ValueError):
            audit.record(session, staff_id=None, tip_id=tip_id, action="x" * 33, detail=None, at=deps.clock.now())
        with pytest.raises(ValueError):
            audit.record(session, staff_id=None, tip_id=tip_id, action="viewed", detail=None,
                         at=datetime(2026, 3, 2, 9, 0))
        audit.record(session, staff_id=None, tip_id=tip_id, action="viewed", detail="字" * 600, at=deps.clock.now())
    with deps.sessions.begin() as session:
        detail = session.scalar(select(AuditEntry.detail))
        assert detail is not None and len(detail) == 512 and detail.endswith("…")


def test_record_many_checks_its_arguments_and_shortens_long_details(deps: Deps) -> None:
    tip_ids = [submit(deps), submit(deps)]
    with deps.sessions.begin() as session:
        with pytest.raises(ValueError):
            audit.record_many(session, staff_id=None, tip_ids=tip_ids, action="x" * 33, detail=None,
                              at=deps.clock.now())
        with pytest.raises(ValueError):
            audit.record_many(session, staff_id=None, tip_ids=tip_ids, action="", detail=None, at=deps.clock.now())
        with pytest.raises(ValueError):
            audit.record_many(session, staff_id=None, tip_ids=tip_ids, action="exported", detail=None,
                              at=datetime(2026, 3, 2, 9, 0))
        audit.record_many(session, staff_id=None, tip_ids=tip_ids, action="exported", detail="字" * 600,
                          at=deps.clock.now())
    with deps.sessions.begin() as session:
        rows = session.execute(select(AuditEntry.tip_id, AuditEntry.detail).order_by(AuditEntry.tip_id)).all()
    assert [r.tip_id for r in rows] == sorted(tip_ids)
    assert all(r.detail is not None and len(r.detail) == 512 and r.detail.endswith("…") for r in rows)


def test_record_many_is_one_statement_and_on_postgresql_one_array_of_ids(deps: Deps) -> None:
    """An export with content writes an entry per tip, batch by batch: each batch is one
    statement; on PostgreSQL the ids go as one array, not a row of parameters per tip."""
    tip_ids = [submit(deps) for _ in range(3)]
    seen: list[tuple[str, bool, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if "audit_log" in statement:
            seen.append((statement, executemany, parameters))

    engine = deps.sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", record)
    try:
        with deps.sessions.begin() as session:
            audit.record_many(session, staff_id=None, tip_ids=tip_ids, action="exported", detail="cli",
                              at=deps.clock.now())
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(seen) == 1
    if engine.dialect.name == "postgresql":
        statement, executemany, parameters = seen[0]
        assert not executemany and "unnest" in statement
        assert sorted(v for v in dict(parameters).values() if isinstance(v, list)) == [sorted(tip_ids)]  # type: ignore[arg-type]
    with deps.sessions.begin() as session:
        rows = session.execute(select(AuditEntry.tip_id, AuditEntry.at, AuditEntry.action, AuditEntry.staff_id)
                               .order_by(AuditEntry.tip_id)).all()
    assert [r.tip_id for r in rows] == sorted(tip_ids)
    assert {(r.at, r.action, r.staff_id) for r in rows} == {(deps.clock.now(), "exported", None)}


def test_join_bind_acknowledge_and_entry_are_audited(deps: Deps, clock: FakeClock) -> None:
    with deps.sessions.begin() as session:
        add_lead(session, deps, 1, 811, "Lead Qian", lang="zh-CN")
        add_lead(session, deps, 0, 812, "Office Sun", lang="zh-CN", role="office")
    with deps.sessions.begin() as session:
        add_group(session, deps, 1, -100811)  # add_group binds without naming who
        code = staff.create_invite(session, deps.keyring, clock.now(), kind="group", role=None, team_number=2)
        session.flush()
        assert staff.bind_group(session, deps, code, -100812, "team 2", clock.now(),
                                by_user_id=812).status is staff.JoinStatus.BOUND
    clock.advance(minutes=1)
    with deps.sessions.begin() as session:
        office = entry.office_member(session, 812)
        assert office is not None
        tip_id = entry.enter(session, deps, NewTip("absence", "dingchang", None, "大厅", TEXT, channel="mail"),
                             deps.keyring.receipt_hash(new_receipt_code()), clock.now(), staff=office, via="bot")
    clock.advance(minutes=10)
    with deps.sessions.begin() as session:
        assert staff.acknowledge(session, deps, tip_id, 811, clock.now()).status is staff.AckStatus.ACKNOWLEDGED
        # a refused press is not an action on the tip
        assert staff.acknowledge(session, deps, tip_id, 812, clock.now()).status is staff.AckStatus.ALREADY
    with deps.sessions.begin() as session:
        ids = dict(session.execute(select(Staff.telegram_user_id, Staff.id)).all())
        rows = session.execute(select(AuditEntry.staff_id, AuditEntry.tip_id, AuditEntry.action, AuditEntry.detail,
                                      AuditEntry.at).order_by(AuditEntry.id)).all()
        trail = audit.trail(session, tip_id)
    start = clock.now() - timedelta(minutes=11)
    assert [tuple(r) for r in rows] == [
        (ids[811], None, "joined", "role=lead team=1", start),
        (ids[812], None, "joined", "role=office team=None", start),
        (None, None, "bound", "team=1 chat=-100811", start),
        (ids[812], None, "bound", "team=2 chat=-100812", start),
        (ids[812], tip_id, "entered", "bot; channel=mail", start + timedelta(minutes=1)),
        (ids[811], tip_id, "acknowledged", None, start + timedelta(minutes=11)),
    ]
    assert [(e.who, e.action) for e in trail] == [("Office Sun (office)", "entered"),
                                                 ("Lead Qian (lead)", "acknowledged")]
    assert trail[0].at.tzinfo is not None and trail[0].at == datetime(2026, 3, 2, 1, 31, tzinfo=UTC)


def test_entry_refuses_what_the_bot_refuses_and_non_office_staff(deps: Deps) -> None:
    with deps.sessions.begin() as session:
        add_lead(session, deps, 1, 821, "Lead Li")
    with deps.sessions.begin() as session:
        lead = session.scalar(select(Staff))
        digest = deps.keyring.receipt_hash(new_receipt_code())
        with pytest.raises(ValueError, match="channel"):
            entry.enter(session, deps, NewTip("absence", "dingchang", None, "大厅", TEXT, channel="telegram"), digest,
                        deps.clock.now(), staff=None, via="cli")
        with pytest.raises(ValueError, match="text: too short"):
            entry.enter(session, deps, NewTip("absence", "dingchang", None, "大厅", "短", channel="phone"), digest,
                        deps.clock.now(), staff=None, via="cli")
        with pytest.raises(PermissionError):
            entry.enter(session, deps, NewTip("absence", "dingchang", None, "大厅", TEXT, channel="phone"), digest,
                        deps.clock.now(), staff=lead, via="bot")
        assert entry.office_member(session, 821) is None


def test_check_names_every_bad_field(deps: Deps) -> None:
    cfg = deps.config.intake
    problems = entry.check(deps.config, channel="fax", category="nope", unit="other", unit_other=None,
                           place="p" * (cfg.place_max_chars + 1), text="t" * (cfg.text_max_chars + 1), evidence=99)
    assert [p.field for p in problems] == ["channel", "category", "unit_other", "place", "text", "evidence"]
    assert entry.check(deps.config, channel="phone", category="absence", unit="land", unit_other="x", place="p",
                       text=TEXT)[0].field == "unit_other"
    assert entry.check(deps.config, channel="mail", category="absence", unit="other", unit_other="某中心",
                       place="p", text=TEXT) == []
