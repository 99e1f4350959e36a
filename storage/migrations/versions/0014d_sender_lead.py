"""sender_lead: one process at a time sends the outbox

Revision ID: 0014d
Revises: 0013a

Several webhook processes on one bot token each paced themselves, so together they could
exceed Telegram's limits. The process holding this row's lease is the only one that
sends; the others keep queueing and take over when its lease runs out.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage.models import UTCDateTime

revision: str = "0014d"
down_revision: str | None = "0013a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sender_lead",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=True),
        sa.Column("since", UTCDateTime(), nullable=True),
        sa.Column("renewed_at", UTCDateTime(), nullable=True),
        sa.Column("until", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sender_lead")),
    )


def downgrade() -> None:
    op.drop_table("sender_lead")
