"""update journal: each unprocessed row's chat as a tag under its journal key (webhook mode)

Revision ID: 0012c
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012c"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("update_journal", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chat_key", sa.String(length=80), nullable=True))
        batch_op.create_index(batch_op.f("ix_update_journal_chat_key"), ["chat_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("update_journal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_update_journal_chat_key"))
        batch_op.drop_column("chat_key")
