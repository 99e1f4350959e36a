"""Deadlines on a real database: per-category policies, the working-hours calendar, the
sweep that makes each step happen once, and news for tipsters who opted in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import Engine, func, select

from bot.app import build_deps
from bot.clock import FakeClock
from bot.domain.lifecycle import CaseAction, Outcome
from bot.domain.receipt import new_receipt_code
from bot.jobs import sweep_due_steps
from bot.services import intake, notify, workflow
from bot.services.intake import NewTip
from storage.models import DueStep, NotifyContact, OutboxMessage, Tip
from tests.conftest import make_config
from tests.integration.conftest import add_lead, dump_database

FRIDAY_5PM_SHANGHAI = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def _deps(database_url: str, engine: Engine, clock: FakeClock, **sections: dict[str, Any]):  # type: ignore[no-untyped-def]
    deps, _ = build_deps(make_config(database_url, **sections), clock, engine)
    return deps


def _tip(deps, category: str = "absence", unit: str = "dingchang") -> int:  # type: ignore[no-untyped-def]
    with deps.sessions.begin() as session:
        return intake.submit(session, deps, NewTip(category, unit, None, "Town hall", "Nobody at the desk at nine"),
                             deps.keyring.receipt_hash(new_receipt_code()), deps.clock.now())


def test_project_delays_get_the_campaigns_24_hours(database_url: str, engine: Engine) -> None:
    clock = FakeClock(datetime(2026, 11, 24, 2, 0, tzinfo=UTC))
    deps = _deps(database_url, engine, clock)
    normal, urgent = _tip(deps), _tip(deps, category="project-delay")
    with deps.sessions.begin() as session:
        a, b = session.get(Tip, normal), session.get(Tip, urgent)
        assert a.outcome_due_at - a.routed_at == timedelta(hours=72)
        assert b.outcome_due_at - b.routed_at == timedelta(hours=24)
        assert b.ack_due_at - b.routed_at == timedelta(hours=2)


def test_working_hours_move_a_friday_evening_deadline_to_monday(database_url: str, engine: Engine) -> None:
    clock = FakeClock(FRIDAY_5PM_SHANGHAI)
    deps = _deps(database_url, engine, clock, working_hours={"enabled": True})
    tip_id = _tip(deps)
    with deps.sessions.begin() as session:
        tip = session.get(Tip, tip_id)
        local = tip.ack_due_at.astimezone(deps.config.campaign.tz)
        # 30 minutes on Friday (17:00-17:30), 3.5 hours on Monday from 08:30
        assert (local.date().isoformat(), local.strftime("%H:%M")) == ("2026-11-30", "12:00")


def test_each_step_happens_once_and_acknowledged_tips_are_quiet(database_url: str, engine: Engine) -> None:
    clock = FakeClock(datetime(2026, 11, 24, 2, 0, tzinfo=UTC))
    deps = _deps(database_url, engine, clock)
    with deps.sessions.begin() as session:
        add_lead(session, deps, 1, 901, "Lead")
        add_lead(session, deps, 0, 909, "Office", role="office")
    quiet, loud = _tip(deps), _tip(deps)
    from bot.services.staff import acknowledge

    with deps.sessions.begin() as session:
        acknowledge(session, deps, quiet, 901, clock.now())
    clock.advance(hours=5)
    assert sweep_due_steps(deps) == 2  # loud: a reminder and an escalation; quiet's were cancelled
    assert sweep_due_steps(deps) == 0  # nothing twice
    with deps.sessions.begin() as session:
        purposes = sorted(session.scalars(select(OutboxMessage.purpose).where(
            OutboxMessage.purpose.in_(("reminder", "escalation")))))
        assert purposes == ["escalation", "reminder"]
        rows = session.scalars(select(DueStep).where(DueStep.tip_id == quiet, DueStep.deadline_kind == "ack")).all()
        assert rows and all(r.cancelled_at is not None and r.done_at is None for r in rows)
        assert session.scalar(select(OutboxMessage.tip_id).where(OutboxMessage.purpose == "escalation")) == loud


class RecordingBot:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []

    async def send_message(self, chat_id: int, text: str, **_: Any) -> None:
        self.sent.append((chat_id, text))


async def test_opted_in_chat_is_sealed_told_of_news_and_forgotten_at_close(database_url: str,
                                                                            engine: Engine) -> None:
    clock = FakeClock(datetime(2026, 11, 24, 2, 0, tzinfo=UTC))
    deps = _deps(database_url, engine, clock, security={"contact_key": Fernet.generate_key().decode()})
    with deps.sessions.begin() as session:
        add_lead(session, deps, 1, 901, "Lead")
    tip_id = _tip(deps)
    chat = 6_100_123_457
    with deps.sessions.begin() as session:
        assert notify.opt_in(session, deps, tip_id, chat, clock.now())
    assert str(chat) not in dump_database(engine)

    bot = RecordingBot()
    from bot.services.staff import acknowledge

    with deps.sessions.begin() as session:
        acknowledge(session, deps, tip_id, 901, clock.now())
    assert await notify.deliver(deps, bot) == 1
    assert await notify.deliver(deps, bot) == 0  # told once
    with deps.sessions.begin() as session:
        allowed = workflow.authorize(session, 901, tip_id, CaseAction.RECORD_OUTCOME)
        assert isinstance(allowed, workflow.Allowed)
        workflow.record_outcome(session, deps, allowed, workflow.OutcomeInput(Outcome.UNFOUNDED, "No one was late"),
                                clock.now())
    assert await notify.deliver(deps, bot) == 1
    assert [c for c, _ in bot.sent] == [chat, chat]
    with deps.sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(NotifyContact)) == 0  # forgotten at close


def test_without_a_contact_key_nothing_is_kept(database_url: str, engine: Engine) -> None:
    deps = _deps(database_url, engine, FakeClock(datetime(2026, 11, 24, 2, 0, tzinfo=UTC)))
    tip_id = _tip(deps)
    with deps.sessions.begin() as session:
        assert notify.opt_in(session, deps, tip_id, 42, deps.clock.now()) is False
    with deps.sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(NotifyContact)) == 0
