"""How many updates a second pass through the poller: N citizens each send /help at once
(journaled, handled, answered, erased), against the fake Bot API on 127.0.0.1. Prints
figures; asserts nothing.

    python -m bench.poller [--chats 1000] [--per-chat 1] [--database-url URL of a scratch database]

Figures: wall time from the first update pushed to the last one processed, updates/s,
and the median of 3 runs. The machine is shared: compare runs by ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from tests.e2e.conftest import Harness, e2e_config
from tests.fakebot import FakeBotAPI


async def once(chats: int, per_chat: int, database_url: str | None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        async with FakeBotAPI("123456:TEST-TOKEN", global_per_second=None, per_chat_per_second=None,
                              group_per_minute=None) as server:
            h = Harness(server, e2e_config(url, server))
            await h.start()
            assert h.runtime is not None
            poller = h.runtime.poller
            users = [server.user(9_000_000 + i, f"P{i}") for i in range(chats)]
            began = time.perf_counter()
            for _ in range(per_chat):
                for user in users:
                    server.push_message(user, "/help")
            total = chats * per_chat
            while poller.processed < total:
                await asyncio.sleep(0.01)
            wall = time.perf_counter() - began
            await h.stop()
    return total / wall


async def main(chats: int, per_chat: int, runs: int, database_url: str | None) -> None:
    rates = []
    for n in range(runs):
        rate = await once(chats, per_chat, database_url)
        rates.append(rate)
        print(f"run {n + 1}: {chats * per_chat} updates, {rate:.1f} updates/s")
    print(f"median {statistics.median(rates):.1f} updates/s over {runs} runs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=1000)
    parser.add_argument("--per-chat", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="a scratch database (its tables are used)")
    args = parser.parse_args()
    asyncio.run(main(args.chats, args.per_chat, args.runs, args.database_url))
