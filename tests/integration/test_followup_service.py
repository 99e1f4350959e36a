"""A tipster back with a receipt code: finding the tip, its public timeline, adding information."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from bot.clock import FakeClock
from bot.deps import Deps
from bot.domain.receipt import new_receipt_code
from bot.drafts import EvidenceItem
from bot.services import followup, intake, staff
from bot.services.intake import NewTip
from storage.models import Evidence, Tip, TipAddition, TipEvent

from .conftest import add_group, add_lead, dump_database, outbox_rows, payload

LEAD_NAME = "Lead Feng Jiuzhou"


def submit(deps: Deps, code: str, unit: str = "other") -> int:
    with deps.sessions.begin() as session:
        return intake.submit(session, deps, NewTip("absence", unit, "Some office" if unit == "other" else None,
                                                   "Hall 2", "Nobody at the desk",
                                                   evidence=(EvidenceItem("photo", "PHOTO-ORIGINAL"),)),
                             deps.keyring.receipt_hash(code), deps.clock.now())


def add(deps: Deps, tip_id: int, texts: list[str], evidence: list[EvidenceItem]) -> bool:
    with deps.sessions.begin() as session:
        return followup.add_information(session, deps, tip_id, texts, evidence, deps.clock.now())


@pytest.fixture
def leads(deps: Deps) -> Deps:
    with deps.sessions.begin() as session:
        add_lead(session, deps, 8, user_id=801, name=LEAD_NAME, lang="en")
        add_lead(session, deps, 8, user_id=802, name="Lead Two", lang="zh-CN")
    return deps


def test_find_tip_by_receipt_hash(deps: Deps) -> None:
    code, other = new_receipt_code(), new_receipt_code()
    tip_id = submit(deps, code)
    second = submit(deps, other)
    with deps.sessions.begin() as session:
        assert followup.find_tip(session, deps.keyring.receipt_hash(code)).id == tip_id
        assert followup.find_tip(session, deps.keyring.receipt_hash(other)).id == second
        assert followup.find_tip(session, deps.keyring.receipt_hash(new_receipt_code())) is None
        assert followup.find_tip(session, code) is None  # the code itself is no key


def test_public_timeline_hides_internal_events_and_staff(leads: Deps, clock: FakeClock) -> None:
    deps = leads
    waiting_id = submit(deps, new_receipt_code(), unit="dingchang")  # team 1: nobody there yet
    tip_id = submit(deps, new_receipt_code())
    start = clock.now()
    clock.advance(minutes=10)
    with deps.sessions.begin() as session:
        assert staff.acknowledge(session, deps, tip_id, 801, clock.now()).status is staff.AckStatus.ACKNOWLEDGED
    with deps.sessions.begin() as session:
        timeline = followup.public_timeline(session.get(Tip, tip_id), deps.keyring)
        assert timeline == [(start, "received", None, None), (start, "routed", 8, None),
                            (clock.now(), "acknowledged", 8, None)]
        assert LEAD_NAME not in repr(timeline) and "Feng" not in repr(timeline)

        waiting = session.get(Tip, waiting_id)
        assert "awaiting_team" in [e.kind for e in waiting.events]
        assert [e[1] for e in followup.public_timeline(waiting, deps.keyring)] == ["received", "routed"]


def test_add_information(leads: Deps, engine: Engine, clock: FakeClock) -> None:
    deps = leads
    tip_id = submit(deps, new_receipt_code())
    clock.advance(hours=1)
    items = [EvidenceItem("photo", "PHOTO-ADDED-GANNET", "the empty desk"), EvidenceItem("voice", "VOICE-ADDED-IBIS")]
    assert add(deps, tip_id, ["He came back at 11:40 KESTRELTEXT", "  ", "with a colleague"], items)

    with deps.sessions.begin() as session:
        [addition] = session.scalars(select(TipAddition)).all()
        assert (addition.tip_id, addition.added_at) == (tip_id, clock.now())
        assert deps.keyring.decrypt(addition.text_enc) == "He came back at 11:40 KESTRELTEXT\n\nwith a colleague"
        added = session.scalars(select(Evidence).where(Evidence.addition_id == addition.id).order_by(Evidence.id)).all()
        assert [(e.kind, deps.keyring.decrypt(e.file_ref_enc)) for e in added] == [
            ("photo", "PHOTO-ADDED-GANNET"), ("voice", "VOICE-ADDED-IBIS")]
        assert all(e.tip_id == tip_id for e in added)
        events = session.scalars(select(TipEvent).where(TipEvent.tip_id == tip_id).order_by(TipEvent.id)).all()
        assert (events[-1].kind, events[-1].public, events[-1].at, events[-1].team_number) == (
            "info_added", True, clock.now(), 8)

        for chat in (801, 802):
            [card] = outbox_rows(session, tip_id=tip_id, chat_id=chat, purpose="card")
            rows = [r for r in outbox_rows(session, tip_id=tip_id, chat_id=chat) if r.created_at == clock.now()]
            assert [(r.purpose, r.method) for r in rows] == [
                ("addition", "send_message"), ("evidence", "send_photo"), ("evidence", "send_voice")]
            notice, photo, voice = rows
            assert payload(deps, notice)["reply_to_outbox"] == card.id
            assert "KESTRELTEXT" in payload(deps, notice)["text"]
            assert f"#{tip_id}" in payload(deps, notice)["text"]
            assert payload(deps, photo)["file_id"] == "PHOTO-ADDED-GANNET"
            assert payload(deps, voice)["file_id"] == "VOICE-ADDED-IBIS"
            # the added evidence follows the notice, which follows the card
            assert payload(deps, photo)["reply_to_outbox"] == notice.id
            assert payload(deps, voice)["reply_to_outbox"] == notice.id

    dump = dump_database(engine)
    for secret in ("KESTRELTEXT", "GANNET", "IBIS", "the empty desk"):
        assert secret not in dump


def test_add_information_to_a_group(deps: Deps) -> None:
    with deps.sessions.begin() as session:
        add_group(session, deps, 1, chat_id=-1001)
    tip_id = submit(deps, new_receipt_code(), unit="dingchang")
    assert add(deps, tip_id, [], [EvidenceItem("document", "DOC-ADDED")])
    with deps.sessions.begin() as session:
        rows = outbox_rows(session, tip_id=tip_id)
        assert [(r.chat_id, r.purpose) for r in rows] == [
            (-1001, "card"), (-1001, "evidence"), (-1001, "addition"), (-1001, "evidence")]
        assert payload(deps, rows[2])["reply_to_outbox"] == rows[0].id
        assert payload(deps, rows[3])["file_id"] == "DOC-ADDED"
        [addition] = session.scalars(select(TipAddition)).all()
        assert addition.text_enc is None


def test_add_information_to_a_tip_nobody_receives_yet(deps: Deps) -> None:
    tip_id = submit(deps, new_receipt_code(), unit="dingchang")
    assert add(deps, tip_id, ["more"], [])
    with deps.sessions.begin() as session:
        assert outbox_rows(session) == []
        kinds = session.scalars(select(TipEvent.kind).where(TipEvent.tip_id == tip_id).order_by(TipEvent.id)).all()
        assert kinds == ["received", "routed", "awaiting_team", "info_added"]


def test_add_information_to_a_closed_or_unknown_tip(leads: Deps) -> None:
    deps = leads
    tip_id = submit(deps, new_receipt_code())
    with deps.sessions.begin() as session:
        session.get(Tip, tip_id).state = "closed_verified"
    with deps.sessions.begin() as session:
        before = len(outbox_rows(session))
    assert add(deps, tip_id, ["too late"], [EvidenceItem("photo", "LATE")]) is False
    assert add(deps, tip_id + 999, ["nobody"], []) is False
    with deps.sessions.begin() as session:
        assert session.scalars(select(TipAddition)).all() == []
        assert session.scalars(select(Evidence).where(Evidence.addition_id.is_not(None))).all() == []
        assert "info_added" not in session.scalars(select(TipEvent.kind)).all()
        assert len(outbox_rows(session)) == before
