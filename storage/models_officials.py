"""Officials' tables: subscriptions, scheduled runs, bulletins, broadcasts and stored files.

Officials are staff (`staff.role == "official"`); their Telegram ids are stored like any
staff member's. Nothing here refers to a tipster.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base


class Subscription(Base):
    """What an official receives. One row per official, created when they join."""

    __tablename__ = "subscriptions"

    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), primary_key=True)
    daily_summary: Mapped[bool] = mapped_column(Boolean)
    bulletins: Mapped[bool] = mapped_column(Boolean)
    escalations: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime]


class ScheduledRun(Base):
    """One run of a scheduled job for one period. The unique (job, period) key makes a
    run happen once across restarts and processes: it is inserted in the transaction
    that queues the run's messages."""

    __tablename__ = "scheduled_runs"
    __table_args__ = (UniqueConstraint("job", "period", name="uq_scheduled_runs_job_period"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job: Mapped[str] = mapped_column(String(32))  # summary | bulletin
    period: Mapped[str] = mapped_column(String(32))  # ISO date of the run
    ran_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(64))  # e.g. "sent to 12", "draft 3", "empty"


class Bulletin(Base):
    """通报 第N期. The number is given when the draft is made and never reused: drafts are
    never deleted, and at most one draft is open at a time (later cases join it)."""

    __tablename__ = "bulletins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # draft | held | published
    period: Mapped[str] = mapped_column(String(32))
    breach_ids: Mapped[str] = mapped_column(Text)  # JSON list, in bulletin order
    note_enc: Mapped[str | None] = mapped_column(Text)  # the office's note, encrypted
    created_at: Mapped[datetime]
    issued_on: Mapped[str] = mapped_column(String(10))  # local date printed on it
    published_at: Mapped[datetime | None]
    published_by: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))


class Broadcast(Base):
    """One message (summary, bulletin, notice) to many subscribers. Its outbox rows carry
    `broadcast_id`; progress is counted from them."""

    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # summary | bulletin | notice | escalations
    ref: Mapped[str] = mapped_column(String(64))  # period or bulletin number
    recipients: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class Blob(Base):
    """A file sent to many chats (a chart, a bulletin document): uploaded once, then sent
    by the file id Telegram gave it."""

    __tablename__ = "blobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    filename: Mapped[str] = mapped_column(String(128))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    telegram_file_id: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime]


__all__ = ["Blob", "Broadcast", "Bulletin", "ScheduledRun", "Subscription"]
