"""How many updates a second tipline takes in: N citizens each send /help at once
(journaled, handled, answered, erased), against the fake Bot API on 127.0.0.1, by polling
(getUpdates) and by webhook (the fake posts each update to tipline's receiver, as Telegram
does: one chat at a time, up to 40 requests at once), with the same driver. Prints figures;
asserts nothing.

    python -m bench.poller [--chats 1000] [--per-chat 1] [--mode both|polling|webhook]
                           [--database-url URL of a scratch database]

Figures: wall time from the first update pushed to the last one processed, updates/s,
the median of 3 runs per mode (the modes alternate), and the load average before and
after. The machine is shared: compare runs by ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from tests.e2e.conftest import Harness, e2e_config
from tests.fakebot import FakeBotAPI


async def once(chats: int, per_chat: int, database_url: str | None, mode: str, first_update_id: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        async with FakeBotAPI("123456:TEST-TOKEN", global_per_second=None, per_chat_per_second=None,
                              group_per_minute=None, first_update_id=first_update_id) as server:
            telegram = {"mode": mode, "webhook_port": 0, "webhook_url": "https://tipline.example.org/telegram",
                        "webhook_secret_token": "bench-secret"}
            h = Harness(server, e2e_config(url, server, telegram=telegram,
                                           journal={"key_dir": str(Path(tmp) / "keys")}))
            await h.start()
            assert h.runtime is not None
            if h.runtime.webhook is not None:
                server.webhook.backends = [f"http://127.0.0.1:{h.runtime.webhook.port}/telegram"]
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


async def main(chats: int, per_chat: int, runs: int, database_url: str | None, modes: list[str]) -> None:
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rates: dict[str, list[float]] = {m: [] for m in modes}
    first = 100_000 + (int(time.time()) % 100_000) * 10_000  # new ids on a reused database
    for n in range(runs):
        for mode in modes:
            first += chats * per_chat + 1
            rate = await once(chats, per_chat, database_url, mode, first)
            rates[mode].append(rate)
            print(f"run {n + 1} {mode}: {chats * per_chat} updates, {rate:.1f} updates/s")
    for mode in modes:
        print(f"{mode}: median {statistics.median(rates[mode]):.1f} updates/s over {runs} runs")
    if len(modes) == 2:
        ratio = statistics.median(rates["webhook"]) / statistics.median(rates["polling"])
        print(f"webhook / polling: {ratio:.2f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=1000)
    parser.add_argument("--per-chat", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mode", choices=("both", "polling", "webhook"), default="both")
    parser.add_argument("--database-url", default=None, help="a scratch database (its tables are used)")
    args = parser.parse_args()
    chosen = ["polling", "webhook"] if args.mode == "both" else [args.mode]
    asyncio.run(main(args.chats, args.per_chat, args.runs, args.database_url, chosen))
