"""What a tipster's action stamps is stored to the minute; what staff receive about a
tip is sent with protect_content."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.clock import FakeClock
from bot.deps import Deps
from bot.drafts import EvidenceItem
from bot.services import followup, intake, notify, outbox
from bot.services.intake import NewTip
from storage.models import Evidence, NotifyContact, OutboxMessage, Tip, TipAddition, TipEvent

from .conftest import add_group, add_lead


def test_a_tipsters_actions_are_stamped_to_the_minute(deps: Deps, clock: FakeClock) -> None:
    with deps.sessions.begin() as session:
        add_lead(session, deps, 8, 801, "Lead")
        add_group(session, deps, 8, -100_8)
    clock.advance(timedelta(seconds=37, microseconds=123_456))
    exact = clock.now()
    with deps.sessions.begin() as session:
        tip_id = intake.submit(session, deps, NewTip("absence", "other", "Some office", "Hall 2", "Nobody there",
                                                     evidence=(EvidenceItem("photo", "PHOTO-1"),)),
                               deps.keyring.receipt_hash("1234123412341234"), exact)
        if deps.config.security.contact_key.get_secret_value():
            notify.opt_in(session, deps, tip_id, 6_000_001, exact)
    clock.advance(timedelta(minutes=3, seconds=11))
    with deps.sessions.begin() as session:
        assert followup.add_information(session, deps, tip_id, ["more"], [EvidenceItem("photo", "P2")], clock.now())
    with deps.sessions.begin() as session:
        tip = session.get(Tip, tip_id)
        assert tip is not None
        stamps = [tip.created_at, tip.routed_at, *session.scalars(select(Evidence.added_at)),
                  *session.scalars(select(TipAddition.added_at)), *session.scalars(select(TipEvent.at)),
                  *session.scalars(select(OutboxMessage.created_at)),
                  *session.scalars(select(NotifyContact.created_at))]
    assert len(stamps) > 8
    assert all(s.second == 0 and s.microsecond == 0 for s in stamps), stamps
    assert tip.created_at == exact.replace(second=0, microsecond=0)


def test_everything_about_a_tip_is_protected(deps: Deps) -> None:
    with deps.sessions.begin() as session:
        add_lead(session, deps, 8, 801, "Lead")
        add_group(session, deps, 8, -100_8)
        tip_id = intake.submit(session, deps, NewTip("absence", "other", "Some office", "Hall 2", "Nobody there",
                                                     evidence=(EvidenceItem("photo", "PHOTO-1"),)),
                               deps.keyring.receipt_hash("1234123412341234"), deps.clock.now())
        followup.add_information(session, deps, tip_id, ["more"], [EvidenceItem("document", "DOC-1")],
                                 deps.clock.now())
    with deps.sessions.begin() as session:
        rows = [r for r in session.scalars(select(OutboxMessage)) if r.tip_id is not None]
        payloads = [(r.method, outbox.payload_of(r, deps.keyring)) for r in rows]
    assert {m for m, _ in payloads} >= {"send_message", "send_photo", "send_document"}
    assert all(p.get("protect") for m, p in payloads if m != "edit_message_text"), payloads
