"""Restart to first answer: how long after `tipline run` is started does a citizen who
wrote while it was down get an answer? Each run starts the real process (as systemd or a
container runtime would) against the fake Bot API on 127.0.0.1, with a /start waiting in
the update queue; the figure is from process start to the fake server receiving the reply.
With `--mid-draft`, the citizen was half-way through a tip when the process was killed
(SIGKILL) and types the next step while it is down: the figure is from the new process's
start to the answer that continues the draft (its conversation loaded from the database).
Prints figures; asserts nothing.

    python -m bench.restart [--runs 5] [--mid-draft] [--database-url URL of a scratch database]

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


async def _spawn(server: FakeBotAPI, config: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
    env.update(TIPLINE_BOT_TOKEN=TOKEN, TIPLINE_TELEGRAM_BASE_URL=server.base_url,
               TIPLINE_TELEGRAM_BASE_FILE_URL=server.base_file_url, TIPLINE_TELEGRAM_POLL_TIMEOUT_SECONDS="5",
               TIPLINE_JOURNAL_KEY_DIR=str(config.parent / "journal-keys"))
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "bot.cli", "--config", str(config), "run",
                                                cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)


async def one(server: FakeBotAPI, config: Path, user_id: int) -> float:
    server.push_message(server.user(user_id, "Bench"), "/start")  # written while tipline is down
    started = time.monotonic()
    proc = await _spawn(server, config)
    try:
        await server.wait_for(lambda: server.sent_to(user_id), 120, message="the first answer")
        return time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()


def _said(server: FakeBotAPI, user_id: int, mark: int, text: str) -> dict | None:
    for record in server.sent_to(user_id)[mark:]:
        if text in (record.get("plain_text") or record.get("text") or ""):
            return record
    return None


async def _step(server: FakeBotAPI, user: dict, act: str, arg: str | dict, expect: str, label: str = "") -> dict:
    mark = len(server.sent_to(user["id"]))
    if act == "say":
        server.push_message(user, arg)
    else:
        server.press(user, arg, label)
    return await server.wait_for(lambda: _said(server, user["id"], mark, expect), 120, message=expect)


async def mid_draft(server: FakeBotAPI, config: Path, runs: int) -> list[float]:
    """Each run: a citizen gets to "what happened?" in a running process, which is then
    killed; they type it while tipline is down; time from the new process's start to the
    answer that asks for evidence."""
    proc = await _spawn(server, config)
    times: list[float] = []
    try:
        for i in range(runs):
            user = server.user(8_200_001 + i, "Bench")
            menu = await _step(server, user, "say", "/start", "查询码")
            cats = await _step(server, user, "press", menu, "第 1 步", "📝")
            units = await _step(server, user, "press", cats, "第 2 步", "迟到早退脱岗")
            await _step(server, user, "press", units, "第 3 步", "定昌镇")
            await _step(server, user, "say", "11月27日上午，便民服务大厅", "第 4 步")
            while server.pending_updates:  # the last step confirmed to Telegram, i.e. journaled
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # and handled, its conversation saved
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            mark = len(server.sent_to(user["id"]))
            server.push_message(user, "窗口工作人员九点半还没有到岗，群众排队等了很久。")  # while it is down
            started = time.monotonic()
            proc = await _spawn(server, config)
            await server.wait_for(lambda m=mark, u=user: _said(server, u["id"], m, "第 5 步"), 120,
                                  message="the draft's next step")
            times.append(time.monotonic() - started)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
    return times


async def run(runs: int, database_url: str | None, draft: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        config = _config(Path(tmp), url)
        async with FakeBotAPI(TOKEN, global_per_second=None, per_chat_per_second=None,
                              group_per_minute=None) as server:
            first = await one(server, config, 8_100_000)
            if draft:
                times = await mid_draft(server, config, runs)
            else:
                times = [await one(server, config, 8_100_001 + i) for i in range(runs)]
    print(f"restart to first answer ({'PostgreSQL' if url.startswith('postgresql') else 'SQLite'}):")
    print(f"  first start (creates the database): {first:.2f} s")
    what = "after kill -9, to a citizen mid-draft" if draft else "restarts"
    print(f"  {what}: median {statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s "
          f"over {runs} runs; load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url")
    parser.add_argument("--mid-draft", action="store_true",
                        help="the citizen was half-way through a tip when the process was killed")
    args = parser.parse_args()
    asyncio.run(run(args.runs, args.database_url, args.mid_draft))


if __name__ == "__main__":
    main()
