"""intake.submit on a real database: encryption at rest, routing, timeline and outbox."""

from __future__ import annotations

import html
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from bot.app import build_deps
from bot.clock import FakeClock
from bot.deps import Deps
from bot.domain.receipt import new_receipt_code
from bot.drafts import EvidenceItem
from bot.services import intake
from bot.services.intake import NewTip
from bot.services.views import tip_view
from bot.splitting import TELEGRAM_CAPTION_LIMIT, TELEGRAM_TEXT_LIMIT, visible_length
from storage.models import Evidence, Tip, TipEvent
from tests.conftest import make_config

from .conftest import add_group, add_lead, dump_database, outbox_rows, payload

TEXT = "The section chief ZEBRAQUARTZ left at 10:15 & did not come back <again>"
PLACE = "Window 3, service hall MARMOTPLACE, Tuesday morning"
OTHER = "Bureau of OCELOTUNIT affairs"
PHOTO = "AgACAgFILEIDPHOTOVULPES"
DOC = "BQACAgFILEIDDOCLYNX"
CAPTION = "scan of the sign-in sheet CAPTIONHERON"


def submit(deps: Deps, new: NewTip, code: str | None = None) -> int:
    receipt_hash = deps.keyring.receipt_hash(code or new_receipt_code())
    with deps.sessions.begin() as session:
        return intake.submit(session, deps, new, receipt_hash, deps.clock.now())


def tip_with_evidence(category: str = "absence", unit: str = "other", unit_other: str | None = OTHER) -> NewTip:
    return NewTip(
        category=category, unit=unit, unit_other=unit_other, place=PLACE, text=TEXT,
        evidence=(EvidenceItem("photo", PHOTO, CAPTION), EvidenceItem("document", DOC, None)),
    )


def test_tip_content_is_not_stored_in_clear(deps: Deps, engine: Engine) -> None:
    code = new_receipt_code()
    with deps.sessions.begin() as session:
        add_lead(session, deps, 8, user_id=5001, name="Lead Eight")  # so that outbox rows exist too
    tip_id = submit(deps, tip_with_evidence(), code)

    dump = dump_database(engine)
    assert f"tip_id={tip_id}" in dump and "outbox:" in dump  # the dump does see the rows
    for secret in ("ZEBRAQUARTZ", "MARMOTPLACE", "OCELOTUNIT", "VULPES", "LYNX", "CAPTIONHERON", code):
        assert secret not in dump, f"{secret!r} is stored in clear"
    # ... while the services can still read all of it back
    with deps.sessions.begin() as session:
        view = tip_view(session, deps.keyring, session.get(Tip, tip_id))
        assert (view.text, view.place, view.unit_other) == (TEXT, PLACE, OTHER)
        assert [(e.kind, e.file_id, e.caption) for e in view.evidence] == [
            ("photo", PHOTO, CAPTION), ("document", DOC, None)]
        assert session.get(Tip, tip_id).receipt_hash == deps.keyring.receipt_hash(code)
        assert any(PHOTO == payload(deps, r).get("file_id") for r in outbox_rows(session, tip_id=tip_id))


@pytest.mark.parametrize(
    ("category", "unit", "team", "rule"),
    [
        ("public-dining", "guxian", 7, "dining"),  # category rule wins the tie with unit rule guxian (team 2)
        ("absence", "dingchang", 1, "dingchang"),
        ("efficiency", "land", 6, "departments"),
        ("absence", "other", 8, "fallback"),
    ],
)
def test_routing_and_timeline(deps: Deps, category: str, unit: str, team: int, rule: str) -> None:
    with deps.sessions.begin() as session:
        add_lead(session, deps, team, user_id=6000 + team, name=f"Lead {team}")
    tip_id = submit(deps, NewTip(category, unit, OTHER if unit == "other" else None, PLACE, TEXT))
    with deps.sessions.begin() as session:
        tip = session.get(Tip, tip_id)
        assert (tip.team_number, tip.route_rule, tip.state) == (team, rule, "routed")
        assert tip.unit_key == unit and tip.category == category
        assert tip.created_at == tip.routed_at == deps.clock.now()
        assert tip.ack_due_at == deps.clock.now() + timedelta(hours=deps.config.deadlines.ack_hours)
        assert tip.acknowledged_at is None
        events = [(e.kind, e.team_number, e.public, deps.keyring.decrypt_opt(e.detail_enc)) for e in tip.events]
        assert events[0] == ("received", None, True, None)
        assert events[1][:3] == ("routed", team, True)
        assert events[1][3] == tip.route_reason
        assert (f"rule {rule}:" in tip.route_reason) if rule != "fallback" else ("fallback" in tip.route_reason)
        assert [e[0] for e in events] == ["received", "routed"]  # someone was there to receive it


