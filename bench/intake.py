"""How fast tipline takes tips: N tipsters report at once through the whole chat flow
(start, category, unit, place, text, skip evidence, submit: 8 updates each), against the
fake Bot API on 127.0.0.1; and, in the same run, a bare python-telegram-bot echo bot driven
the same way (N users x 8 messages, each waiting for its answer). Prints figures; asserts
nothing.

    python -m bench.intake [--tipsters 200] [--hash production|cheap] [--database-url URL] [--runs 3]

With the production receipt hash (the default: Argon2id 64 MiB x 3), it also prints one
hash's CPU time, the hash-bound ceiling (cores / that time, in tips/s), the submit phase's
tips/s against it, the event loop's lag (a 10 ms timer's lateness: p99, max) and peak
memory against workers x 64 MiB + 150 MiB. Figures: wall time, tips/s, updates/s, median
and 95th-percentile time from a citizen's press of Submit to the receipt, peak memory (RSS)
of the process. The machine is shared: compare runs by ratio, and run more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
import time
from pathlib import Path

from bot.hashing import cores
from tests.e2e.conftest import Harness, e2e_config
from bot.fakeapi import FakeBotAPI


class LoopLag:
    """How late a 10 ms timer fires: the event loop's responsiveness."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            self.samples.append(time.perf_counter() - t - 0.01)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> tuple[float, float]:
        if self._task:
            self._task.cancel()
        s = sorted(self.samples) or [0.0]
        return s[min(len(s) - 1, int(len(s) * 0.99))], s[-1]


def hash_cpu_seconds(config: object) -> float:
    from bot.deps import make_keyring

    keyring = make_keyring(config)  # type: ignore[arg-type]
    times = []
    for i in range(3):
        t = time.process_time()
        keyring.receipt_hash(f"{i:016d}")
        times.append(time.process_time() - t)
    return statistics.median(times)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run_tipline(tipsters: int, database_url: str | None, production: bool) -> dict[str, float]:
    from bench.claim import _schema_url

    # A fresh schema on PostgreSQL each run: a second run in the same database found the
    # first one's journal (the same update ids, "handled already") and answered nothing.
    url, drop = _schema_url(database_url) if database_url else (None, None)
    try:
        return await _run_tipline(tipsters, url, production)
    finally:
        if drop is not None:
            drop()  # type: ignore[operator]


async def _run_tipline(tipsters: int, database_url: str | None, production: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        async with FakeBotAPI("123456:TEST-TOKEN", global_per_second=None, per_chat_per_second=None,
                              group_per_minute=None) as server:
            security = {"receipt_hash_time_cost": 3, "receipt_hash_memory_kib": 65536} if production else {}
            config = e2e_config(url, server, security=security)
            h = Harness(server, config)
            await h.start()
            # a shared machine under load: wait for answers longer than the tests do
            expect, expect_button = h.expect, h.expect_button
            h.expect = lambda chat_id, contains, **kw: expect(chat_id, contains, **{"timeout": 300.0, **kw})
            h.expect_button = lambda chat_id, label, **kw: expect_button(chat_id, label, **{"timeout": 300.0, **kw})
            latencies: list[float] = []
            submits: list[float] = []
            receipts: list[float] = []
            lag = LoopLag()

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
                submits.append(start)
                await h.press(user, review, "提交", expect="您的查询码")
                receipts.append(time.perf_counter())
                latencies.append(receipts[-1] - start)

            lag.start()
            began = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(tipsters)))
            wall = time.perf_counter() - began
            lag_p99, lag_max = lag.stop()
            peak = rss_mib()  # before this process hashes on its own below
            # What the driver sent (8 per tipster, each answered), counted as for the echo bot:
            # the poller's own count lags behind by the updates whose record is still being written.
            updates = tipsters * 8
            workers = h.deps.hashes.workers if h.deps.hashes else 0
            await h.stop()
    latencies.sort()
    return {
        "wall": wall, "tips_s": tipsters / wall, "updates_s": updates / wall, "updates": updates,
        "median": statistics.median(latencies), "p95": latencies[int(len(latencies) * 0.95) - 1],
        "submit_tips_s": tipsters / (max(receipts) - min(submits)), "lag_p99": lag_p99, "lag_max": lag_max,
        "workers": workers, "hash_cpu": hash_cpu_seconds(config) if production else 0.0, "rss": peak,
    }


