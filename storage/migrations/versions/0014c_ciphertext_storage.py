"""every ciphertext column stored without compression (PostgreSQL)

Revision ID: 0014c
Revises: 0014d

0013d did it for the outbox's payloads. The other columns holding Fernet tokens (a tip's
text and place, the journal's updates, a conversation's sealed state, findings, notes...)
are base64 of ciphertext as well: pglz cannot shrink them, yet PostgreSQL tries on every
value over 2 kB before it stores it as it is. A long tip (a few thousand characters) is
such a value in the tip, in the journal and in the conversation that drafted it.
STORAGE EXTERNAL keeps them out of line, uncompressed; only new values are affected, and
the setting is a catalog change (no table is rewritten). Columns in clear (a bulletin's
HTML document in `blobs`) compress and keep the default.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0014c"
down_revision: str | None = "0014d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CIPHERTEXT = {
    "tips": ("unit_other_enc", "place_enc", "text_enc"),
    "evidence": ("file_ref_enc", "caption_enc"),
    "tip_additions": ("text_enc",),
    "questions": ("text_enc",),
    "outcomes": ("finding_enc", "transferred_to_enc", "attachments_enc"),
    "notify_contacts": ("chat_enc",),
    "audit_log": ("quote_enc",),
    "tip_events": ("detail_enc",),
    "update_journal": ("payload_enc",),
    "pending_receipts": ("sealed",),
    "conversations": ("sealed",),
    "bulletins": ("note_enc",),
}


def _set(storage: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, cols in CIPHERTEXT.items():
        op.execute(f"ALTER TABLE {table} " + ", ".join(f"ALTER COLUMN {c} SET STORAGE {storage}" for c in cols))


def upgrade() -> None:
    _set("EXTERNAL")


def downgrade() -> None:
    _set("EXTENDED")
