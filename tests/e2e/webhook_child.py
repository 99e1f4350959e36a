"""Run tipline in webhook mode in a child process for the webhook tests:
`python -m tests.e2e.webhook_child CONFIG.json RECORD [HANDLE_DELAY] [JOURNAL_DELAY]`.

Each update handled is recorded in RECORD (appended: "<pid> start|end <update_id> <chat>
<monotonic ns>"), so that the parent can check order and overlap across processes.
HANDLE_DELAY (seconds) is slept before each handler, JOURNAL_DELAY before each journal
commit (to place a kill between a request and its answer, or after the answer).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from bot.app import Runtime
from bot.config import parse_config


async def main(path: str, record: str, handle_delay: float, journal_delay: float) -> None:
    with open(path, encoding="utf-8") as f:
        config = parse_config(json.load(f), source=path, env={})
    runtime = Runtime(config)
    poller = runtime.poller
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    real_handle, real_journal = poller._handle, poller.journal_batch

    def note(what: str, entry) -> None:  # type: ignore[no-untyped-def]
        os.write(fd, f"{os.getpid()} {what} {entry.update_id} {entry.chat[1]} {time.monotonic_ns()}\n".encode())

    async def handle(entry):  # type: ignore[no-untyped-def]
        if handle_delay:
            await asyncio.sleep(handle_delay)
        note("start", entry)
        failed = await real_handle(entry)
        await asyncio.sleep(0.01)  # a handler that takes a moment: overlaps would show
        note("end", entry)
        return failed

    def journal(updates, **kw):  # type: ignore[no-untyped-def]
        if journal_delay:
            time.sleep(journal_delay)
        return real_journal(updates, **kw)

    poller._handle = handle  # type: ignore[method-assign]
    poller.journal_batch = journal  # type: ignore[method-assign]
    await runtime.start()
    print("started", flush=True)
    await runtime.wait()


if __name__ == "__main__":
    args = sys.argv[1:] + ["0", "0"]
    asyncio.run(main(args[0], args[1], float(args[2]), float(args[3])))
