"""Benchmark: a bulletin broadcast to many officials at Telegram's rate limit.

    python bench/broadcast.py [--subscribers 10000] [--runs 3] [--rate 30] [--error-rate 0.01] [--database-url URL]
        [--fake-process --memory-every 60]

A fake Bot API on 127.0.0.1 (bot/fakeapi, in a thread) enforces `--rate` messages a
second overall and 1 a second per chat by answering 429 with `retry_after`, and fails 1%
of the messages with a transient 5xx. Each subscriber gets two messages: the bulletin's
text, then its document (uploaded once, then sent by file id).

1. tipline: the broadcast is queued as outbox rows (one per recipient and part) and
   delivered by tipline's sender through its pacing rate limiter.
2. PTB's AIORateLimiter sends the same messages, one task per subscriber (text, then
   document), given the same margin as tipline's limiter (its overall rate 3% under the
   limit) and enough retries to lose nothing: the limiter retries a RetryAfter up to 50
   times, and a network error (5xx) is tried again with back-off until it goes.

Each side runs `--runs` times (3 by default), alternating, each tipline run on a fresh
database; printed per run and as medians, with tipline's figure over PTB's: achieved rate
as a share of the limit, 429s received, messages lost, duplicates, wall time, peak memory
(process-wide, includes the fake server). Asserts nothing. At the real limit 10,000
subscribers take about 2 x 10,000 / 30 s = 11 minutes per run, 50,000 about 56 minutes;
`--subscribers 1000 --runs 3` runs both sides in about 7 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, insert, select  # noqa: E402
from telegram import Bot  # noqa: E402
from telegram.error import NetworkError, RetryAfter, TelegramError  # noqa: E402
from telegram.ext import AIORateLimiter, ExtBot  # noqa: E402
from telegram.request import HTTPXRequest  # noqa: E402

from bot.app import build_deps  # noqa: E402
from bot.clock import SystemClock  # noqa: E402
from bot.ratelimit import GLOBAL_MARGIN, PacingRateLimiter, retry_after_seconds  # noqa: E402
from bot.sender import OutboxSender  # noqa: E402
from bot.services import broadcast  # noqa: E402
from bot.services.officials import Recipient  # noqa: E402
from storage.db import upgrade  # noqa: E402
from storage.models import OutboxMessage, Staff  # noqa: E402
from tests.conftest import make_config  # noqa: E402
from bot.fakeapi import FakeBotAPI  # noqa: E402

TOKEN = "123456:BENCH-TOKEN"
FIRST_CHAT = 10_000_001
TEXT = "<b>通报 第{n}期</b>\n" + "现将近期查实的违反工作纪律问题通报如下。" * 12
CAPTION = "通报第{n}期（打印、电视播发用文件）"


@dataclass
class Figures:
    name: str
    messages: int
    delivered: int
    first: float
    last: float
    count_429: int
    count_5xx: int
    lost: int
    duplicates: int
    wall: float
    peak_mib: float

    def rate(self) -> float:
        span = max(self.last - self.first, 1e-9)
        return (self.delivered - 1) / span if self.delivered > 1 else 0.0

    def row(self, limit: float) -> str:
        rate = self.rate()
        return (f"{self.name:<24} {rate:7.2f} msg/s = {100 * rate / limit:5.1f}% of {limit:g}   "
                f"429s {self.count_429:<5} 5xx {self.count_5xx:<4} lost {self.lost:<4} dup {self.duplicates:<4} "
                f"wall {self.wall:7.1f} s   peak RSS {self.peak_mib:6.0f} MiB")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """Resident memory now (Linux), to show it flat over a long run, not only its peak."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


class FakeProcess:
    """The fake Bot API in a process of its own (`--fake-process`): in a thread of this
    one, its record of every request grows with the broadcast and hides whether the
    sender's own memory stays flat. At the end it hands back what `account` reads."""

    CODE = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from bot.fakeapi import FakeBotAPI; "
        "srv = FakeBotAPI(sys.argv[2], global_per_second=int(float(sys.argv[3])), per_chat_per_second=1, "
        "group_per_minute=20, transient_error_rate=float(sys.argv[4]), seed=1, strict_file_ids=False); "
        "srv.start_in_thread(); print(srv.base_url, srv.base_file_url, flush=True); sys.stdin.read(); "
        "print(json.dumps({'sent': [{'chat_id': r['chat_id'], 'method': r['method'], 'time': r['time']} "
        "for r in srv.sent], 'count_429': srv.count_429, 'count_5xx': srv.count_5xx, "
        "'rate_violations': [{'kind': v['kind']} for v in srv.rate_violations]}), flush=True); srv.stop_thread()"
    )

    def __init__(self, rate: float, error_rate: float) -> None:
        import subprocess

        root = str(Path(__file__).resolve().parent.parent)
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE, root, TOKEN, str(rate), str(error_rate)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.base_url, self.base_file_url = self.proc.stdout.readline().split()

    def finish(self) -> Any:
        import json
        from types import SimpleNamespace

        out, _ = self.proc.communicate("", timeout=120)
        return SimpleNamespace(**json.loads(out.strip().splitlines()[-1]))


