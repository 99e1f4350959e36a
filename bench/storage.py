"""Ciphertext columns on PostgreSQL: inserts with STORAGE EXTENDED (pglz tries every value
over 2 kB) against EXTERNAL (stored as it is; migrations 0013d and 0014c).

    python -m bench.scale_db --database-url URL --tips 1000000      # once (PostgreSQL)
    python -m bench.storage --database-url URL [--runs 5] [--rows 500] [--chars 3000]

Long tips (--chars characters of Chinese text, sealed as the bot seals them) go in as
--rows journal rows and as --rows tips, row by row as the intake writes them, in a
transaction rolled back; the column's storage is switched inside that transaction, so both
sides run on the same tables, alternately. Prints medians per row. Asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, datetime

from cryptography.fernet import Fernet
from sqlalchemy import text

from storage.db import make_engine

CASES = {
    "update_journal": ("payload_enc", text(
        "INSERT INTO update_journal (update_id, payload_enc, key_id, received_at, attempts) "
        "VALUES (:n, :token, 'bench', :now, 0)")),
    "tips": ("text_enc", text(
        "INSERT INTO tips (receipt_hash, channel, category, unit_key, unit_other_enc, place_enc, text_enc, state, "
        "team_number, route_rule, route_reason, created_at, routed_at, ack_due_at, receipt_undelivered) "
        "SELECT 'bench' || :n, channel, category, unit_key, NULL, place_enc, :token, state, team_number, route_rule, "
        "route_reason, :now, :now, :now, false FROM tips WHERE id = (SELECT min(id) FROM tips)")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--chars", type=int, default=3000)
    args = parser.parse_args()
    engine = make_engine(args.database_url)
    assert engine.dialect.name == "postgresql", "a PostgreSQL setting"
    rng = random.Random(1)
    fernet = Fernet(Fernet.generate_key())
    tokens = [fernet.encrypt("".join(chr(rng.randrange(0x4E00, 0x9FA5)) for _ in range(args.chars)).encode())
              .decode() for _ in range(args.rows)]
    now = datetime.now(UTC)
    print(f"{args.rows} rows of {len(tokens[0]):,}-character tokens ({args.chars} characters sealed), "
          f"medians of {args.runs} runs")
    for table, (column, insert) in CASES.items():
        times: dict[str, list[float]] = {"EXTENDED": [], "EXTERNAL": []}
        for _ in range(args.runs):
            for storage in times:
                with engine.connect() as conn:
                    trans = conn.begin()
                    conn.execute(text(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE {storage}"))
                    began = time.perf_counter()
                    for i, token in enumerate(tokens):
                        conn.execute(insert, {"n": 9_000_000_000 + i, "token": token, "now": now})
                    times[storage].append(time.perf_counter() - began)
                    trans.rollback()
        extended, external = (statistics.median(times[k]) / args.rows * 1000 for k in times)
        print(f"{table}.{column:12} EXTERNAL {external:6.3f} ms/row   EXTENDED {extended:6.3f} ms/row   "
              f"{extended / external:4.2f}x")
    engine.dispose()


if __name__ == "__main__":
    main()
