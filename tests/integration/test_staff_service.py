"""Staff: invite codes, joining, binding groups, acknowledging tips."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from bot.clock import FakeClock
from bot.deps import Deps
from bot.domain.receipt import new_receipt_code
from bot.services import intake, staff
from bot.services.intake import NewTip
from bot.services.staff import AckStatus, JoinStatus
from storage.models import Invite, Staff, TeamChat, Tip, TipEvent

from .conftest import add_group, add_lead, dump_database, outbox_rows, payload


def invite(deps: Deps, kind: str = "person", role: str | None = "member", team: int | None = 3,
           valid_for: timedelta = timedelta(days=7)) -> str:
    with deps.sessions.begin() as session:
        return staff.create_invite(session, deps.keyring, deps.clock.now(), kind=kind, role=role, team_number=team,
                                   valid_for=valid_for)


def join(deps: Deps, code: str, user_id: int = 700, name: str = "Wang Wu", lang: str = "en") -> staff.JoinResult:
    with deps.sessions.begin() as session:
        return staff.join(session, deps, code, user_id, name, lang, deps.clock.now())


def bind(deps: Deps, code: str, chat_id: int = -100700, title: str = "Team group") -> staff.JoinResult:
    with deps.sessions.begin() as session:
        return staff.bind_group(session, deps, code, chat_id, title, deps.clock.now())


def test_join_registers_a_person(deps: Deps, clock: FakeClock) -> None:
    code = invite(deps, role="lead", team=3)
    assert join(deps, code, user_id=701, name="Li Si", lang="zh-CN") == staff.JoinResult(JoinStatus.JOINED, "lead", 3, 0)
    with deps.sessions.begin() as session:
        person = session.scalar(select(Staff).where(Staff.telegram_user_id == 701))
        assert (person.display_name, person.role, person.team_number, person.language, person.active) == (
            "Li Si", "lead", 3, "zh-CN", True)
        assert person.joined_at == clock.now()
        used = session.scalar(select(Invite))
        assert (used.used_at, used.used_by_staff_id, used.used_by_chat_id) == (clock.now(), person.id, None)


def test_invite_is_one_time(deps: Deps) -> None:
    code = invite(deps)
    assert join(deps, code, user_id=701).status is JoinStatus.JOINED
    assert join(deps, code, user_id=702).status is JoinStatus.INVALID
    assert join(deps, code, user_id=701).status is JoinStatus.INVALID
    with deps.sessions.begin() as session:
        assert session.scalars(select(Staff.telegram_user_id)).all() == [701]


def test_group_invite_is_one_time(deps: Deps) -> None:
    code = invite(deps, kind="group", role=None, team=2)
    assert bind(deps, code, chat_id=-1001).status is JoinStatus.BOUND
    assert bind(deps, code, chat_id=-1002).status is JoinStatus.INVALID
    with deps.sessions.begin() as session:
        assert [(c.chat_id, c.team_number) for c in session.scalars(select(TeamChat))] == [(-1001, 2)]


def test_invite_expires(deps: Deps, clock: FakeClock) -> None:
    early = invite(deps, valid_for=timedelta(hours=1))
    late = invite(deps, valid_for=timedelta(hours=1))
    clock.advance(minutes=59, seconds=59)
    assert join(deps, early, user_id=701).status is JoinStatus.JOINED
    clock.advance(seconds=1)
    assert join(deps, late, user_id=702).status is JoinStatus.INVALID
    group = invite(deps, kind="group", role=None, team=2, valid_for=timedelta(minutes=5))
    clock.advance(minutes=6)
    assert bind(deps, group).status is JoinStatus.INVALID


def test_unknown_code_is_invalid(deps: Deps) -> None:
    invite(deps)
    assert join(deps, "ABCD-EFGH-JKLM").status is JoinStatus.INVALID
    assert bind(deps, "ABCD-EFGH-JKLM").status is JoinStatus.INVALID


def test_wrong_kind_does_not_use_the_code_but_a_personal_code_in_a_group_is_burned(deps: Deps) -> None:
    group_code = invite(deps, kind="group", role=None, team=4)
    person_code = invite(deps, role="member", team=4)
    assert join(deps, group_code).status is JoinStatus.WRONG_KIND
    assert bind(deps, person_code).status is JoinStatus.BURNED  # seen by a whole group: spent
    with deps.sessions.begin() as session:
        assert session.scalars(select(Staff)).all() == [] and session.scalars(select(TeamChat)).all() == []
        assert all(i.used_at is None for i in session.scalars(select(Invite)))
    # the group code still works where it belongs; the burned personal code nowhere
    assert bind(deps, group_code).status is JoinStatus.BOUND
    assert join(deps, person_code).status is JoinStatus.INVALID


def test_codes_are_stored_only_as_a_hash(deps: Deps, engine: Engine) -> None:
    codes = [invite(deps), invite(deps, kind="group", role=None, team=1)]
    dump = dump_database(engine)
    assert dump.count("invites:") == 2
    for code in codes:
        assert code not in dump
        assert code.replace("-", "") not in dump
        assert code.replace("-", "").lower() not in dump.lower()
    with deps.sessions.begin() as session:
        assert {i.code_hash for i in session.scalars(select(Invite))} == {staff.invite_hash(deps.keyring, c) for c in codes}


@pytest.mark.parametrize(
    "spelling",
    [str.lower, lambda c: c.replace("-", ""), lambda c: f"  {c.lower().replace('-', ' ')} "],
    ids=["lower-case", "no-dashes", "spaces-for-dashes"],
)
def test_codes_are_normalised(deps: Deps, spelling) -> None:  # type: ignore[no-untyped-def]
    code = invite(deps)
    assert len(code) == 14 and code.count("-") == 2 and code == code.upper()
    assert join(deps, spelling(code)).status is JoinStatus.JOINED


def test_a_new_code_moves_a_person(deps: Deps) -> None:
    assert join(deps, invite(deps, role="member", team=3), user_id=701, name="Old name").status is JoinStatus.JOINED
    assert join(deps, invite(deps, role="lead", team=5), user_id=701, name="New name") == staff.JoinResult(
        JoinStatus.JOINED, "lead", 5, 0)
    with deps.sessions.begin() as session:
        [person] = session.scalars(select(Staff)).all()
        assert (person.role, person.team_number, person.display_name) == ("lead", 5, "New name")


# acknowledging ------------------------------------------------------------------------------

TEAM = 8  # delivers to its leads' private chats


def routed_tip(deps: Deps) -> int:
    with deps.sessions.begin() as session:
        return intake.submit(session, deps, NewTip("absence", "other", "Some office", "Hall 2", "Nobody at the desk"),
                             deps.keyring.receipt_hash(new_receipt_code()), deps.clock.now())


def ack(deps: Deps, tip_id: int, user_id: int) -> staff.AckResult:
    with deps.sessions.begin() as session:
        return staff.acknowledge(session, deps, tip_id, user_id, deps.clock.now())


@pytest.fixture
def team(deps: Deps) -> Deps:
    with deps.sessions.begin() as session:
        add_lead(session, deps, TEAM, user_id=801, name="Lead Zhao", lang="en")
        add_lead(session, deps, TEAM, user_id=802, name="Lead Qian", lang="en")
        add_lead(session, deps, TEAM, user_id=803, name="Member Sun", role="member")
        add_lead(session, deps, 3, user_id=901, name="Member of team 3", role="member")
        add_lead(session, deps, 0, user_id=990, name="Office Zhou", role="office")
    return deps


def test_acknowledge_checks_who_presses(team: Deps) -> None:
    deps = team
    tip_id = routed_tip(deps)
    assert ack(deps, tip_id, 12345).status is AckStatus.NOT_STAFF
    wrong = ack(deps, tip_id, 901)
    assert (wrong.status, wrong.team_number) == (AckStatus.WRONG_TEAM, TEAM)
    assert ack(deps, tip_id + 1000, 803).status is AckStatus.NO_TIP
    with deps.sessions.begin() as session:
        tip = session.get(Tip, tip_id)
        assert (tip.state, tip.acknowledged_at, tip.acknowledged_by) == ("routed", None, None)
        assert [r.purpose for r in outbox_rows(session)] == ["card", "card"]


def test_acknowledge_by_a_team_member(team: Deps, clock: FakeClock) -> None:
    deps = team
    tip_id = routed_tip(deps)
    clock.advance(minutes=20)
    first = ack(deps, tip_id, 803)
    assert first == staff.AckResult(AckStatus.ACKNOWLEDGED, tip_id, "Member Sun", clock.now(), TEAM)
    with deps.sessions.begin() as session:
        tip = session.get(Tip, tip_id)
        sun = session.scalar(select(Staff).where(Staff.telegram_user_id == 803))
        assert (tip.state, tip.acknowledged_at, tip.acknowledged_by) == ("acknowledged", clock.now(), sun.id)
        event = tip.events[-1]
        assert (event.kind, event.staff_id, event.team_number, event.at) == ("acknowledged", sun.id, TEAM, clock.now())

        cards = outbox_rows(session, tip_id=tip_id, purpose="card")
        edits = outbox_rows(session, tip_id=tip_id, purpose="card_edit")
        assert len(cards) == 2 and len(edits) == 2  # one edit per copy of the card
        assert [(e.chat_id, e.method) for e in edits] == [(c.chat_id, "edit_message_text") for c in cards]
        for card, edit in zip(cards, edits, strict=True):
            before, after = payload(deps, card), payload(deps, edit)
            assert before["buttons"] and "ack:" in str(before["buttons"])
            assert after["edit_outbox"] == card.id
            # the working buttons replace the acknowledgement
            assert [deps.keyring.verify(b["data"]).split(":")[0] for row in after["buttons"] for b in row] == [
                "ask", "rea", "out"]
            assert "ack:" not in str(after)
            assert "Acknowledged by Member Sun" in after["text"]

    # a second press, by anyone: nothing changes
    clock.advance(minutes=5)
    again = ack(deps, tip_id, 801)
    assert (again.status, again.by, again.at) == (AckStatus.ALREADY, "Member Sun", clock.now() - timedelta(minutes=5))
    assert ack(deps, tip_id, 803).status is AckStatus.ALREADY
    with deps.sessions.begin() as session:
        tip = session.get(Tip, tip_id)
        assert tip.acknowledged_by == sun.id and tip.acknowledged_at == clock.now() - timedelta(minutes=5)
        kinds = session.scalars(select(TipEvent.kind).where(TipEvent.tip_id == tip_id).order_by(TipEvent.id)).all()
        assert kinds == ["received", "routed", "acknowledged"]
        assert len(outbox_rows(session, tip_id=tip_id)) == 4


def test_acknowledge_by_the_office(team: Deps) -> None:
    deps = team
    tip_id = routed_tip(deps)
    result = ack(deps, tip_id, 990)
    assert (result.status, result.by) == (AckStatus.ACKNOWLEDGED, "Office Zhou")
    with deps.sessions.begin() as session:
        assert len(outbox_rows(session, tip_id=tip_id, purpose="card_edit")) == 2


def test_acknowledge_edits_the_group_card(deps: Deps) -> None:
    with deps.sessions.begin() as session:
        add_group(session, deps, 7, chat_id=-1007)
        add_lead(session, deps, 7, user_id=807, name="Member Li", role="member")
    with deps.sessions.begin() as session:
        tip_id = intake.submit(session, deps, NewTip("public-dining", "guxian", None, "Restaurant", "Banquet at noon"),
                               deps.keyring.receipt_hash(new_receipt_code()), deps.clock.now())
    assert ack(deps, tip_id, 807).status is AckStatus.ACKNOWLEDGED
    with deps.sessions.begin() as session:
        [card] = outbox_rows(session, tip_id=tip_id, purpose="card")
        [edit] = outbox_rows(session, tip_id=tip_id, purpose="card_edit")
        assert card.chat_id == edit.chat_id == -1007
        assert "ack:" not in str(payload(deps, edit)["buttons"])
        assert "Member Li" in payload(deps, edit)["text"]
