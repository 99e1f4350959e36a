"""Run tipline in a child process for the kill tests: `python -m tests.e2e.child CONFIG.json OFFSET`.

CONFIG.json is a configuration document (as parsed from TOML); OFFSET is the seconds the
child's clock is ahead of real time (the parent's OffsetClock). The child runs until it is
killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta

from bot.app import Runtime
from bot.clock import OffsetClock
from bot.config import parse_config


async def main(path: str, offset: float) -> None:
    with open(path, encoding="utf-8") as f:
        config = parse_config(json.load(f), source=path, env={})
    clock = OffsetClock()
    clock.offset = timedelta(seconds=offset)
    runtime = Runtime(config, clock=clock)
    await runtime.start()
    print("started", flush=True)
    await runtime.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
