"""Start-up that explains itself: each way `tipline run` cannot start is one clear line on
stderr and a non-zero exit status, never a traceback.

    2  the configuration (a key named; also for the other commands)
    3  the database cannot be opened, or its schema is newer than this tipline
    4  Telegram refused the bot token (401)
    5  the health endpoint's or the webhook receiver's port is in use (or the address cannot be used)

Telegram unreachable at start is not fatal: tipline retries with back-off and says so
once a minute until it gets through (or is stopped).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from urllib.parse import urlsplit

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from telegram.error import InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application

from bot.config import Config
from bot.ratelimit import retry_after_seconds
from bot.supervise import Backoff, ThrottledLog
from bot.deps import make_keyring
from storage.db import alembic_config, make_engine, upgrade

log = logging.getLogger("tipline.startup")

EXIT_CONFIG = 2
EXIT_DATABASE = 3
EXIT_TOKEN = 4
EXIT_PORT = 5


class StartupError(Exception):
    """tipline cannot start; the message is the one line to show, `status` the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _first_line(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    line = (str(inner).strip().splitlines() or [type(inner).__name__])[0]
    return line[:200]


def _shown_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable URL)"


def open_database(config: Config) -> Engine:
    """Open the database, refuse a schema newer than this code, upgrade an older one."""
    shown = _shown_url(config.database.url)
    try:
        engine = make_engine(config.database.url, echo=config.database.echo)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = set(MigrationContext.configure(conn).get_current_heads())
    except ArgumentError as exc:
        raise StartupError(f"database.url: not a database URL: {_first_line(exc)}", EXIT_DATABASE) from None
    except (OSError, SQLAlchemyError) as exc:
        raise StartupError(f"database: cannot open {shown}: {_first_line(exc)}", EXIT_DATABASE) from None
    script = ScriptDirectory.from_config(alembic_config(engine))
    known = {rev.revision for rev in script.walk_revisions()}
    newer = sorted(current - known)
    if newer:
        engine.dispose()
        raise StartupError(
            f"database: {shown} has schema revision {newer[0]}, newer than this tipline "
            f"(which knows up to {script.get_current_head()}): run the tipline version that upgraded it, "
            "or restore a backup taken before that upgrade", EXIT_DATABASE)
    try:
        keyring = make_keyring(config)  # a migration may encrypt what an older version kept in clear
    except ValueError:
        keyring = None
    try:
        upgrade(engine, keyring=keyring)
    except (OSError, SQLAlchemyError) as exc:
        engine.dispose()
        raise StartupError(f"database: cannot upgrade {shown}: {_first_line(exc)}", EXIT_DATABASE) from None
    return engine


def port_error(config: Config, exc: OSError) -> StartupError:
    cfg = config.health
    if exc.errno == errno.EADDRINUSE:
        return StartupError(f"health.port: {cfg.listen}:{cfg.port} is already in use (another tipline, or another "
                            "program); choose another with health.port or TIPLINE_HEALTH_PORT", EXIT_PORT)
    return StartupError(f"health.listen: cannot listen on {cfg.listen}:{cfg.port}: "
                        f"{exc.strerror or _first_line(exc)}", EXIT_PORT)


def webhook_port_error(config: Config, exc: OSError) -> StartupError:
    tg = config.telegram
    if exc.errno == errno.EADDRINUSE:
        return StartupError(f"telegram.webhook_port: {tg.webhook_listen}:{tg.webhook_port} is already in use "
                            "(another tipline, or another program); choose another with telegram.webhook_port or "
                            "TIPLINE_TELEGRAM_WEBHOOK_PORT", EXIT_PORT)
    return StartupError(f"telegram.webhook_listen: cannot listen on {tg.webhook_listen}:{tg.webhook_port}: "
                        f"{exc.strerror or _first_line(exc)}", EXIT_PORT)


def webhook_refused(exc: TelegramError) -> StartupError:
    return StartupError(f"telegram.webhook_url: Telegram refused the webhook ({_first_line(exc)}); check "
                        "telegram.webhook_url (a public https:// URL on port 443, 80, 88 or 8443)", EXIT_CONFIG)


async def connect_telegram(app: Application, stopping: asyncio.Event, *,  # type: ignore[type-arg]
                           backoff: Backoff | None = None, said: ThrottledLog | None = None) -> bool:
    """Reach Telegram (getMe) before anything else runs. A refused token is fatal; an
    unreachable server is retried with back-off and said once a minute. False: stopped
    before Telegram answered."""
    backoff = backoff or Backoff(base=1.0, cap=60.0)
    said = said or ThrottledLog(log, every=60.0)
    where = urlsplit(app.bot.base_url)
    host = f"{where.scheme}://{where.netloc}" if where.netloc else "the Bot API server"
    while not stopping.is_set():
        try:
            await app.bot.initialize()  # getMe
        except InvalidToken:
            raise StartupError("telegram.token: Telegram refused the bot token (401 Unauthorized); check "
                               "telegram.token or TIPLINE_BOT_TOKEN (from @BotFather)", EXIT_TOKEN) from None
        except RetryAfter as exc:
            delay = retry_after_seconds(exc)
        except (NetworkError, TelegramError) as exc:
            said("telegram-unreachable", logging.WARNING,
                 "Telegram unreachable at %s (%s): retrying with back-off; said once a minute",
                 host, _first_line(exc) or type(exc).__name__)
            delay = backoff.next_delay()
        else:
            said.recovered("telegram-unreachable", "Telegram reached at %s", host)
            return True
        try:
            await asyncio.wait_for(stopping.wait(), timeout=delay)
        except TimeoutError:
            pass
    return False
