"""conversations: a version, so that every process sees the latest step of a chat

Revision ID: 0013a
Revises: 0013d

With several webhook processes on one database, a chat's updates may go to any of them.
Each process keeps conversations in memory; the version tells it, with one small read per
update, whether another process changed (or finished) the conversation since, and makes
writes compare-and-set. Existing rows start at 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013a"
down_revision: str | None = "0013d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_column("version")
