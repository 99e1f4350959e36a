"""Officials on a real database: summary figures against a hand-built data set, scheduled
runs once, bulletin numbering and publishing, broadcasts and their progress."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError

from bot.clock import FakeClock
from bot.deps import Deps
from bot.services import broadcast, bulletins, officials, schedule
from bot.services.summary import ActionRow, Count, TeamRow, compute
from storage.models import Breach, OutboxMessage
from storage.models_officials import Bulletin, ScheduledRun
from tests.officials_data import (
    add_action,
    add_breach,
    add_outcome,
    add_person,
    add_step,
    add_tip,
    local,
    verified_case,
)

from .conftest import is_postgres, payload


def hand_built(deps: Deps) -> None:
    """The data set of the summary for 2026-11-20 (18:00 local; 'today' is from 11-19 18:00)."""
    with deps.sessions.begin() as s:
        lead = add_person(s, deps, 9001, "Lead", "lead", team=1).id
        t1 = add_tip(s, deps, category="absence", unit="dingchang", team=1, created=local(2026, 11, 20, 9),
                     ack_due=local(2026, 11, 20, 13), acked=local(2026, 11, 20, 12), by=lead,
                     outcome_due=local(2026, 11, 23))
        t2 = add_tip(s, deps, category="absence", unit="guocun", team=1, created=local(2026, 11, 20, 10),
                     ack_due=local(2026, 11, 20, 14), outcome_due=local(2026, 11, 23))
        t3 = add_tip(s, deps, category="public-dining", unit="land", team=7, created=local(2026, 11, 18, 10),
                     ack_due=local(2026, 11, 18, 14), acked=local(2026, 11, 18, 15), by=lead,
                     outcome_due=local(2026, 11, 19, 10))
        t4 = add_tip(s, deps, category="official-car", unit="land", team=7, created=local(2026, 11, 19, 19),
                     ack_due=local(2026, 11, 19, 23), acked=local(2026, 11, 19, 20), by=lead,
                     outcome_due=local(2026, 11, 22))
        add_tip(s, deps, category="absence", unit="dingchang", team=1, created=local(2026, 11, 20, 19),
                ack_due=local(2026, 11, 20, 23))  # after the summary: counted nowhere
        t6 = add_tip(s, deps, category="extortion", unit="xindian", team=2, created=local(2026, 11, 10, 10),
                     ack_due=local(2026, 11, 10, 14), acked=local(2026, 11, 10, 11), by=lead,
                     outcome_due=local(2026, 11, 13), closed=local(2026, 11, 12))
        t7 = add_tip(s, deps, category="absence", unit="dingchang", team=1, created=local(2026, 11, 1, 10),
                     ack_due=local(2026, 11, 1, 14), acked=local(2026, 11, 1, 11), by=lead,
                     outcome_due=local(2026, 11, 4))
        o4 = add_outcome(s, t4, "verified", local(2026, 11, 20, 11), lead)
        add_outcome(s, t6, "unfounded", local(2026, 11, 12), lead)
        add_outcome(s, t7, "transferred", local(2026, 11, 2), lead)
        b = add_breach(s, t4, o4, name="王某", post="司机", at=local(2026, 11, 20, 11))
        add_action(s, b, "self_criticism", local(2026, 11, 20, 11), local(2026, 11, 27))
        add_action(s, b, "rectification_report", local(2026, 11, 20, 11), local(2026, 11, 27),
                   received=local(2026, 11, 20, 15))
        add_action(s, b, "discipline_referral", local(2026, 11, 19, 8), local(2026, 11, 19, 12))
        add_step(s, t2, "ack", "escalate", local(2026, 11, 20, 14, 5))
        add_step(s, t3, "outcome", "escalate", local(2026, 11, 19, 10, 5))
        add_step(s, t1, "ack", "remind", local(2026, 11, 20, 12))
        assert t1 and t3


def test_summary_figures_match_the_hand_built_data_set(deps: Deps) -> None:
    hand_built(deps)
    with deps.sessions.begin() as session:
        s = compute(session, deps.config, "2026-11-20")
    assert (s.today, s.total) == (3, 6)
    cats = {c.key: (c.today, c.total) for c in s.categories}
    assert cats["absence"] == (2, 3) and cats["public-dining"] == (0, 1)
    assert cats["official-car"] == (1, 1) and cats["extortion"] == (0, 1) and cats["efficiency"] == (0, 0)
    assert {u.key: (u.today, u.total) for u in s.units} == {
        "dingchang": (1, 2), "guocun": (1, 1), "land": (1, 2), "xindian": (0, 1)}
    teams = {t.team: t for t in s.teams}
    assert teams[1] == TeamRow(1, 2, 3, 3, 2) and teams[1].on_time_pct == 67
    assert teams[7] == TeamRow(7, 1, 2, 2, 1) and teams[2] == TeamRow(2, 0, 1, 1, 1)
    assert teams[3] == TeamRow(3, 0, 0, 0, 0) and teams[3].on_time_pct is None
    assert (s.ack_due, s.ack_on_time, s.on_time_pct) == (6, 4, 67)
    assert (s.overdue_ack, s.overdue_outcome) == (1, 1)
    assert s.escalated == [Count("ack", 1, 1), Count("outcome", 0, 1), Count("action", 0, 0)]
    assert s.outcomes == [Count("verified", 1, 1), Count("unfounded", 0, 1), Count("transferred", 0, 1)]
    assert s.actions == [
        ActionRow("self_criticism", 1, 1, 1, 0), ActionRow("rectification_report", 1, 1, 0, 0),
        ActionRow("discipline_referral", 0, 1, 1, 1), ActionRow("leader_accountability", 0, 0, 0, 0)]
    assert [f"{d:%m-%d}" for d in (s.chart_days[0], s.chart_days[-1])] == ["11-07", "11-20"]
    assert s.chart["absence"][13] == 2 and sum(s.chart["absence"]) == 2  # 11-01 is off the chart
    assert s.chart["official-car"][13] == 1 and s.chart["public-dining"][11] == 1 and s.chart["extortion"][3] == 1


def test_summary_text_and_chart_render_in_both_languages(deps: Deps) -> None:
    from bot.services.summary import chart_png

    hand_built(deps)
    with deps.sessions.begin() as session:
        s = compute(session, deps.config, "2026-11-20")
    zh = deps.texts.render("zh-CN", "summary", s=s, config=deps.config)
    en = deps.texts.render("en", "summary", s=s, config=deps.config)
    assert "每日汇总 2026-11-20" in zh and "今日 3 件，活动以来 6 件" in zh and "67%（4/6）" in zh
    assert "Daily summary 2026-11-20" in en and "3 today, 6 since" in en and "67% (4/6)" in en
    png = chart_png(deps.config, s)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def officials_and_office(deps: Deps) -> dict[str, int]:
    with deps.sessions.begin() as s:
        ids = {
            "zh": add_person(s, deps, 6001, "Official Zh", "official").id,
            "en": add_person(s, deps, 6002, "Official En", "official", lang="en").id,
            "off": add_person(s, deps, 6003, "Official Off", "official").id,
            "office": add_person(s, deps, 6100, "Office", "office").id,
        }
        officials.toggle(s, deps, s.get(officials.Staff, ids["off"]), "daily_summary", deps.clock.now())
    return ids


def test_a_scheduled_run_happens_once_per_period(deps: Deps, clock: FakeClock) -> None:
    officials_and_office(deps)
    clock.set(local(2026, 11, 20, 18, 30))
    assert schedule.due_periods(deps.config, clock.now())["summary"] == "2026-11-20"
    first = schedule.run_due(deps)
    assert ("summary", "2026-11-20", "summary to 2, digest to 0") in first
    assert schedule.run_due(deps) == []
    assert schedule.run_job(deps, "summary", "2026-11-20", clock.now()) is None
    with deps.sessions.begin() as session:
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.purpose == "broadcast")).all()
        assert sorted({r.chat_id for r in rows}) == [6001, 6002]
        assert len(rows) == 4  # a text and the chart each
        assert [r.method for r in rows if r.chat_id == 6002] == ["send_message", "send_photo"]
        assert "Daily summary 2026-11-20" in payload(deps, [r for r in rows if r.chat_id == 6002][0])["text"]
        progress = session.scalars(select(OutboxMessage).where(OutboxMessage.purpose == "progress")).all()
        assert [p.chat_id for p in progress] == [6100]
        session.add(ScheduledRun(job="summary", period="2026-11-20", ran_at=clock.now(), outcome="again"))
        with pytest.raises(IntegrityError):
            session.flush()


def test_a_missed_run_is_made_up_once_unless_too_late(deps: Deps, clock: FakeClock) -> None:
    officials_and_office(deps)
    clock.set(local(2026, 11, 21, 8))  # down from 17:00 to 08:00 the next day: 18:00 was missed
    assert schedule.run_due(deps) == [("summary", "2026-11-20", "summary to 2, digest to 0")]
    clock.advance(minutes=5)
    assert schedule.run_due(deps) == []
    late = deps.config.model_copy(update={"scheduler": deps.config.scheduler.model_copy(
        update={"catch_up_hours": 0.5})})
    clock.set(local(2026, 11, 21, 19))
    assert "summary" not in schedule.due_periods(late, clock.now())
    assert schedule.due_periods(deps.config, clock.now())["summary"] == "2026-11-21"


def test_bulletins_are_numbered_without_gaps_and_published_once(deps: Deps, clock: FakeClock) -> None:
    ids = officials_and_office(deps)
    clock.set(local(2026, 11, 3, 8))
    with deps.sessions.begin() as s:
        verified_case(s, deps, ids["office"], at=local(2026, 11, 2, 10), name="张某")
        verified_case(s, deps, ids["office"], at=local(2026, 11, 3, 7), name="李某", number=3)
    clock.set(local(2026, 11, 3, 9, 1))
    assert schedule.run_due(deps)[-1] == ("bulletin", "2026-11-03", "bulletin 1 draft (new)")
    with deps.sessions.begin() as s:
        b1 = s.scalar(select(Bulletin))
        assert b1.number == 1 and b1.status == "draft" and len(json.loads(b1.breach_ids)) == 2
        drafts = s.scalars(select(OutboxMessage).where(OutboxMessage.purpose == "bulletin_draft")).all()
        assert [d.chat_id for d in drafts] == [6100]
        text = payload(deps, drafts[0])["text"]
        assert "第1期" in text and "张某" in text and "移送县纪委" in text
        assert bulletins.hold(s, b1.id)[0] is bulletins.Decision.DONE
        verified_case(s, deps, ids["office"], at=local(2026, 11, 4, 10), name="赵某")
    clock.set(local(2026, 11, 5, 9, 1))  # the held draft takes the new case, keeps number 1
    assert schedule.run_due(deps)[-1] == ("bulletin", "2026-11-05", "bulletin 1 draft (updated)")
    with deps.sessions.begin() as s:
        decision, b, sent = bulletins.publish(s, deps, clock.now(), b1.id, ids["office"])
        assert decision is bulletins.Decision.DONE and sent is not None and sent.recipients == 3
        assert bulletins.publish(s, deps, clock.now(), b1.id, ids["office"])[0] is bulletins.Decision.ALREADY
        assert s.scalar(select(func.count()).select_from(Breach).where(Breach.bulletin_id == b1.id)) == 3
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.broadcast_id == sent.id,
                                                     OutboxMessage.purpose == "broadcast")).all()
        assert all(payload(deps, r)["protect"] for r in rows)
        assert sorted(r.method for r in rows if r.chat_id == 6002) == ["send_document", "send_message"]
    clock.set(local(2026, 11, 7, 9, 1))  # nothing new: no bulletin
    assert schedule.run_due(deps)[-1] == ("bulletin", "2026-11-07", "empty")
    with deps.sessions.begin() as s:
        verified_case(s, deps, ids["office"], at=local(2026, 11, 8, 10), name="钱某")
    clock.set(local(2026, 11, 9, 9, 1))
    assert schedule.run_due(deps)[-1] == ("bulletin", "2026-11-09", "bulletin 2 draft (new)")
    with deps.sessions.begin() as s:
        assert s.scalars(select(Bulletin.number).order_by(Bulletin.number)).all() == [1, 2]


def test_progress_counts_recipients_and_edits_one_message(deps: Deps, clock: FakeClock) -> None:
    officials_and_office(deps)
    clock.set(local(2026, 11, 20, 18, 1))
    schedule.run_due(deps)
    with deps.sessions.begin() as s:
        b = s.scalar(select(broadcast.Broadcast))
        assert broadcast.progress(s, b.id) == broadcast.Progress(2, 0, 0)
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.broadcast_id == b.id)).all()
        note = next(r for r in rows if r.purpose == "progress")
        note.status, note.message_id = "sent", 77
        for r in rows:
            if r.purpose == "broadcast" and r.chat_id == 6001:
                r.status = "sent"
            elif r.purpose == "broadcast" and r.method == "send_photo":
                r.status = "failed"
    with deps.sessions.begin() as s:
        assert broadcast.progress(s, b.id) == broadcast.Progress(2, 1, 1)
        assert broadcast.report_progress(s, deps, clock.now()) == 1
        assert broadcast.report_progress(s, deps, clock.now()) == 0  # nothing changed, nothing sent
        edit = s.scalar(select(OutboxMessage).where(OutboxMessage.purpose == "progress_edit"))
        assert payload(deps, edit)["edit_outbox"] == note.id
        assert "已送达 1 / 2，失败 1" in payload(deps, edit)["text"]
        assert s.get(broadcast.Broadcast, b.id).finished_at is not None


def test_an_advisory_lock_keeps_a_second_process_out(deps: Deps, engine: Engine, clock: FakeClock) -> None:
    if not is_postgres(engine):
        pytest.skip("SQLite is single-process by design: no second process to keep out")
    officials_and_office(deps)
    clock.set(local(2026, 11, 20, 18, 1))
    holder = engine.connect()
    tx = holder.begin()
    assert holder.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": schedule.LOCK_KEYS["summary"]})
    try:
        assert schedule.run_job(deps, "summary", "2026-11-20", clock.now()) is None  # skipped at once
    finally:
        tx.rollback()
        holder.close()
    assert schedule.run_job(deps, "summary", "2026-11-20", clock.now()) is not None


def test_two_processes_racing_on_postgresql_run_a_period_once(deps: Deps, engine: Engine, clock: FakeClock
                                                             ) -> None:
    if not is_postgres(engine):
        pytest.skip("SQLite is single-process by design")
    from bot.app import build_deps
    from storage.db import make_engine

    officials_and_office(deps)
    clock.set(local(2026, 11, 20, 18, 1))
    other_engine = make_engine(engine.url.render_as_string(hide_password=False))
    other, _ = build_deps(deps.config, clock, other_engine)
    results: list[str | None] = []
    barrier = threading.Barrier(2)

    def go(d: Deps) -> None:
        barrier.wait()
        results.append(schedule.run_job(d, "summary", "2026-11-20", clock.now()))

    threads = [threading.Thread(target=go, args=(d,)) for d in (deps, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other_engine.dispose()
    assert results.count(None) == 1 and "summary to 2, digest to 0" in results
    with deps.sessions.begin() as s:
        assert s.scalar(select(func.count()).select_from(OutboxMessage)
                        .where(OutboxMessage.purpose == "broadcast")) == 4
