"""The export on a province-sized database: time and peak memory, against the same SELECT
written with the database driver and `csv` (the floor for any CSV export).

    python -m bench.scale_db --database-url URL --tips 1000000      # once
    python -m bench.export --database-url URL [--runs 3] [--with-content]

Each run is a child process, so its peak RSS is its own. Prints, per variant: median
seconds, rows/s, peak RSS; then the ratio tipline / driver. Audit entries of an export with
content are written (as `tipline export` does) and rolled back. With content, the driver's
side writes the ciphertext as it is; a third variant, `decrypt`, also decrypts it (the
floor for an export with content in clear). Asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any


def child(url: str, variant: str, with_content: bool) -> dict[str, Any]:
    from sqlalchemy.orm import Session

    from bench.scale_db import bench_config
    from bot.app import build_deps
    from bot.clock import FakeClock
    from bot.services import export
    from bot.services.audit import record_many
    from storage.db import make_engine

    engine = make_engine(url)
    config = bench_config(url)
    from datetime import UTC, datetime
    deps, _ = build_deps(config, FakeClock(datetime(2026, 8, 1, tzinfo=UTC)), engine)
    began = time.perf_counter()
    n = 0
    with open(os.devnull, "wb") as out:
        if variant == "tipline":
            with engine.connect() as conn:
                trans = conn.begin()
                with Session(bind=conn) as session:
                    now = deps.clock.now()

                    def audit(ids: list[int]) -> None:
                        if with_content:  # as `tipline export --with-content` records them
                            record_many(session, staff_id=None, tip_ids=ids, action="exported",
                                        detail="cli, with content", at=now)

                    result = export.export(session, deps, out, fmt="csv", with_content=with_content,
                                           on_batch=audit)
                    n = result.tips
                trans.rollback()
        else:  # the driver and csv: the same SELECT, no conversion at all
            query = export._query(deps, export.Period(), with_content)
            compiled = query.compile(dialect=engine.dialect)
            raw = engine.raw_connection()
            try:
                if engine.dialect.name == "postgresql":
                    cur = raw.cursor(name="bench_export")  # server-side, as tipline's
                    cur.itersize = 2000
                else:
                    cur = raw.cursor()
                cur.execute(str(compiled), compiled.params if engine.dialect.name == "postgresql"
                            else compiled.positiontup and [compiled.params[k] for k in compiled.positiontup])
                import io
                text = io.TextIOWrapper(out, encoding="utf-8-sig", newline="", write_through=True)
                writer = csv.writer(text)
                opened = deps.keyring.decrypt_opt
                while True:
                    batch = cur.fetchmany(2000)
                    if not batch:
                        break
                    if variant == "decrypt":  # the last three columns: the content
                        batch = [r[:-3] + (opened(r[-3]), opened(r[-2]), opened(r[-1])) for r in batch]
                    writer.writerows(batch)
                    n += len(batch)
                text.flush()
                text.detach()
            finally:
                raw.close()
    seconds = time.perf_counter() - began
    return {"rows": n, "seconds": seconds, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--with-content", action="store_true")
    parser.add_argument("--child", choices=("tipline", "driver", "decrypt"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.database_url, args.child, args.with_content)))
        return
    results: dict[str, list[dict[str, Any]]] = {"tipline": [], "driver": []}
    if args.with_content:
        results["decrypt"] = []
    for _ in range(args.runs):
        for variant in results:
            cmd = [sys.executable, "-m", "bench.export", "--database-url", args.database_url, "--child", variant]
            if args.with_content:
                cmd.append("--with-content")
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            results[variant].append(json.loads(out.strip().splitlines()[-1]))
    summary = {}
    for variant, runs in results.items():
        s = statistics.median(r["seconds"] for r in runs)
        rss = max(r["rss_mib"] for r in runs)
        summary[variant] = s
        print(f"{variant:8} {runs[0]['rows']:>9,} rows  median {s:7.2f} s  {runs[0]['rows'] / s:9,.0f} rows/s  "
              f"peak RSS {rss:6.0f} MiB")
    content = "with content" if args.with_content else "summary fields"
    print(f"export CSV ({content}): tipline / driver+csv = {summary['tipline'] / summary['driver']:.2f}x "
          f"(target <= 2x); peak memory target <= 200 MiB")
    if "decrypt" in summary:
        print(f"  tipline / driver+csv+decryption = {summary['tipline'] / summary['decrypt']:.2f}x")


if __name__ == "__main__":
    main()
