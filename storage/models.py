"""tipline's tables (SQLAlchemy 2 typed ORM).

Anonymity is a property of this schema: no table has a column for a tipster's Telegram
id, username, name, phone or language. Tip content (`*_enc`) is Fernet-encrypted. The
only tipster-derived key is `tips.receipt_hash`, a slow keyed hash of the receipt code.
Tables that may hold a tipster's chat id, only encrypted and only for a short time: the
update journal (until the update is processed), the opted-in news contacts (until the case
closes) and the pending receipts (until the receipt code has reached the chat).
Staff are not anonymous: their Telegram ids are stored so that buttons can be checked.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    false,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime}


class Staff(Base):
    """A registered team member, lead or office member (joined with an invite code)."""

    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    telegram_user_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))  # lead | member | office
    team_number: Mapped[int | None] = mapped_column(Integer, index=True)
    language: Mapped[str] = mapped_column(String(8))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    joined_at: Mapped[datetime]


class Invite(Base):
    """A one-time code that registers a person or binds a group; stored as a keyed hash."""

    __tablename__ = "invites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(8))  # person | group
    role: Mapped[str | None] = mapped_column(String(16))
    team_number: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    used_by_staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    used_by_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    revoked_at: Mapped[datetime | None]  # revoked by the office, or burned (posted where it must not be)


class TeamChat(Base):
    """A Telegram group bound to an inspection team."""

    __tablename__ = "team_chats"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_number: Mapped[int] = mapped_column(Integer, index=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    title: Mapped[str] = mapped_column(String(256))
    bound_at: Mapped[datetime]
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Tip(Base):
    __tablename__ = "tips"
    __table_args__ = (
        # The daily summary reads only the rows around its period (storage/rollup.py):
        # deadlines still ahead, acknowledgements after the period, the open cases.
        # The summary reads these tips from the indexes alone (covering: no table page is
        # read): created since its start (the index on created_at before), a deadline still
        # ahead, acknowledged after its end; the cases open at its end.
        Index("ix_tips_created_cover", "created_at", "category", "unit_key", "team_number", "ack_due_at",
              "acknowledged_at"),
        Index("ix_tips_ack_due_cover", "ack_due_at", "created_at", "acknowledged_at", "category", "unit_key",
              "team_number"),
        Index("ix_tips_acknowledged_cover", "acknowledged_at", "created_at", "ack_due_at", "category",
              "unit_key", "team_number"),
        Index("ix_tips_open", "closed_at", "outcome_due_at", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    receipt_hash: Mapped[str] = mapped_column(String(64), unique=True)
    channel: Mapped[str] = mapped_column(String(16), default="telegram")  # telegram | phone | mail
    category: Mapped[str] = mapped_column(String(32), index=True)
    unit_key: Mapped[str] = mapped_column(String(32), index=True)
    unit_other_enc: Mapped[str | None] = mapped_column(Text)
    place_enc: Mapped[str] = mapped_column(Text)
    text_enc: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(24), index=True)
    team_number: Mapped[int] = mapped_column(Integer, index=True)
    route_rule: Mapped[str] = mapped_column(String(64))
    route_reason: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime]
    routed_at: Mapped[datetime]
    ack_due_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    outcome_due_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    # A keyed hash of the draft's random submission token: a second press of Submit (or the
    # same press handled again after a crash) finds the tip instead of storing another.
    submit_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    # The receipt code never reached the chat that submitted the tip (see PendingReceipt).
    receipt_undelivered: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    evidence: Mapped[list[Evidence]] = relationship(
        back_populates="tip", order_by="Evidence.id", cascade="all, delete-orphan"
    )
    events: Mapped[list[TipEvent]] = relationship(
        back_populates="tip", order_by="TipEvent.id", cascade="all, delete-orphan"
    )


class Evidence(Base):
    """A photo, document, video or voice message, kept as an encrypted Telegram file id."""

    __tablename__ = "evidence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tip_id: Mapped[int] = mapped_column(ForeignKey("tips.id", ondelete="CASCADE"), index=True)
    addition_id: Mapped[int | None] = mapped_column(ForeignKey("tip_additions.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # photo | document | video | voice | audio
    file_ref_enc: Mapped[str] = mapped_column(Text)
    caption_enc: Mapped[str | None] = mapped_column(Text)
    added_at: Mapped[datetime]

    tip: Mapped[Tip] = relationship(back_populates="evidence")


class TipAddition(Base):
    """More information a tipster added later, with the receipt code (maybe an answer)."""

    __tablename__ = "tip_additions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tip_id: Mapped[int] = mapped_column(ForeignKey("tips.id", ondelete="CASCADE"), index=True)
    question_id: Mapped[int | None] = mapped_column(ForeignKey("questions.id", ondelete="SET NULL"))
    text_enc: Mapped[str | None] = mapped_column(Text)
    added_at: Mapped[datetime]


class Question(Base):
    """A team's question to the tipster, shown when they come back with the receipt code."""

    __tablename__ = "questions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tip_id: Mapped[int] = mapped_column(ForeignKey("tips.id", ondelete="CASCADE"), index=True)
    asked_by: Mapped[int] = mapped_column(ForeignKey("staff.id"))
    asked_at: Mapped[datetime]
    text_enc: Mapped[str] = mapped_column(Text)
    answered_at: Mapped[datetime | None]


