"""Logging that cannot leak a tipster.

Libraries may log requests and updates at DEBUG/INFO (httpx logs every URL, which
carries the bot token; PTB logs updates at DEBUG). Their loggers are held at WARNING
whatever the configured level, and a filter drops any record whose arguments are
Telegram objects, in case a future library version logs one.
"""

from __future__ import annotations

import logging
import sys

QUIET = ("httpx", "httpcore", "telegram", "apscheduler", "hpack", "asyncio")


class NoTelegramObjects(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        for arg in args:
            module = type(arg).__module__ or ""
            if module.startswith("telegram"):
                return False
        return True


def configure(level: str = "INFO", stream: object = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(NoTelegramObjects())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def quiet_libraries() -> None:
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
