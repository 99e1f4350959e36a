"""How fast tipline takes tips: N tipsters report at once through the whole chat flow
(start, category, unit, place, text, skip evidence, submit: 8 updates each), against the
fake Bot API on 127.0.0.1; and, in the same run, a bare python-telegram-bot echo bot driven
the same way (N users x 8 messages, each waiting for its answer); with the cheap hash, also
the same echo bot making tipline's Bot API calls for each step (TIPLINE_CALLS), the bound the
calls alone set. Prints figures; asserts nothing.

    python -m bench.intake [--tipsters 200] [--hash production|cheap] [--database-url URL] [--runs 3]
                           [--no-echo] [--hash-nice N]

Two processes: the bot under test (tipline, or the echo bot) runs alone in a child process;
this one holds the fake Bot API and the simulated users. The child's peak memory and its
event loop's lag are the bot's own, not the driver's (200 users and a record of every
request cost this process 150-230 MiB); both processes' peaks are printed. Each simulated
user is woken when its chat gets a message: polling the fake API every 10 ms, 200 users
took about 75 ms of CPU per tip from the hashes being measured.

With the production receipt hash (the default: Argon2id 64 MiB x 3), every tipster first
goes through the chat flow up to the review; then all press Submit at the same moment, and
the submit phase is timed from that press to the last receipt: 200 simultaneous
submitters. It prints one hash's CPU time, the hash-bound ceiling (cores / that time, in
tips/s), the submit phase's tips/s against it, the event loop's lag during the submit phase
(a 10 ms timer's lateness: p99, max; with the cheap hash, over the whole run), the bot's
peak memory against workers x 64 MiB + 150 MiB, and what the pool did: hashes per tip,
how full the pool was between the first hash's start and the last one's end (its workers
all hashing, back to back), a hash's wall time against its CPU time, and where the bot's
CPU went during the phase (the hashing threads, the event loop, other threads) and this
process's (fake API and users).
It also prints the hashes' share of the cores in the phase: on a shared machine the rest
goes elsewhere. With the cheap hash (the row compared with the echo bot) each tipster
submits as soon as its review is shown, as a citizen would. --hash-nice N runs the hashing
threads at nice +N instead of bot.hashing.HASH_NICE, to compare.

The bot runs with the configuration's defaults for its sweeps and leases (not the end-to-end
tests' short ones). Figures: wall time, tips/s, updates/s, median and 95th-percentile time
from a citizen's press of Submit to the receipt, peak memory (RSS). The machine is shared:
compare runs by ratio, note the load, and run more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from bot.hashing import cores

if TYPE_CHECKING:
    from bot.fakeapi import FakeBotAPI

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "123456:TEST-TOKEN"
PREFIX = "BENCH "  # the child's lines for this process; anything else it prints is ignored


class LoopLag:
    """How late a 10 ms timer fires: the event loop's responsiveness. Samples are
    (time.monotonic() at wake-up, lateness), so another process can pick a window."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.samples.append((now, now - t - 0.01))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task:
            self._task.cancel()


def p99_max(values: list[float]) -> tuple[float, float]:
    s = sorted(values) or [0.0]
    return s[min(len(s) - 1, int(len(s) * 0.99))], s[-1]


def hash_cpu_seconds(production: bool, samples: int = 7) -> list[float]:
    """One hash's CPU time, `samples` times in a row. Several, and taken before and after each
    run: a single hash alone swung by a fifth from one minute to the next on a shared machine
    (146-191 ms), which moved the ceiling, and so the ratio, more than anything tipline did."""
    from bot.security import Keyring

    cost = {"time_cost": 3, "memory_kib": 65536} if production else {"time_cost": 1, "memory_kib": 64}
    keyring = Keyring("p" * 40, "YmVuY2gtZGF0YS1rZXktZm9yLXRpcGxpbmUtYmVuY2g=", **cost)
    times = []
    for i in range(samples):
        t = time.process_time()
        keyring.receipt_hash(f"{i:016d}")
        times.append(time.process_time() - t)
    return times


