"""anonymity: directory_version (+ triggers on staff and team_chats); free text encrypted
(audit_log.quote_enc, bulletins.note_enc, outcomes.transferred_to_enc)

Revision ID: 0007
Revises: 0008
Create Date: 2026-11-27 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = '0007'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WATCHED = ("staff", "team_chats")
# (table, primary key, clear column, encrypted column)
MOVED = (("bulletins", "id", "note", "note_enc"), ("outcomes", "id", "transferred_to", "transferred_to_enc"))


def _keyring():  # type: ignore[no-untyped-def]
    return context.config.attributes.get("keyring")


def upgrade() -> None:
    op.create_table('directory_version',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('stamp', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_directory_version'))
    )
    op.execute("INSERT INTO directory_version (id, stamp) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION tipline_directory_changed() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN UPDATE directory_version SET stamp = floor(random() * 9007199254740991)::bigint WHERE id = 1; "
            "RETURN NULL; END $$"
        )
        for table in WATCHED:
            op.execute(f"CREATE TRIGGER tr_{table}_directory AFTER INSERT OR UPDATE OR DELETE ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION tipline_directory_changed()")
    else:
        for table in WATCHED:
            for event in ("INSERT", "UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER tr_{table}_directory_{event.lower()} AFTER {event} ON {table} "
                           "BEGIN UPDATE directory_version SET stamp = random() WHERE id = 1; END")

    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quote_enc', sa.Text(), nullable=True))
    with op.batch_alter_table('bulletins', schema=None) as batch_op:
        batch_op.add_column(sa.Column('note_enc', sa.Text(), nullable=True))
    with op.batch_alter_table('outcomes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('transferred_to_enc', sa.Text(), nullable=True))
    bind = op.get_bind()
    for table, pk, clear, enc in MOVED:
        rows = bind.execute(sa.text(f"SELECT {pk}, {clear} FROM {table} WHERE {clear} IS NOT NULL")).all()
        if rows:
            keyring = _keyring()
            if keyring is None:
                raise RuntimeError(f"{table}.{clear} holds text to encrypt: run `tipline migrate` with the "
                                   "configuration (its data key)")
            for key, value in rows:
                bind.execute(sa.text(f"UPDATE {table} SET {enc} = :v WHERE {pk} = :k"),
                             {"v": keyring.encrypt(value), "k": key})
    with op.batch_alter_table('bulletins', schema=None) as batch_op:
        batch_op.drop_column('note')
    with op.batch_alter_table('outcomes', schema=None) as batch_op:
        batch_op.drop_column('transferred_to')


def downgrade() -> None:
    with op.batch_alter_table('outcomes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('transferred_to', sa.String(length=128), nullable=True))
    with op.batch_alter_table('bulletins', schema=None) as batch_op:
        batch_op.add_column(sa.Column('note', sa.Text(), nullable=True))
    bind = op.get_bind()
    for table, pk, clear, enc in MOVED:
        rows = bind.execute(sa.text(f"SELECT {pk}, {enc} FROM {table} WHERE {enc} IS NOT NULL")).all()
        if rows:
            keyring = _keyring()
            if keyring is None:
                raise RuntimeError(f"{table}.{enc} must be decrypted: downgrade with the data key")
            for key, value in rows:
                bind.execute(sa.text(f"UPDATE {table} SET {clear} = :v WHERE {pk} = :k"),
                             {"v": keyring.decrypt(value), "k": key})
    with op.batch_alter_table('outcomes', schema=None) as batch_op:
        batch_op.drop_column('transferred_to_enc')
    with op.batch_alter_table('bulletins', schema=None) as batch_op:
        batch_op.drop_column('note_enc')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_column('quote_enc')
    if op.get_bind().dialect.name == "postgresql":
        for table in WATCHED:
            op.execute(f"DROP TRIGGER tr_{table}_directory ON {table}")
        op.execute("DROP FUNCTION tipline_directory_changed()")
    else:
        for table in WATCHED:
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER tr_{table}_directory_{event}")
    op.drop_table('directory_version')