def test_unknown_unit_is_refused(deps: Deps) -> None:
    with pytest.raises(ValueError, match="unknown unit"):
        submit(deps, NewTip("absence", "atlantis", None, PLACE, TEXT))
    with deps.sessions.begin() as session:
        assert session.scalars(select(Tip)).all() == []


def test_card_and_evidence_for_each_lead(deps: Deps) -> None:
    with deps.sessions.begin() as session:
        add_lead(session, deps, 8, user_id=5001, name="Lead A", lang="en")
        add_lead(session, deps, 8, user_id=5002, name="Lead B", lang="zh-CN")
        add_lead(session, deps, 7, user_id=5003, name="Other team's lead")
        add_lead(session, deps, 8, user_id=5004, name="Just a member", role="member")
    tip_id = submit(deps, tip_with_evidence())
    with deps.sessions.begin() as session:
        rows = outbox_rows(session, tip_id=tip_id)
        assert {r.chat_id for r in rows} == {5001, 5002}
        for chat in (5001, 5002):
            mine = [r for r in rows if r.chat_id == chat]
            assert [(r.purpose, r.method) for r in mine] == [
                ("card", "send_message"), ("evidence", "send_photo"), ("evidence", "send_document")]
            card, photo, doc = mine
            assert card.id < photo.id < doc.id
            assert all(r.status == "pending" and r.attempts == 0 for r in mine)
            card_payload = payload(deps, card)
            assert f"#{tip_id}" in card_payload["text"]
            assert html.escape(TEXT, quote=False) in card_payload["text"]
            [[ack], [reassign]] = card_payload["buttons"]
            assert deps.keyring.verify(ack["data"]) == f"ack:{tip_id}"
            assert deps.keyring.verify(reassign["data"]) == f"rea:{tip_id}"
            assert payload(deps, photo)["file_id"] == PHOTO
            assert CAPTION in payload(deps, photo)["caption"]
            assert payload(deps, doc)["file_id"] == DOC
            assert payload(deps, photo)["reply_to_outbox"] == card.id
            assert payload(deps, doc)["reply_to_outbox"] == card.id
        # each lead reads the card in their own language
        assert "What happened" in payload(deps, rows[0])["text"]
        assert "What happened" not in payload(deps, [r for r in rows if r.chat_id == 5002][0])["text"]


def test_card_goes_to_the_bound_group(deps: Deps) -> None:
    with deps.sessions.begin() as session:
        add_group(session, deps, 7, chat_id=-1007)
        add_lead(session, deps, 7, user_id=5007, name="Lead Seven")  # team 7 delivers to its group
    tip_id = submit(deps, tip_with_evidence(category="public-dining", unit="guxian", unit_other=None))
    with deps.sessions.begin() as session:
        rows = outbox_rows(session, tip_id=tip_id)
        assert [(r.chat_id, r.purpose) for r in rows] == [(-1007, "card"), (-1007, "evidence"), (-1007, "evidence")]
        assert [e.kind for e in session.get(Tip, tip_id).events] == ["received", "routed"]