def peak_mib() -> float:
    """This process's peak resident memory. VmHWM, the high-water mark of its own address
    space: ru_maxrss would also count the parent's memory at the fork before the exec."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def rss_now_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def thread_cpu() -> dict[int, float]:
    """CPU seconds of each thread of this process, by native id (Linux; empty elsewhere)."""
    out: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        except (OSError, IndexError, ValueError):
            continue
    return out


# --- the child process: the bot under test ------------------------------------------------------
class TimedKeyring:
    """The keyring with every receipt hash's start and end (time.monotonic) and CPU time kept."""

    def __init__(self, keyring: Any) -> None:
        self._keyring = keyring
        self.hashes: list[tuple[float, float, float]] = []
        self._lock = threading.Lock()

    def receipt_hash(self, code: str) -> str:
        start, cpu = time.monotonic(), time.thread_time()
        try:
            return self._keyring.receipt_hash(code)
        finally:
            with self._lock:
                self.hashes.append((start, time.monotonic(), time.thread_time() - cpu))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._keyring, name)


def tipline_config(base_url: str, base_file_url: str, url: str, production: bool, key_dir: str) -> Any:
    """The example configuration, as the end-to-end tests make it (fresh secrets, the fake
    API's address and no rate limits of its own) but with the configuration's own sweeps
    and leases, not the tests' short ones. Built here, not through the tests' conftest, so
    that the bot's process does not carry pytest in its memory."""
    import secrets
    import tomllib

    from cryptography.fernet import Fernet

    from bot.config import parse_config

    data = tomllib.loads((ROOT / "config.example.toml").read_text(encoding="utf-8"))
    data["telegram"].update(token=TOKEN, base_url=base_url, base_file_url=base_file_url, poll_timeout_seconds=5,
                            global_per_second=1000.0, per_chat_per_second=100.0, group_per_minute=6000.0)
    data["database"]["url"] = url
    data["journal"]["key_dir"] = key_dir
    cost = {"receipt_hash_time_cost": 3, "receipt_hash_memory_kib": 65536} if production else \
        {"receipt_hash_time_cost": 1, "receipt_hash_memory_kib": 64}
    data["security"].update(pepper=secrets.token_urlsafe(48), data_key=Fernet.generate_key().decode(),
                            contact_key=Fernet.generate_key().decode(), **cost)
    return parse_config(data, source="bench", env={})