def account(srv: Any, name: str, expected: Counter[tuple[int, str]], wall: float) -> Figures:
    sent = srv.sent
    got = Counter((int(r["chat_id"]), r["method"]) for r in sent)
    lost = sum(max(0, n - got.get(k, 0)) for k, n in expected.items())
    dups = sum(max(0, got.get(k, 0) - n) for k, n in expected.items())
    times = sorted(r["time"] for r in sent)
    kinds = Counter(v["kind"] for v in srv.rate_violations)
    if kinds:
        print(f"  429 by limit: {dict(kinds)}")
    return Figures(name, sum(expected.values()), len(sent), times[0] if times else 0, times[-1] if times else 0,
                   srv.count_429, srv.count_5xx, lost, dups, wall, peak_mib())


def tipline_run(srv: Any, n: int, rate: float, database_url: str, memory_every: float = 0.0) -> Figures:
    config = make_config(database_url, telegram={"base_url": srv.base_url, "base_file_url": srv.base_file_url,
                                                 "global_per_second": rate, "per_chat_per_second": 1.0})
    deps, engine = build_deps(config, SystemClock())
    upgrade(engine)
    now = datetime.now(UTC)
    with deps.sessions.begin() as session:
        rows = [{"telegram_user_id": FIRST_CHAT + i, "display_name": f"Official {i}", "role": "official",
                 "team_number": None, "language": "zh-CN", "active": True, "joined_at": now} for i in range(n)]
        session.execute(insert(Staff), rows)
        ids = session.execute(select(Staff.id, Staff.telegram_user_id).order_by(Staff.id)).all()
        recipients = [Recipient(i, chat, "zh-CN") for i, chat in ids]
        blob = broadcast.store_blob(session, now, "bulletin-001-zh-CN.html", ("<html>" + TEXT * 20 + "</html>").encode())
        t0 = time.monotonic()
        broadcast.send(session, deps, now, kind="bulletin", ref="1", recipients=recipients, report=False,
                       parts_for={"zh-CN": [("send_message", {"text": TEXT.format(n=1), "protect": True}),
                                            ("send_document", {"blob_id": blob, "protect": True,
                                                               "caption": CAPTION.format(n=1)})]})
    print(f"  queued {2 * n} outbox rows in {time.monotonic() - t0:.1f} s")

    async def go() -> float:
        bot = Bot(TOKEN, base_url=srv.base_url, base_file_url=srv.base_file_url,
                  request=HTTPXRequest(connection_pool_size=64, pool_timeout=30.0))
        ext = ExtBot(TOKEN, base_url=srv.base_url, base_file_url=srv.base_file_url,
                     request=HTTPXRequest(connection_pool_size=64, pool_timeout=30.0),
                     rate_limiter=PacingRateLimiter(global_per_second=rate, per_chat_per_second=1.0))
        del bot
        async with ext:
            sender = OutboxSender(ext, deps)
            start = time.monotonic()
            sender.start()
            shown = start
            while True:
                await asyncio.sleep(1.0)
                with deps.sessions.begin() as session:
                    open_rows = session.scalar(select(func.count()).select_from(OutboxMessage)
                                               .where(OutboxMessage.status.in_(("pending", "sending"))))
                if memory_every and time.monotonic() - shown >= memory_every:
                    shown = time.monotonic()
                    print(f"  {shown - start:6.0f} s: {sender.delivered:6d} delivered, {open_rows:6d} open, "
                          f"RSS {rss_mib():5.0f} MiB", flush=True)
                if not open_rows:
                    break
            await sender.stop()
            return time.monotonic() - start

    wall = asyncio.run(go())
    engine.dispose()
    expected = Counter({(FIRST_CHAT + i, m): 1 for i in range(n) for m in ("sendMessage", "sendDocument")})
    if isinstance(srv, FakeProcess):
        return account(srv.finish(), "tipline (outbox+pacing)", expected, wall)
    return account(srv, "tipline (outbox+pacing)", expected, wall)


