"""Restart to first answer: how long after `tipline run` is started does a citizen who
wrote while it was down get an answer? Each run starts the real process (as systemd or a
container runtime would) against the fake Bot API on 127.0.0.1, with a /start waiting in
the update queue; the figure is from process start to the fake server receiving the reply.
Prints figures; asserts nothing.

    python -m bench.restart [--runs 5] [--database-url URL of a scratch database]

The database is created and migrated by the first run; the later runs are restarts on an
existing database (the usual case). The machine is shared: compare medians, by ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import EXAMPLE, ROOT, TEST_DATA_KEY, TEST_PEPPER
from tests.fakebot import FakeBotAPI

TOKEN = "123456:TEST-TOKEN"


def _config(directory: Path, database_url: str) -> Path:
    body = EXAMPLE.read_text(encoding="utf-8")
    body = body.replace('pepper = ""', f'pepper = "{TEST_PEPPER}"', 1)
    body = body.replace('data_key = ""', f'data_key = "{TEST_DATA_KEY}"', 1)
    body = body.replace('url = "sqlite:///data/tipline.sqlite3"', f'url = "{database_url}"', 1)
    path = directory / "config.toml"
    path.write_text(body, encoding="utf-8")
    return path


async def one(server: FakeBotAPI, config: Path, user_id: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
    env.update(TIPLINE_BOT_TOKEN=TOKEN, TIPLINE_TELEGRAM_BASE_URL=server.base_url,
               TIPLINE_TELEGRAM_BASE_FILE_URL=server.base_file_url, TIPLINE_TELEGRAM_POLL_TIMEOUT_SECONDS="5")
    server.push_message(server.user(user_id, "Bench"), "/start")  # written while tipline is down
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot.cli", "--config", str(config), "run",
                                                cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        await server.wait_for(lambda: server.sent_to(user_id), 120, message="the first answer")
        return time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()


async def run(runs: int, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        config = _config(Path(tmp), url)
        async with FakeBotAPI(TOKEN, global_per_second=None, per_chat_per_second=None,
                              group_per_minute=None) as server:
            first = await one(server, config, 8_100_000)
            times = [await one(server, config, 8_100_001 + i) for i in range(runs)]
    print(f"restart to first answer ({'PostgreSQL' if url.startswith('postgresql') else 'SQLite'}):")
    print(f"  first start (creates the database): {first:.2f} s")
    print(f"  restarts: median {statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s "
          f"over {runs} runs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    asyncio.run(run(args.runs, args.database_url))


if __name__ == "__main__":
    main()