def test_no_target_waits_then_goes_out_once(deps: Deps, clock: FakeClock) -> None:
    tip_id = submit(deps, tip_with_evidence(category="absence", unit="dingchang", unit_other=None))
    with deps.sessions.begin() as session:
        tip = session.get(Tip, tip_id)
        assert tip.team_number == 1
        kinds = [(e.kind, e.public, e.team_number) for e in tip.events]
        assert kinds == [("received", True, None), ("routed", True, 1), ("awaiting_team", False, 1)]
        assert outbox_rows(session) == []

    clock.advance(minutes=30)
    with deps.sessions.begin() as session:
        assert add_group(session, deps, 1, chat_id=-1001).redelivered == 1
    with deps.sessions.begin() as session:
        # a second binding of the same group (a new code): nothing is queued again
        assert add_group(session, deps, 1, chat_id=-1001, title="renamed").redelivered == 0
        # and a lead joining the team now does not bring it back either
        assert add_lead(session, deps, 1, user_id=5011, name="Lead One").redelivered == 0
    with deps.sessions.begin() as session:
        rows = outbox_rows(session, tip_id=tip_id)
        assert [(r.chat_id, r.purpose) for r in rows] == [(-1001, "card"), (-1001, "evidence"), (-1001, "evidence")]
        assert all(r.created_at == clock.now() for r in rows)  # queued when the group was bound
        assert payload(deps, rows[1])["reply_to_outbox"] == rows[0].id
        events = session.scalars(select(TipEvent.kind).where(TipEvent.tip_id == tip_id).order_by(TipEvent.id)).all()
        assert events == ["received", "routed", "awaiting_team", "card_queued"]


def test_waiting_tip_goes_to_a_lead_who_joins(deps: Deps) -> None:
    tip_id = submit(deps, NewTip("absence", "other", OTHER, PLACE, TEXT))
    with deps.sessions.begin() as session:
        assert add_lead(session, deps, 8, user_id=5008, name="Lead Eight").redelivered == 1
    with deps.sessions.begin() as session:
        assert [(r.chat_id, r.purpose) for r in outbox_rows(session, tip_id=tip_id)] == [(5008, "card")]


def test_long_tip_text_goes_before_the_card(database_url: str, engine: Engine, clock: FakeClock) -> None:
    config = make_config(database_url, intake={"text_max_chars": 4000, "place_max_chars": 300})
    deps, _ = build_deps(config, clock, engine)
    place = ("P&<" * 100)[:300]
    line = "Long account of what happened & <why> it matters, line {:03d}.\n"
    text = "".join(line.format(i) for i in range(200))[:3990] + "ENDMARK"
    assert len(text) <= config.intake.text_max_chars and len(place) == config.intake.place_max_chars
    with deps.sessions.begin() as session:
        add_lead(session, deps, 8, user_id=5001, name="Lead", lang="en")
    tip_id = submit(deps, NewTip("absence", "other", OTHER, place, text,
                                 evidence=(EvidenceItem("photo", PHOTO, None),)))
    with deps.sessions.begin() as session:
        rows = outbox_rows(session, tip_id=tip_id)
        purposes = [r.purpose for r in rows]
        assert purposes[-2:] == ["card", "evidence"]
        assert purposes[:-2] and set(purposes[:-2]) == {"card_text"}
        texts = [payload(deps, r)["text"] for r in rows[:-1]]
        for part in texts:
            assert 0 < visible_length(part) <= TELEGRAM_TEXT_LIMIT, visible_length(part)
        # the tipster's words all arrive, in the text parts; the card itself refers to them
        body = "".join(texts[:-1])
        assert "ENDMARK" in body and html.escape(text[:50], quote=False) in body
        assert "ENDMARK" not in texts[-1]
        assert html.escape(place, quote=False) in texts[-1]
        assert payload(deps, rows[-1])["reply_to_outbox"] == rows[-2].id


def test_receipt_hash_is_unique(deps: Deps) -> None:
    code = new_receipt_code()
    submit(deps, NewTip("absence", "other", None, PLACE, TEXT), code)
    with pytest.raises(IntegrityError):
        submit(deps, NewTip("efficiency", "land", None, PLACE, "another tip entirely"), code)
    with deps.sessions.begin() as session:
        assert len(session.scalars(select(Tip)).all()) == 1
        assert session.scalars(select(Evidence)).all() == []


