"""outbox payloads stored without compression (PostgreSQL)

Revision ID: 0013d
Revises: 0011b

A payload is a Fernet token: ciphertext in base64, which does not compress. PostgreSQL
still runs pglz over every value above 2 kB before it gives up and stores it as it is:
queueing a bulletin draft of 180 parts (13 kB each) to 5 office members spent 0.3-0.5 s
of a 0.07 s insert doing so. STORAGE EXTERNAL keeps the values out of line as before,
uncompressed. SQLite has no such step.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013d"
down_revision: str | None = "0011b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE outbox ALTER COLUMN payload_enc SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE outbox ALTER COLUMN payload_enc SET STORAGE EXTENDED")
