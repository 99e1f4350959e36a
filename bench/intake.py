"""How fast tipline takes tips: N tipsters report at once through the whole chat flow
(start, category, unit, place, text, skip evidence, submit), against the fake Bot API on
127.0.0.1. Prints figures; asserts nothing.

    python -m bench.intake [--tipsters 200] [--database-url URL of a scratch database]

Figures: wall time, tips/s, updates/s, median and 95th-percentile time from a citizen's
press of Submit to the receipt, peak memory (RSS) of the process. The machine is shared:
compare runs by ratio, and run more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
import time
from pathlib import Path

from tests.e2e.conftest import Harness, e2e_config
from bot.fakeapi import FakeBotAPI


async def run(tipsters: int, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        async with FakeBotAPI("123456:TEST-TOKEN", global_per_second=None, per_chat_per_second=None,
                              group_per_minute=None) as server:
            h = Harness(server, e2e_config(url, server))
            await h.start()
            latencies: list[float] = []

            async def one(i: int) -> None:
                user = server.user(8_000_000 + i, f"Bench{i}")
                menu = await h.say(user, "/start", expect="查询码")
                cats = await h.press(user, menu, "📝", expect="1")
                units = await h.press(user, cats, "迟到早退脱岗", expect="2")
                await h.press(user, units, "定昌镇", expect="3")
                await h.say(user, "周一上午九点，镇便民服务大厅", expect="4")
                ev = await h.say(user, f"第{i}号：窗口无人，群众排队等了半小时。", expect="5")
                await h.press(user, ev, "跳过", expect="核对")
                review = await h.expect_button(user["id"], "提交")
                start = time.perf_counter()
                await h.press(user, review, "提交", expect="您的查询码")
                latencies.append(time.perf_counter() - start)

            began = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(tipsters)))
            wall = time.perf_counter() - began
            updates = h.runtime.poller.processed if h.runtime else 0
            await h.stop()
    latencies.sort()
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"tipsters            {tipsters}")
    print(f"wall time           {wall:.1f} s")
    print(f"tips per second     {tipsters / wall:.1f}")
    print(f"updates per second  {updates / wall:.1f}  ({updates} updates)")
    print(f"submit -> receipt   median {statistics.median(latencies) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")
    print(f"peak RSS            {rss_mib:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tipsters", type=int, default=200)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    asyncio.run(run(args.tipsters, args.database_url))


if __name__ == "__main__":
    main()