async def serve(kind: str, base_url: str, base_file_url: str, url: str, production: bool) -> None:
    """Run the bot; answer this process's commands on stdin ("mark", "end", "stop")."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    timed: TimedKeyring | None = None
    workers = 0
    key_dir = tempfile.mkdtemp(prefix="tipline-bench-keys-")
    if kind == "tipline":
        from bot.app import Runtime

        runtime = Runtime(tipline_config(base_url, base_file_url, url, production, key_dir))
        await runtime.start()
        assert runtime.deps.hashes is not None
        timed = TimedKeyring(runtime.deps.hashes.keyring)
        runtime.deps.hashes.keyring = timed  # type: ignore[assignment]
        workers = runtime.deps.hashes.workers
        stop = runtime.stop
    else:
        stop = await start_echo(base_url, shaped=kind == "shaped")
    lag = LoopLag()
    lag.start()
    cpu: dict[str, dict[int, float]] = {}
    print(PREFIX + json.dumps({"ready": True, "workers": workers}), flush=True)
    while line := (await reader.readline()).decode().strip():
        if line == "stop":
            break
        cpu[line] = thread_cpu()  # "mark" and "end": the submit phase's bounds
        print(PREFIX + json.dumps({line: time.monotonic(), "rss_now": rss_now_mib()}), flush=True)
    lag.stop()
    names = {t.native_id: t.name for t in threading.enumerate()}
    await stop()
    shutil.rmtree(key_dir, ignore_errors=True)
    by_name: dict[str, float] = {}
    if "mark" in cpu and "end" in cpu:
        main = threading.main_thread().native_id
        for tid, seconds in cpu["end"].items():
            name = ("event loop" if tid == main else
                    "hashing" if names.get(tid, "").startswith("receipt-hash") else "other threads")
            by_name[name] = by_name.get(name, 0.0) + seconds - cpu["mark"].get(tid, 0.0)
    print(PREFIX + json.dumps({"rss": peak_mib(), "lag": lag.samples, "hashes": timed.hashes if timed else [],
                               "cpu": by_name}), flush=True)


# Bot API calls tipline makes for each of a tipster's 8 updates (tests/e2e/test_intake_cost.py
# holds them to it): a button press is answered, its step message edited to show the choice,
# and the next question sent; a text gets the next question; Submit also queues the team's card.
TIPLINE_CALLS = (1, 3, 3, 3, 1, 1, 3, 3)


async def start_echo(base_url: str, shaped: bool = False) -> Any:
    """A bare python-telegram-bot echo bot (PTB's own polling, default settings). `shaped`:
    the same bot making tipline's calls for each step (TIPLINE_CALLS: a chat action in place
    of the press's answer, an edit of its previous reply, then the echo), and nothing else,
    no database, no state: what the calls alone cost, on this machine, in this run."""
    from telegram import Update
    from telegram.ext import Application, ContextTypes, MessageHandler, filters

    last: dict[int, int] = {}

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        text = update.message.text or ""
        if shaped:
            chat_id = update.message.chat_id
            step = int(text.rsplit("s", 1)[-1]) if text.rsplit("s", 1)[-1].isdigit() else 0
            if TIPLINE_CALLS[step % len(TIPLINE_CALLS)] == 3:
                await context.bot.send_chat_action(chat_id, "typing")
                if chat_id in last:
                    await context.bot.edit_message_text(f"{text} ✓", chat_id=chat_id, message_id=last[chat_id])
            last[chat_id] = (await update.message.reply_text(text)).message_id
            return
        await update.message.reply_text(text)

    app = (Application.builder().token(TOKEN).base_url(base_url)
           .pool_timeout(30).get_updates_pool_timeout(30).read_timeout(30).get_updates_read_timeout(30)
           .build())  # PTB's defaults otherwise; generous timeouts on a loaded machine
    app.add_handler(MessageHandler(filters.TEXT, echo))
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0.0, timeout=5)

    async def stop() -> None:
        assert app.updater is not None
        await app.updater.stop()
        await app.stop()
        await app.shutdown()

    return stop


# --- this process: the fake Bot API and the simulated users -------------------------------------
class Child:
    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc, self.log = proc, log

    @classmethod
    async def start(cls, kind: str, server: FakeBotAPI, url: str, production: bool, tmp: str,
                    hash_nice: int | None = None) -> tuple[Child, dict]:
        log = Path(tmp) / f"{kind}.log"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.intake", "--serve", kind, server.base_url, server.base_file_url, url,
            "production" if production else "cheap", "" if hash_nice is None else str(hash_nice),
            cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=log.open("wb"), limit=2**26)  # the lag samples: one long line
        child = cls(proc, log)
        return child, await child.read()

    async def read(self) -> dict:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 600)
            if not line:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the bot's process ended:\n{tail}")
            text = line.decode()
            if text.startswith(PREFIX):
                return json.loads(text[len(PREFIX):])

    async def command(self, what: str) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(what.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.read()

    async def finish(self) -> dict:
        result = await self.command("stop")
        await self.proc.wait()
        return result


class Users:
    """The simulated users' side: each waits for its own chat's next message, woken when the
    fake API records one. (Harness.expect polls every 10 ms; 200 users polling cost this
    process about 75 ms of CPU per tip, taken from the hashes the bench measures.)"""

    def __init__(self, server: FakeBotAPI) -> None:
        self.server = server
        self.seen: dict[int, int] = {}
        self.events: dict[Any, asyncio.Event] = {}
        events = self.events

        class Chat(list):  # type: ignore[type-arg]
            def __init__(self, key: Any) -> None:
                super().__init__()
                self.key = key

            def append(self, record: Any) -> None:
                super().append(record)
                if self.key in events:
                    events[self.key].set()

        class Chats(dict):  # type: ignore[type-arg]
            def __missing__(self, key: Any) -> Chat:
                self[key] = chat = Chat(key)
                return chat

        server._sent_by_chat = Chats()  # type: ignore[assignment]  # the fake's record of each chat

    async def _until(self, chat_id: int, found: Any, what: str, timeout: float = 300.0) -> Any:
        event = self.events.setdefault(chat_id, asyncio.Event())
        deadline = time.monotonic() + timeout
        while True:
            event.clear()  # before looking: a message recorded after this wakes the wait below
            value = found(self.server.sent_to(chat_id))
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what} in chat {chat_id}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    async def expect(self, chat_id: int, contains: str) -> Any:
        from tests.e2e.conftest import plain

        def found(records: list[Any]) -> Any:
            for i, record in enumerate(records[self.seen.get(chat_id, 0):], start=self.seen.get(chat_id, 0)):
                if contains in plain(record):
                    self.seen[chat_id] = i + 1
                    return record
            return None

        return await self._until(chat_id, found, repr(contains))

    async def expect_button(self, chat_id: int, label: str) -> Any:
        def found(records: list[Any]) -> Any:
            for record in reversed(records):
                rows = (record.get("reply_markup") or {}).get("inline_keyboard") or []
                if any(label in b.get("text", "") for row in rows for b in row):
                    return record
            return None

        return await self._until(chat_id, found, f"a button {label!r}")

    async def say(self, user: dict[str, Any], text: str, expect: str) -> Any:
        self.server.push_message(user, text)
        return await self.expect(user["id"], expect)

    async def press(self, user: dict[str, Any], message: Any, label: str, expect: str) -> Any:
        self.server.press(user, message, label)
        return await self.expect(user["id"], expect)

    async def echoed(self, chat_id: int, text: str) -> Any:
        return await self._until(chat_id, lambda records: any(r.get("text") == text for r in records), repr(text))


def fake_api() -> FakeBotAPI:
    from bot.fakeapi import FakeBotAPI  # not in the bot's process

    return FakeBotAPI(TOKEN, global_per_second=None, per_chat_per_second=None, group_per_minute=None)


async def run_tipline(tipsters: int, database_url: str | None, production: bool,
                      hash_nice: int | None = None) -> dict[str, Any]:
    from bench.claim import _schema_url

    # A fresh schema on PostgreSQL each run: a second run in the same database found the
    # first one's journal (the same update ids, "handled already") and answered nothing.
    url, drop = _schema_url(database_url) if database_url else (None, None)
    try:
        return await _run_tipline(tipsters, url, production, hash_nice)
    finally:
        if drop is not None:
            drop()  # type: ignore[operator]


async def _run_tipline(tipsters: int, database_url: str | None, production: bool,
                       hash_nice: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        async with fake_api() as server:
            h = Users(server)
            child, ready = await Child.start("tipline", server, url, production, tmp, hash_nice)
            latencies: list[float] = []
            submits: list[float] = []
            receipts: list[float] = []
            at_review = 0
            all_at_review = asyncio.Event()
            press = asyncio.Event()

            async def one(i: int) -> None:
                nonlocal at_review
                user = server.user(8_000_000 + i, f"Bench{i}")
                menu = await h.say(user, "/start", expect="查询码")
                cats = await h.press(user, menu, "📝", expect="1")
                units = await h.press(user, cats, "迟到早退脱岗", expect="2")
                await h.press(user, units, "定昌镇", expect="3")
                await h.say(user, "周一上午九点，镇便民服务大厅", expect="4")
                ev = await h.say(user, f"第{i}号：窗口无人，群众排队等了半小时。", expect="5")
                await h.press(user, ev, "跳过", expect="核对")
                review = await h.expect_button(user["id"], "提交")
                if production:  # all press Submit together
                    at_review += 1
                    if at_review == tipsters:
                        all_at_review.set()
                    await press.wait()
                start = time.monotonic()
                submits.append(start)
                await h.press(user, review, "提交", expect="您的查询码")
                receipts.append(time.monotonic())
                latencies.append(receipts[-1] - start)

            cpu_before = resource.getrusage(resource.RUSAGE_SELF)
            began = time.monotonic()
            tasks = [asyncio.ensure_future(one(i)) for i in range(tipsters)]
            mark, rss_at_review = None, 0.0
            if production:
                await all_at_review.wait()
                marked = await child.command("mark")
                mark, rss_at_review = marked["mark"], marked["rss_now"]
                cpu_before = resource.getrusage(resource.RUSAGE_SELF)
                press.set()  # the tasks press in turn without awaiting anything in between
            await asyncio.gather(*tasks)
            wall = time.monotonic() - began
            end = (await child.command("end"))["end"] if production else None
            cpu_after = resource.getrusage(resource.RUSAGE_SELF)
            result = await child.finish()
    latencies.sort()
    phase = (mark if mark is not None else min(submits), max(receipts))
    lag = [x for t, x in result["lag"]] if mark is None else [x for t, x in result["lag"] if mark <= t <= end]
    lag_p99, lag_max = p99_max(lag)
    hashes = sorted(result["hashes"])
    workers = ready["workers"]
    fill = 0.0
    if hashes and workers:
        span = max(e for _, e, _ in hashes) - hashes[0][0]
        fill = sum(e - s for s, e, _ in hashes) / (workers * span) if span > 0 else 1.0
    driver_cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    return {
        "wall": wall, "tips_s": tipsters / wall, "updates_s": tipsters * 8 / wall, "updates": tipsters * 8,
        "median": statistics.median(latencies), "p95": latencies[int(len(latencies) * 0.95) - 1],
        "submit_wall": phase[1] - phase[0], "submit_tips_s": tipsters / (phase[1] - phase[0]),
        "lag_p99": lag_p99, "lag_max": lag_max, "workers": workers, "rss": result["rss"], "driver_rss": peak_mib(),
        "rss_at_review": rss_at_review,
        "hashes_per_tip": len(hashes) / tipsters, "fill": fill,
        "hash_wall": statistics.median(e - s for s, e, _ in hashes) if hashes else 0.0,
        "hash_thread_cpu": statistics.median(c for _, _, c in hashes) if hashes else 0.0,
        "cpu": result["cpu"], "driver_cpu": driver_cpu,
    }


async def run_echo(users: int, kind: str = "echo") -> dict[str, float]:
    """A bare python-telegram-bot echo bot in a child process, driven as tipline is
    ("shaped": making tipline's calls)."""
    with tempfile.TemporaryDirectory() as tmp:
        async with fake_api() as server:
            driver = Users(server)
            child, _ = await Child.start(kind, server, "", False, tmp)

            async def one(i: int) -> None:
                user = server.user(8_000_000 + i, f"Bench{i}")
                for step in range(8):
                    text = f"u{i} s{step}"
                    server.push_message(user, text)
                    await driver.echoed(user["id"], text)

            began = time.monotonic()
            await asyncio.gather(*(one(i) for i in range(users)))
            wall = time.monotonic() - began
            result = await child.finish()
    return {"wall": wall, "updates_s": users * 8 / wall, "rss": result["rss"]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":  # the child: --serve KIND BASE_URL FILE_URL DB HASH
        kind, base_url, base_file_url, url, hash_kind, hash_nice = sys.argv[2:8]
        if hash_nice:
            import bot.hashing

            bot.hashing.HASH_NICE = int(hash_nice)
        asyncio.run(serve(kind, base_url, base_file_url, url, hash_kind == "production"))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tipsters", type=int, default=200)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--hash", choices=("production", "cheap"), default="production")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side; medians are printed")
    parser.add_argument("--no-echo", action="store_true", help="skip the echo bot's run")
    parser.add_argument("--hash-nice", type=int, default=None,
                        help="the hashing threads' nice increment instead of bot.hashing.HASH_NICE (to compare)")
    args = parser.parse_args()
    production = args.hash == "production"
    runs: list[dict[str, Any]] = []
    echoes: list[dict[str, float]] = []
    ratios: list[float] = []
    shaped: list[dict[str, float]] = []
    bounds: list[float] = []
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for i in range(args.runs):  # each tipline run next to an echo run: the ratio of the same moment
        alone = hash_cpu_seconds(True) if production else []  # next to the run: the load changes
        r = asyncio.run(run_tipline(args.tipsters, args.database_url, production, args.hash_nice))
        if production:
            alone += hash_cpu_seconds(True)
        hash_cpu = statistics.median(alone) if alone else 0.0
        r["hash_cpu"] = hash_cpu
        runs.append(r)
        line = f"run {i + 1}: tipline {r['updates_s']:.1f} updates/s"
        if not args.no_echo:
            e = asyncio.run(run_echo(args.tipsters))
            echoes.append(e)
            ratios.append(r["updates_s"] / e["updates_s"])
            line += f", echo {e['updates_s']:.1f} updates/s, ratio {100 * ratios[-1]:.0f}%"
            if not production:  # the calls' own bound, measured beside them
                sh = asyncio.run(run_echo(args.tipsters, "shaped"))
                shaped.append(sh)
                bounds.append(sh["updates_s"] / e["updates_s"])
                line += (f"; echo with tipline's calls {sh['updates_s']:.1f} updates/s = {100 * bounds[-1]:.0f}% "
                         f"of the echo, tipline {100 * r['updates_s'] / sh['updates_s']:.0f}% of it")
        if production:
            cpu = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(r["cpu"].items()))
            line += (f"; submit phase {r['submit_tips_s']:.1f} tips/s "
                     f"({100 * r['submit_tips_s'] * hash_cpu / cores():.0f}% of {cores() / hash_cpu:.1f}; "
                     f"{100 * r['submit_tips_s'] * r['hash_thread_cpu'] / cores():.0f}% of the ceiling by the "
                     f"hashes in the phase), "
                     f"lag p99 {r['lag_p99'] * 1000:.0f} ms, "
                     f"bot peak {r['rss']:.0f} MiB, {r['hashes_per_tip']:.2f} hashes/tip, pool "
                     f"{100 * r['fill']:.0f}% full; CPU in the phase: {cpu}, fake API + users "
                     f"{r['driver_cpu']:.1f} s")
        print(line + f"  (load {os.getloadavg()[0]:.2f})", flush=True)

    def med(key: str, rows: list[dict[str, Any]] | None = None) -> float:
        return statistics.median(x[key] for x in (runs if rows is None else rows))

    workers = runs[0]["workers"]
    print(f"--- medians of {args.runs} run(s) ---")
    print(f"tipsters            {args.tipsters}  ({args.hash} receipt hash, {workers} hashing workers)")
    print(f"wall time           {med('wall'):.1f} s")
    print(f"tips per second     {med('tips_s'):.1f}")
    print(f"updates per second  {med('updates_s'):.1f}  ({runs[0]['updates']} updates)")
    print(f"submit -> receipt   median {med('median') * 1000:.0f} ms, p95 {med('p95') * 1000:.0f} ms")
    print(f"event-loop lag      p99 {med('lag_p99') * 1000:.0f} ms, max {med('lag_max') * 1000:.0f} ms"
          + ("   (the submit phase; target p99 <= 100 ms)" if production else "   (the whole run)"))
    print(f"peak RSS, the bot   {med('rss'):.0f} MiB"
          + (f"   (target <= {workers} x 64 + 150 = {workers * 64 + 150:.0f} MiB)" if production else ""))
    if production:
        print(f"RSS at the review   {med('rss_at_review'):.0f} MiB (the bot, every tipster at the review, "
              "before the first hash)")
    print(f"peak RSS, driver    {med('driver_rss'):.0f} MiB (fake Bot API and simulated users, this process)")
    if production:
        ceiling = cores() / med("hash_cpu")
        print(f"one hash            {1000 * med('hash_cpu'):.0f} ms CPU (alone: median of 7 before and 7 after "
              f"each run); ceiling {cores()} cores / that = {ceiling:.1f} tips/s")
        ratio = statistics.median(r["submit_tips_s"] * r["hash_cpu"] / cores() for r in runs)
        print(f"submit phase        {med('submit_wall'):.1f} s, {med('submit_tips_s'):.1f} tips/s = "
              f"{100 * med('submit_tips_s') / ceiling:.0f}% of the ceiling (target >= 80%; median of the "
              f"runs' ratios {100 * ratio:.0f}%)")
        in_phase = statistics.median(r["submit_tips_s"] * r["hash_thread_cpu"] / cores() for r in runs)
        print(f"                    against one hash's CPU time in the phase itself ({med('hash_thread_cpu') * 1000:.0f}"
              f" ms, median of the pool's hashes): {100 * in_phase:.0f}% (median of the runs' ratios)")
        share = statistics.median(r["cpu"].get("hashing", 0.0) / (cores() * r["submit_wall"]) for r in runs)
        print(f"the machine         the hashes had {100 * share:.0f}% of the {cores()} cores in the phase (the rest: "
              f"the bot's other threads, this process, and whatever else runs on the machine)")
        print(f"the pool            {med('hashes_per_tip'):.2f} hashes per tip; {100 * med('fill'):.0f}% full from "
              f"the first hash's start to the last one's end; a hash {med('hash_wall') * 1000:.0f} ms wall, "
              f"{med('hash_thread_cpu') * 1000:.0f} ms CPU (median)")
        parts = sorted({k for r in runs for k in r["cpu"]})
        cpu = ", ".join(f"{k} {statistics.median(r['cpu'].get(k, 0.0) for r in runs):.1f} s" for k in parts)
        print(f"CPU in the phase    the bot: {cpu}; fake API + users {med('driver_cpu'):.1f} s "
              f"(of {cores()} x {med('submit_wall'):.1f} s)")
    if echoes:
        print(f"echo bot (PTB)      {med('updates_s', echoes):.1f} updates/s ({args.tipsters} users x 8), "
              f"peak RSS {med('rss', echoes):.0f} MiB")
        print(f"tipline / echo      {100 * statistics.median(ratios):.0f}% of the echo bot's updates/s "
              f"(median of the runs' ratios){'   (target >= 50% with the cheap hash)' if not production else ''}")
    if shaped:
        print(f"echo, tipline's calls {med('updates_s', shaped):.1f} updates/s: {100 * statistics.median(bounds):.0f}% "
              f"of the echo bot (median of the runs' ratios): the same bot making {sum(TIPLINE_CALLS)} calls for 8 "
              "updates, as tipline does, with no database and no state: the calls' own bound")
        print(f"tipline / that      {100 * statistics.median(r['updates_s'] / sh['updates_s'] for r, sh in zip(runs, shaped)):.0f}%"
              " (median of the runs' ratios)")
    print(f"load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
