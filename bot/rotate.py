"""`tipline rotate-keys`: every column encrypted with the data key re-encrypted under a new
one, then the old key retired.

1. A new data key is generated and written into config.toml in front of the old one
   (`data_key = "NEW,OLD"`): Fernet's MultiFernet encrypts with the first key and decrypts
   with any, so the database is readable throughout.
2. Every encrypted column, table by table in primary-key order, is re-encrypted under the
   new key in batches, each batch its own transaction; a progress bar counts the rows.
3. Only when every row is done is the old key removed from config.toml (`data_key = "NEW"`).

Interrupted (a crash, Ctrl-C), it is resumed by running it again: while config.toml holds
more than one data key, rotate-keys generates no new key and finishes the rotation to the
first one (a row already under it is simply re-encrypted). Run it with the bot stopped: a
running bot holds the old key only and cannot read rows already rotated.
The contact key (notify_contacts) and the pepper (receipt-code hashes: they cannot be
recomputed without the codes) are not rotated by it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from sqlalchemy import Column, Engine, Table, func, select, update

from bot.keyfile import write_private
from bot.security import DecryptionError, Keyring, new_data_key
from storage.models import Base

# Encrypted with another key than the data key.
NOT_DATA_KEY = {("notify_contacts", "chat_enc")}
# Under the data key or the contact key (receipts on their way: the data key only when no
# contact key is configured): re-encrypted when the data key opens them.
EITHER_KEY = {("pending_receipts", "sealed")}
BATCH = 500
FERNET_PREFIX = "gAAAAA"  # a bare Fernet token (version byte 0x80): the data key's


@dataclass(frozen=True, slots=True)
class EncryptedColumn:
    table: Table
    column: Column  # type: ignore[type-arg]
    maybe_other_key: bool = False

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column.name}"


def encrypted_columns() -> list[EncryptedColumn]:
    """Every column the data key encrypts: by convention, its name ends in `_enc`."""
    out = []
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if column.name.endswith("_enc") and (table.name, column.name) not in NOT_DATA_KEY:
                out.append(EncryptedColumn(table, column))
            elif (table.name, column.name) in EITHER_KEY:
                out.append(EncryptedColumn(table, column, maybe_other_key=True))
    return out


class Progress:
    """A progress bar on a terminal (a line per 10% elsewhere)."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.total, self.done, self.stream, self.width = total, 0, stream or sys.stderr, width
        self._tty = hasattr(stream, "isatty") and stream.isatty()
        self._last_decile = -1

    def advance(self, n: int, label: str) -> None:
        self.done += n
        share = self.done / self.total if self.total else 1.0
        filled = int(share * self.width)
        bar = f"[{'#' * filled}{'.' * (self.width - filled)}] {share:6.1%} {self.done}/{self.total} rows  {label}"
        if self._tty:
            self.stream.write("\r" + bar[:120].ljust(120))
            self.stream.flush()
        elif int(share * 10) != self._last_decile:
            self._last_decile = int(share * 10)
            self.stream.write(bar + "\n")

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")


def set_data_key(config_path: Path, keys: list[str]) -> None:
    """Rewrite config.toml's `data_key = "..."` line (the file stays 0600 throughout)."""
    text = config_path.read_text(encoding="utf-8")
    new, count = re.subn(r'(?m)^(\s*data_key\s*=\s*)"[^"\n]*"', lambda m: f'{m.group(1)}"{",".join(keys)}"',
                         text, count=1)
    if count != 1:
        raise ValueError(f"{config_path}: no data_key line in [security] to rewrite")
    write_private(config_path, new, replace=True)


def reencrypt(engine: Engine, keyring: Keyring, progress: Callable[[int, str], None] | None = None) -> int:
    """Re-encrypt every encrypted column under the keyring's first key; returns the rows done."""
    done = 0
    for enc in encrypted_columns():
        pk = list(enc.table.primary_key.columns)
        if len(pk) != 1:
            raise ValueError(f"{enc.name}: rotate-keys needs a single-column primary key")
        key = pk[0]
        last = None
        while True:
            query = select(key, enc.column).where(enc.column.is_not(None)).order_by(key).limit(BATCH)
            if last is not None:
                query = query.where(key > last)
            with engine.begin() as conn:
                rows = conn.execute(query).all()
                for row_key, token in rows:
                    if not token.startswith(FERNET_PREFIX):
                        continue  # sealed under another key (the update journal's own): not the data key's
                    try:
                        rotated = keyring.rotate(token)
                    except DecryptionError:
                        if enc.maybe_other_key:
                            continue
                        raise
                    conn.execute(update(enc.table).where(key == row_key).values({enc.column.name: rotated}))
            if not rows:
                break
            last = rows[-1][0]
            done += len(rows)
            if progress is not None:
                progress(len(rows), enc.name)
    return done


def count_rows(engine: Engine) -> int:
    total = 0
    with engine.connect() as conn:
        for enc in encrypted_columns():
            total += conn.execute(select(func.count()).select_from(enc.table).where(enc.column.is_not(None))).scalar_one()
    return total


def rotate(config_path: Path, engine: Engine, current_keys: list[str], make_keyring: Callable[[str], Keyring],
           stream: TextIO | None = None) -> str:
    """Rotate to a new data key (or finish an interrupted rotation); returns the key in use."""
    stream = stream or sys.stderr
    if len(current_keys) > 1:
        keys = current_keys
        stream.write(f"resuming an interrupted rotation to the first of {len(keys)} data keys\n")
    else:
        keys = [new_data_key(), *current_keys]
        set_data_key(config_path, keys)
        stream.write("new data key written to the configuration (the old one still decrypts)\n")
    keyring = make_keyring(",".join(keys))
    bar = Progress(count_rows(engine), stream)
    reencrypt(engine, keyring, bar.advance)
    bar.close()
    set_data_key(config_path, keys[:1])
    stream.write("every encrypted column is under the new data key; the old key is retired\n")
    return keys[0]
