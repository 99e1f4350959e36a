"""outbox heads: ready_at and the indexes of an O(1) claim; attempts of due steps and news

Revision ID: 0005
Revises: 0006
Create Date: 2026-11-27 13:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0005"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_ROWS = sa.text("status IN ('pending', 'sending')")


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ready_at", storage.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_outbox_ready", ["ready_at", "id"], unique=False)
        batch_op.create_index("ix_outbox_lease", ["lease_until"], unique=False)
        batch_op.create_index("ix_outbox_open_chat", ["chat_id", "id"], unique=False,
                              sqlite_where=OPEN_ROWS, postgresql_where=OPEN_ROWS)
    # The head of each chat that waits now becomes ready (once, at the upgrade).
    op.execute(
        "UPDATE outbox SET ready_at = next_attempt_at WHERE status = 'pending' AND id IN "
        "(SELECT min(id) FROM outbox WHERE status IN ('pending', 'sending') GROUP BY chat_id)"
    )
    with op.batch_alter_table("due_steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("last_error", sa.String(length=256), nullable=True))
    with op.batch_alter_table("notify_contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("notify_contacts", schema=None) as batch_op:
        batch_op.drop_column("attempts")
    with op.batch_alter_table("due_steps", schema=None) as batch_op:
        batch_op.drop_column("last_error")
        batch_op.drop_column("attempts")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_open_chat")
        batch_op.drop_index("ix_outbox_lease")
        batch_op.drop_index("ix_outbox_ready")
        batch_op.drop_column("ready_at")