class DueStep(Base):
    """Due work: a reminder or an escalation of a deadline. `token` makes each step
    happen once, across restarts and processes; the sweeper sets `done_at`."""

    __tablename__ = "due_steps"
    __table_args__ = (
        Index("ix_due_steps_open", "done_at", "cancelled_at", "due_at"),
        Index("ix_due_steps_done_step", "step", "done_at", "deadline_kind"),  # the summary's escalations
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str] = mapped_column(String(160), unique=True)
    tip_id: Mapped[int | None] = mapped_column(ForeignKey("tips.id", ondelete="CASCADE"), index=True)
    action_id: Mapped[int | None] = mapped_column(ForeignKey("required_actions.id", ondelete="CASCADE"))
    deadline_kind: Mapped[str] = mapped_column(String(16))  # ack | outcome | action
    step: Mapped[str] = mapped_column(String(16))  # remind | escalate
    idx: Mapped[int] = mapped_column(Integer)
    due_at: Mapped[datetime]
    deadline: Mapped[datetime]
    done_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    # A step whose handling failed: tried again at the next sweep, given up (cancelled,
    # reported) after `jobs.MAX_STEP_ATTEMPTS`.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(256))


class Outcome(Base):
    """How a case ended, recorded by its team: verified, unfounded or transferred."""

    __tablename__ = "outcomes"
    __table_args__ = (Index("ix_outcomes_recorded", "recorded_at", "outcome"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tip_id: Mapped[int] = mapped_column(ForeignKey("tips.id", ondelete="CASCADE"), unique=True)
    outcome: Mapped[str] = mapped_column(String(16))
    unit_key: Mapped[str | None] = mapped_column(String(32))
    person_name: Mapped[str | None] = mapped_column(String(64))
    person_post: Mapped[str | None] = mapped_column(String(64))
    breach_category: Mapped[str | None] = mapped_column(String(32))
    finding_enc: Mapped[str | None] = mapped_column(Text)
    transferred_to_enc: Mapped[str | None] = mapped_column(Text)  # typed by staff: encrypted
    attachments_enc: Mapped[str | None] = mapped_column(Text)  # JSON [{kind, file_id}], encrypted
    recorded_by: Mapped[int] = mapped_column(ForeignKey("staff.id"))
    recorded_at: Mapped[datetime]


class Breach(Base):
    """A verified breach of work discipline by a named person: a step on the ladder.
    Staff are named in bulletins by the campaign's rules, so names are kept in clear."""

    __tablename__ = "breaches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    outcome_id: Mapped[int] = mapped_column(ForeignKey("outcomes.id", ondelete="CASCADE"), unique=True)
    tip_id: Mapped[int] = mapped_column(ForeignKey("tips.id", ondelete="CASCADE"), index=True)
    person_key: Mapped[str] = mapped_column(String(160), index=True)
    person_name: Mapped[str] = mapped_column(String(64))
    person_post: Mapped[str] = mapped_column(String(64))
    unit_key: Mapped[str] = mapped_column(String(32), index=True)
    category: Mapped[str] = mapped_column(String(32))
    occurred_on: Mapped[date] = mapped_column(Date)
    breach_number: Mapped[int] = mapped_column(Integer)
    in_bulletin: Mapped[bool] = mapped_column(Boolean)
    referral: Mapped[bool] = mapped_column(Boolean)
    leader_accountable: Mapped[bool] = mapped_column(Boolean)
    bulletin_id: Mapped[int | None] = mapped_column(Integer, index=True)
    created_at: Mapped[datetime]


class RequiredAction(Base):
    """What the ladder requires after a breach: a self-criticism, a rectification report,
    a referral to the discipline committee, accountability of the unit's leader."""

    __tablename__ = "required_actions"
    __table_args__ = (
        # the summary reads actions from these indexes alone: created since, received after,
        # or open and due after the period
        Index("ix_required_actions_created_at", "created_at", "kind", "received_at", "due_at"),
        Index("ix_required_actions_open", "received_at", "due_at", "kind", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    breach_id: Mapped[int] = mapped_column(ForeignKey("breaches.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(8))  # person | unit
    due_at: Mapped[datetime | None]
    received_at: Mapped[datetime | None]
    received_by: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    created_at: Mapped[datetime]


class NotifyContact(Base):
    """A tipster who opted in to be told of news. Keyed by an HMAC of the tip id with the
    contact key, the chat id encrypted with it: without that key a row names neither the
    tip nor the chat. Deleted when the case closes."""

    __tablename__ = "notify_contacts"

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    chat_enc: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    news_at: Mapped[datetime | None]  # something happened: tell the tipster (the sweeper does)
    final: Mapped[bool] = mapped_column(Boolean, default=False)  # the case closed: forget after telling
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # failed tries of this news


class AuditEntry(Base):
    """Every staff view and action on a tip: who, what, when."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    tip_id: Mapped[int | None] = mapped_column(ForeignKey("tips.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(512))  # never content: ids, teams, kinds
    quote_enc: Mapped[str | None] = mapped_column(Text)  # content the action quotes (a reason...), encrypted


class TipEvent(Base):
    """The tip's timeline. `public` events are shown to the tipster (without staff names)."""

    __tablename__ = "tip_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tip_id: Mapped[int] = mapped_column(ForeignKey("tips.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    team_number: Mapped[int | None] = mapped_column(Integer)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    public: Mapped[bool] = mapped_column(Boolean, default=True)
    detail_enc: Mapped[str | None] = mapped_column(Text)

    tip: Mapped[Tip] = relationship(back_populates="events")


OPEN_ROWS = text("status IN ('pending', 'sending')")


class OutboxMessage(Base):
    """A message to staff, written in the transaction that decided to send it.

    The sender delivers rows in id order per chat, with retries; `dedupe_key` makes the
    decision to send idempotent, `status` and `lease_until` make delivery survive crashes.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        # The claim reads these two indexes and nothing else, so its cost does not grow
        # with the queue (see bot/services/outbox.py): the heads that are due, in order...
        Index("ix_outbox_ready", "ready_at", "id"),
        # ... and the leases that ran out.
        Index("ix_outbox_lease", "lease_until"),
        # A chat's open rows in order: the next head when one is done, found in one probe.
        Index("ix_outbox_open_chat", "chat_id", "id", sqlite_where=OPEN_ROWS, postgresql_where=OPEN_ROWS),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(128), unique=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    method: Mapped[str] = mapped_column(String(32))
    payload_enc: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(String(32))
    tip_id: Mapped[int | None] = mapped_column(ForeignKey("tips.id", ondelete="SET NULL"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    last_error: Mapped[str | None] = mapped_column(String(256))
    broadcast_id: Mapped[int | None] = mapped_column(Integer, index=True)  # officials' broadcasts
    # Set only on the head row of its chat (the oldest open one) while it waits: when it
    # may be sent. NULL while it is in flight, done, or waits behind an older row.
    ready_at: Mapped[datetime | None]


class UpdateJournal(Base):
    """Each update fetched from Telegram, saved before it is confirmed.

    The payload (the least the handlers need; it still names the sender's chat) is sealed
    under a rotating journal key (bot/sealing.py, `key_id`) and erased once processed; when
    the key's period is over, a row still unprocessed is re-sealed under the current key
    (bot/resealing.py) and the old key destroyed. The bare update id stays a while so
    that a re-delivered update is recognised. Times are kept to the minute. A process
    handles a row under a lease (`claimed_by`, `lease_until`, from the database's clock);
    a failed row waits for `next_attempt_at`. `chat_key` names the row's chat under a journal
    key (never the chat's id), so that one process at a time handles a chat's rows.
    """

    __tablename__ = "update_journal"

    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    payload_enc: Mapped[str | None] = mapped_column(Text)
    key_id: Mapped[str | None] = mapped_column(String(40))
    received_at: Mapped[datetime]
    processed_at: Mapped[datetime | None] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    # Which chat the row belongs to, as a tag under the row's journal key (bot/chatorder.py):
    # keeps one chat's updates in order across processes; erased with the payload.
    chat_key: Mapped[str | None] = mapped_column(String(80), index=True)


class DirectoryVersion(Base):
    """One row whose `stamp` database triggers change whenever `staff` or `team_chats`
    change: the in-memory directory of staff ids (storage/directory.py) reloads then."""

    __tablename__ = "directory_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    stamp: Mapped[int] = mapped_column(BigInteger)


class SummaryCounter(Base):
    """A running count for the daily summary (storage/rollup.py): kept by triggers."""

    __tablename__ = "summary_counters"

    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(16), primary_key=True)  # '' or 'YYYY-MM-DD HH' (UTC)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class SummaryDelta(Base):
    """A change to a running count, appended by a trigger, folded into the counters."""

    __tablename__ = "summary_deltas"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    metric: Mapped[str] = mapped_column(String(32))
    bucket: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(64))
    n: Mapped[int] = mapped_column(Integer)


class KeyValue(Base):
    """Small durable settings (e.g. the polling offset)."""

    __tablename__ = "kv"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


__all__ = [
    "AuditEntry",
    "Base",
    "Breach",
    "DirectoryVersion",
    "DueStep",
    "NotifyContact",
    "Outcome",
    "Question",
    "RequiredAction",
    "Evidence",
    "Invite",
    "KeyValue",
    "OutboxMessage",
    "Staff",
    "SummaryCounter",
    "SummaryDelta",
    "TeamChat",
    "Tip",
    "TipAddition",
    "TipEvent",
    "UTCDateTime",
    "UpdateJournal",
]

# The officials' tables live in their own module; imported here so that Alembic sees them.
from storage import models_officials  # noqa: E402,F401


class PendingReceipt(Base):
    """A receipt code on its way to the chat that submitted the tip, kept only until that
    chat has the message: the code and the chat are sealed together (never in clear) and
    the row is deleted on delivery, or when delivery is given up (then the tip is marked
    `receipt_undelivered`)."""

    __tablename__ = "pending_receipts"

    tip_id: Mapped[int] = mapped_column(ForeignKey("tips.id", ondelete="CASCADE"), primary_key=True)
    sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_until: Mapped[datetime | None]


class Conversation(Base):
    """A conversation in progress (a citizen's draft or receipt session, a staff member's
    guided flow or /enter, the office's "Edit note" prompt, a back-off counter), kept so
    that a restart continues it. Filed under a keyed pseudonym of the chat (never an id);
    the state is JSON sealed under the update journal's rotating keys (`key_id` names the
    key, so the journal keeps it while a row needs it). Re-sealed under the current key on
    every write and by the maintenance job; deleted when finished or expired."""

    __tablename__ = "conversations"

    pseudonym: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    sealed: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(40), index=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    # Bumped by every write (compare-and-set); another process that cached an older one
    # reads the row again. Re-sealing keeps it (same content).
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class SenderLead(Base):
    """Which process sends the outbox (one at a time per database, hence per bot token):
    the holder renews `until` every second; when it stops renewing (it died, stalled or
    lost the database) another process takes the row once `until` has passed."""

    __tablename__ = "sender_lead"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128))  # host:pid:random of the process
    since: Mapped[datetime | None]  # when this holder took it
    renewed_at: Mapped[datetime | None]
    until: Mapped[datetime | None]
