"""Run one outbox sender in a process of its own, as a webhook process would, for the sender
lead tests: `python -m tests.e2e.sender_child CONFIG.json RELEASE`.

RELEASE is 1 for the first process on a SQLite file (it frees rows left in flight at start,
as a single process does), 0 for any other. Prints "started <holder>" once it runs; SIGTERM
stops it gracefully, SIGKILL is the crash.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from telegram.ext import ExtBot
from telegram.request import HTTPXRequest

from bot.app import build_deps
from bot.clock import SystemClock
from bot.config import parse_config
from bot.ratelimit import PacingRateLimiter
from bot.sender import OutboxSender


async def main(path: str, release: bool) -> None:
    with open(path, encoding="utf-8") as f:
        config = parse_config(json.load(f), source=path, env={})
    deps, engine = build_deps(config, SystemClock())
    tg = config.telegram
    bot = ExtBot(tg.token.get_secret_value(), base_url=tg.base_url, base_file_url=tg.base_file_url,
                 request=HTTPXRequest(connection_pool_size=32),
                 rate_limiter=PacingRateLimiter(global_per_second=tg.global_per_second,
                                                per_chat_per_second=tg.per_chat_per_second,
                                                group_per_minute=tg.group_per_minute))
    await bot.initialize()
    sender = OutboxSender(bot, deps)
    sender._released = not release
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    sender.start()
    print("started", sender.holder, flush=True)
    await stopping.wait()
    await sender.stop()
    await bot.shutdown()
    engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] == "1"))
