"""receipts: pending receipt deliveries; tips.submit_key and tips.receipt_undelivered

Revision ID: 0006
Revises: 0009
Create Date: 2026-11-27 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models


revision: str = '0006'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('pending_receipts',
    sa.Column('tip_id', sa.Integer(), nullable=False),
    sa.Column('sealed', sa.Text(), nullable=False),
    sa.Column('created_at', storage.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', storage.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('claimed_until', storage.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tip_id'], ['tips.id'], name=op.f('fk_pending_receipts_tip_id_tips'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tip_id', name=op.f('pk_pending_receipts'))
    )
    with op.batch_alter_table('pending_receipts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pending_receipts_next_attempt_at'), ['next_attempt_at'], unique=False)

    with op.batch_alter_table('tips', schema=None) as batch_op:
        batch_op.add_column(sa.Column('submit_key', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('receipt_undelivered', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
        batch_op.create_unique_constraint(batch_op.f('uq_tips_submit_key'), ['submit_key'])


def downgrade() -> None:
    with op.batch_alter_table('tips', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_tips_submit_key'), type_='unique')
        batch_op.drop_column('receipt_undelivered')
        batch_op.drop_column('submit_key')

    with op.batch_alter_table('pending_receipts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pending_receipts_next_attempt_at'))

    op.drop_table('pending_receipts')