async def run_echo(users: int) -> dict[str, float]:
    """A bare python-telegram-bot echo bot (PTB's own polling, default settings)."""
    from telegram import Update
    from telegram.ext import Application, ContextTypes, MessageHandler, filters

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        await update.message.reply_text(update.message.text or "")

    async with FakeBotAPI("123456:TEST-TOKEN", global_per_second=None, per_chat_per_second=None,
                          group_per_minute=None) as server:
        app = (Application.builder().token("123456:TEST-TOKEN").base_url(server.base_url)
               .pool_timeout(30).get_updates_pool_timeout(30).read_timeout(30).get_updates_read_timeout(30)
               .build())  # PTB's defaults otherwise; generous timeouts on a loaded machine
        app.add_handler(MessageHandler(filters.TEXT, echo))
        await app.initialize()
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0.0, timeout=5)

        async def one(i: int) -> None:
            user = server.user(8_000_000 + i, f"Bench{i}")
            for step in range(8):
                text = f"u{i} s{step}"
                server.push_message(user, text)
                await server.wait_for(lambda: any(r.get("text") == text for r in server.sent_to(user["id"])),
                                      120.0, message=text)

        began = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(users)))
        wall = time.perf_counter() - began
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
    return {"wall": wall, "updates_s": users * 8 / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tipsters", type=int, default=200)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--hash", choices=("production", "cheap"), default="production")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side; medians are printed")
    parser.add_argument("--no-echo", action="store_true", help="skip the echo bot's run")
    args = parser.parse_args()
    production = args.hash == "production"
    runs, echoes, ratios = [], [], []
    for i in range(args.runs):  # each tipline run next to an echo run: the ratio of the same moment
        r = asyncio.run(run_tipline(args.tipsters, args.database_url, production))
        runs.append(r)
        line = f"run {i + 1}: tipline {r['updates_s']:.1f} updates/s"
        if not args.no_echo:
            e = asyncio.run(run_echo(args.tipsters))
            echoes.append(e)
            ratios.append(r["updates_s"] / e["updates_s"])
            line += f", echo {e['updates_s']:.1f} updates/s, ratio {100 * ratios[-1]:.0f}%"
        if production:
            line += f", submit phase {r['submit_tips_s']:.1f} tips/s"
        print(line, flush=True)

    def med(key: str, rows: list[dict[str, float]] | None = None) -> float:
        return statistics.median(x[key] for x in (runs if rows is None else rows))

    workers = runs[0]["workers"]
    print(f"--- medians of {args.runs} run(s) ---")
    print(f"tipsters            {args.tipsters}  ({args.hash} receipt hash, {workers} hashing workers)")
    print(f"wall time           {med('wall'):.1f} s")
    print(f"tips per second     {med('tips_s'):.1f}")
    print(f"updates per second  {med('updates_s'):.1f}  ({runs[0]['updates']} updates)")
    print(f"submit -> receipt   median {med('median') * 1000:.0f} ms, p95 {med('p95') * 1000:.0f} ms")
    print(f"event-loop lag      p99 {med('lag_p99') * 1000:.0f} ms, max {med('lag_max') * 1000:.0f} ms"
          f"{'   (target p99 <= 100 ms)' if production else ''}")
    # ru_maxrss only grows: the first run's figure is tipline's own (the echo bot runs after it)
    print(f"peak RSS            {runs[0]['rss']:.0f} MiB (first run)"
          + (f"   (target <= {workers * 64 + 150:.0f} MiB)" if production else ""))
    if production:
        ceiling = cores() / med("hash_cpu")
        print(f"one hash            {med('hash_cpu') * 1000:.0f} ms CPU; ceiling {cores()} cores / that = "
              f"{ceiling:.1f} tips/s")
        print(f"submit phase        {med('submit_tips_s'):.1f} tips/s = "
              f"{100 * med('submit_tips_s') / ceiling:.0f}% of the ceiling (target >= 80%)")
    if echoes:
        print(f"echo bot (PTB)      {med('updates_s', echoes):.1f} updates/s ({args.tipsters} users x 8)")
        print(f"tipline / echo      {100 * statistics.median(ratios):.0f}% of the echo bot's updates/s "
              f"(median of the runs' ratios){'   (target >= 50% with the cheap hash)' if not production else ''}")


if __name__ == "__main__":
    main()