def test_long_text_in_utf16_units_is_split_without_loss(database_url: str, engine: Engine, clock: FakeClock) -> None:
    """Telegram counts UTF-16 code units: 4000 emoji are 8000 units, more than one message."""
    config = make_config(database_url, intake={"text_max_chars": 4000})
    deps, _ = build_deps(config, clock, engine)
    text = "\N{GRINNING FACE}" * 3990 + "END"
    with deps.sessions.begin() as session:
        add_lead(session, deps, 8, user_id=5001, name="Lead", lang="en")
    tip_id = submit(deps, NewTip("absence", "other", OTHER, PLACE, text))
    with deps.sessions.begin() as session:
        rows = outbox_rows(session, tip_id=tip_id)
        assert [r.purpose for r in rows][-1] == "card"
        parts = [payload(deps, r)["text"] for r in rows if r.purpose == "card_text"]
        assert len(parts) >= 2
        assert all(visible_length(p) <= TELEGRAM_TEXT_LIMIT for p in parts)
        assert sum(p.count("\N{GRINNING FACE}") for p in parts) == 3990
        assert parts[-1].endswith("END")


def test_a_long_evidence_caption_follows_as_text(deps: Deps) -> None:
    caption = "caption word " * 100 + "CAPTIONEND"  # 1310 characters: over Telegram's 1024
    with deps.sessions.begin() as session:
        add_lead(session, deps, 8, user_id=5001, name="Lead", lang="en")
    tip_id = submit(deps, NewTip("absence", "other", OTHER, PLACE, TEXT,
                                 evidence=(EvidenceItem("video", "VIDEO-ID", caption),)))
    with deps.sessions.begin() as session:
        rows = outbox_rows(session, tip_id=tip_id)
        assert [(r.purpose, r.method) for r in rows] == [
            ("card", "send_message"), ("evidence", "send_video"), ("evidence", "send_message")]
        media, follow = payload(deps, rows[1]), payload(deps, rows[2])
        assert media["file_id"] == "VIDEO-ID" and media["reply_to_outbox"] == rows[0].id
        assert visible_length(media["caption"]) <= TELEGRAM_CAPTION_LIMIT
        assert "CAPTIONEND" not in media["caption"]
        assert "CAPTIONEND" in follow["text"] and visible_length(follow["text"]) <= TELEGRAM_TEXT_LIMIT


def test_a_new_tip_plans_its_steps_in_one_read_and_one_insert(deps: Deps, engine: Engine) -> None:
    """The Submit's transaction plans both deadlines' reminders and escalations: one read of
    the tokens planned already and one insert for all steps (a read, an ORM object and a
    flush per step cost more CPU than the rest of the tip), and the tip is inserted with its
    deadlines, not updated after."""
    from sqlalchemy import event

    from bot.services import deadlines
    from storage.models import DueStep

    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        seen.append(" ".join(statement.split()).upper())

    event.listen(engine, "before_cursor_execute", record)
    try:
        tip_id = submit(deps, tip_with_evidence())
    finally:
        event.remove(engine, "before_cursor_execute", record)
    on_steps = [s.split(" ")[0] for s in seen if "DUE_STEPS" in s]
    assert on_steps == ["SELECT", "INSERT"], on_steps
    assert not [s for s in seen if s.startswith("UPDATE TIPS")]
    with deps.sessions.begin() as session:
        tip = session.get(Tip, tip_id)
        assert tip is not None
        ack, outcome = deadlines.clocks(deps.config, tip.category, tip.created_at)
        assert (tip.ack_due_at, tip.outcome_due_at) == (ack, outcome)
        steps = session.scalars(select(DueStep).where(DueStep.tip_id == tip_id)).all()
        kinds = sorted((s.deadline_kind, s.step) for s in steps)
        assert ("ack", "escalate") in kinds and ("outcome", "escalate") in kinds
        assert len({s.token for s in steps}) == len(steps) >= 2
        assert all(s.deadline == (ack if s.deadline_kind == "ack" else outcome) for s in steps)
        # Planned again (as a retried transaction would): nothing new.
        deadlines.plan_clocks(session, deps.config, tip, tip.created_at)
        assert session.scalar(select(func.count()).select_from(DueStep).where(DueStep.tip_id == tip_id)) == len(steps)