def ptb_run(srv: FakeBotAPI, n: int, rate: float) -> Figures:
    async def go() -> float:
        bot = ExtBot(TOKEN, base_url=srv.base_url, base_file_url=srv.base_file_url,
                     request=HTTPXRequest(connection_pool_size=64, pool_timeout=30.0),
                     rate_limiter=AIORateLimiter(overall_max_rate=rate / (1 + GLOBAL_MARGIN), max_retries=50))
        async with bot:
            # The document is uploaded once (as tipline does) to get a file id.
            message = await bot.send_document(FIRST_CHAT - 1, document=b"<html>" + TEXT.encode() * 20 + b"</html>",
                                              filename="bulletin-001-zh-CN.html")
            file_id = message.document.file_id
            srv.reset_records()
            srv.reset_limits()
            start = time.monotonic()

            async def call(make) -> None:  # type: ignore[no-untyped-def]
                attempt = 0
                while True:
                    try:
                        await make()
                        return
                    except RetryAfter as exc:  # after 50 retries in the limiter: still not lost
                        await asyncio.sleep(retry_after_seconds(exc))
                    except NetworkError:
                        await asyncio.sleep(min(30.0, 0.5 * 2 ** attempt))
                        attempt += 1
                    except TelegramError:
                        return

            async def one(chat: int) -> None:
                await call(lambda: bot.send_message(chat, TEXT.format(n=1), parse_mode="HTML", protect_content=True))
                await call(lambda: bot.send_document(chat, document=file_id, caption=CAPTION.format(n=1),
                                                     protect_content=True))

            await asyncio.gather(*(one(FIRST_CHAT + i) for i in range(n)))
            return time.monotonic() - start

    wall = asyncio.run(go())
    expected = Counter({(FIRST_CHAT + i, m): 1 for i in range(n) for m in ("sendMessage", "sendDocument")})
    return account(srv, "PTB AIORateLimiter", expected, wall)


def fresh_database(base: str | None, tmp: str, run: int) -> tuple[str, object]:
    """A new SQLite file, or a new schema in the given PostgreSQL database (dropped after)."""
    if base is None:
        return f"sqlite:///{tmp}/bench-{run}.sqlite3", None
    from bench.claim import _schema_url

    return _schema_url(base)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subscribers", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=3, help="runs of each side")
    p.add_argument("--rate", type=float, default=30.0, help="overall messages per second (the fake's limit)")
    p.add_argument("--error-rate", type=float, default=0.01, help="share of transient 5xx")
    p.add_argument("--database-url", help="PostgreSQL database to make schemas in; default: SQLite files")
    p.add_argument("--skip-ptb", action="store_true", help="only tipline's sender")
    p.add_argument("--fake-process", action="store_true",
                   help="tipline's runs: the fake Bot API in a process of its own (this one's memory is then "
                        "the sender's, not the fake's record of every request)")
    p.add_argument("--memory-every", type=float, default=0.0,
                   help="print tipline's progress and resident memory every so many seconds")
    args = p.parse_args()
    srv = FakeBotAPI(TOKEN, global_per_second=int(args.rate), per_chat_per_second=1, group_per_minute=20,
                     transient_error_rate=args.error_rate, seed=1, strict_file_ids=False)
    srv.start_in_thread()
    ours: list[Figures] = []
    theirs: list[Figures] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{args.subscribers} subscribers x 2 messages, limit {args.rate:g} msg/s overall and 1 msg/s "
                  f"per chat, {100 * args.error_rate:g}% transient 5xx, {args.runs} runs each", flush=True)
            for run in range(args.runs):
                srv.reset_records()
                srv.reset_limits()
                url, drop = fresh_database(args.database_url, tmp, run)
                try:
                    target = FakeProcess(args.rate, args.error_rate) if args.fake_process else srv
                    ours.append(tipline_run(target, args.subscribers, args.rate, url, args.memory_every))
                finally:
                    if drop is not None:
                        drop()  # type: ignore[operator]
                print(ours[-1].row(args.rate), flush=True)
                if not args.skip_ptb:
                    srv.reset_records()
                    srv.reset_limits()
                    theirs.append(ptb_run(srv, args.subscribers, args.rate))
                    print(theirs[-1].row(args.rate), flush=True)
    finally:
        srv.stop_thread()
    print("medians:")
    for name, figs in (("tipline", ours), ("PTB AIORateLimiter", theirs)):
        if figs:
            rate = statistics.median(f.rate() for f in figs)
            print(f"  {name:<20} {rate:6.2f} msg/s = {100 * rate / args.rate:5.1f}% of the limit, "
                  f"429s {statistics.median(f.count_429 for f in figs):g}, lost {max(f.lost for f in figs)}, "
                  f"dup {max(f.duplicates for f in figs)}, wall {statistics.median(f.wall for f in figs):.1f} s")
    if ours and theirs:
        ratio = statistics.median(f.rate() for f in ours) / max(statistics.median(f.rate() for f in theirs), 1e-9)
        print(f"  tipline / PTB rate: {ratio:.3f}")


if __name__ == "__main__":
    main()
