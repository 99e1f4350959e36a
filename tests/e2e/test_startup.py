"""Start-up that explains itself: `tipline run` as a process, against the fake Bot API.

Each way it cannot start gives one line on stderr, its exit status and no traceback;
Telegram unreachable at start is retried and said once a minute until it answers.
Settings come from the environment as TIPLINE_<SECTION>_<KEY> (the base URL here)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from storage.db import make_engine, upgrade
from tests.conftest import ROOT, runnable_config_file
from tests.e2e.conftest import TOKEN
from tests.fakebot import FakeBotAPI

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="signals and subprocesses as on a server")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
    env.update({"TIPLINE_BOT_TOKEN": TOKEN, "TIPLINE_TELEGRAM_POLL_TIMEOUT_SECONDS": "1", "PYTHONUNBUFFERED": "1"},
               **extra)
    return env


async def _run(config: Path, env: dict[str, str], timeout: float = 60.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "--config", str(config), "run", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def _refused(tmp_path: Path, database_url: str, status: int, needle: str, **env: str) -> None:
    """`tipline run` with these settings exits with `status` and one line saying `needle`."""
    got, err = await _run(runnable_config_file(tmp_path, database_url), _env(**env))
    assert got == status, err
    _one_clear_line(err, needle)


def _one_clear_line(err: str, needle: str) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("tipline: ")]
    assert len(lines) == 1 and needle in lines[0], err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _taken_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def _webhook(**extra: str) -> dict[str, str]:
    return {"TIPLINE_TELEGRAM_MODE": "webhook", "TIPLINE_TELEGRAM_WEBHOOK_URL": "https://tipline.example.org/telegram",
            **extra}


async def test_wrong_token_is_one_line_and_status_4(tmp_path: Path, database_url: str) -> None:
    async with FakeBotAPI(TOKEN) as server:
        await _refused(tmp_path, database_url, 4, "Telegram refused the bot token (401",
                       TIPLINE_BOT_TOKEN="123456:WRONG", TIPLINE_TELEGRAM_BASE_URL=server.base_url)


async def test_unreachable_telegram_is_retried_and_said_once_a_minute(tmp_path: Path, database_url: str) -> None:
    port = _free_port()  # nothing listens there yet
    base = f"http://127.0.0.1:{port}/bot"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "--config", str(runnable_config_file(tmp_path, database_url)), "run", cwd=ROOT,
        env=_env(TIPLINE_TELEGRAM_BASE_URL=base, TIPLINE_TELEGRAM_BASE_FILE_URL=f"http://127.0.0.1:{port}/file/bot"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    lines: list[str] = []

    async def read_until(needle: str, timeout: float) -> None:
        async def go() -> None:
            while not any(needle in line for line in lines):
                line = await proc.stderr.readline()  # type: ignore[union-attr]
                if not line:
                    raise AssertionError("tipline exited:\n" + "".join(lines))
                lines.append(line.decode())
        await asyncio.wait_for(go(), timeout)

    try:
        await read_until("Telegram unreachable", 30)
        # Retried with back-off (1 s, 2 s, 4 s ...) meanwhile, but said once a minute only.
        with pytest.raises(TimeoutError):
            await read_until("never printed", 4)
        assert sum("unreachable" in line for line in lines) == 1, lines
        assert proc.returncode is None  # still trying, not exited
        async with FakeBotAPI(TOKEN, port=port) as server:  # Telegram is back
            await read_until("tipline is running", 30)
            assert server.calls_for("getMe")
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, "".join(lines)
    assert "Traceback" not in "".join(lines)


async def test_database_newer_than_the_code_is_refused(tmp_path: Path, database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    async with FakeBotAPI(TOKEN) as server:
        await _refused(tmp_path, database_url, 3, "schema revision 9999, newer than this tipline",
                       TIPLINE_TELEGRAM_BASE_URL=server.base_url)
        assert not server.calls_for("getMe")  # refused before anything else


async def test_database_that_cannot_be_opened_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    await _refused(tmp_path, f"sqlite:///{blocker}/tipline.sqlite3", 3, "database: cannot open sqlite:///")


async def test_port_in_use_is_refused(tmp_path: Path, database_url: str) -> None:
    with _taken_port() as port:
        async with FakeBotAPI(TOKEN) as server:
            await _refused(tmp_path, database_url, 5, f"health.port: 127.0.0.1:{port} is already in use",
                           TIPLINE_TELEGRAM_BASE_URL=server.base_url, TIPLINE_HEALTH_ENABLED="true",
                           TIPLINE_HEALTH_PORT=str(port))


async def test_configuration_error_names_the_variable(tmp_path: Path, database_url: str) -> None:
    await _refused(tmp_path, database_url, 2, "TIPLINE_SCHEDULER_SUMMARY_AT (scheduler.summary_at)",
                   TIPLINE_SCHEDULER_SUMMARY_AT="25:99")
    await _refused(tmp_path, database_url, 2, "TIPLINE_TELEGRAM_BASEURL: [telegram] has no key 'baseurl'",
                   TIPLINE_TELEGRAM_BASEURL="http://x")


async def test_webhook_port_in_use_is_refused(tmp_path: Path, database_url: str) -> None:
    with _taken_port() as port:
        async with FakeBotAPI(TOKEN) as server:
            await _refused(tmp_path, database_url, 5, f"telegram.webhook_port: 127.0.0.1:{port} is already in use",
                           **_webhook(TIPLINE_TELEGRAM_BASE_URL=server.base_url,
                                      TIPLINE_TELEGRAM_WEBHOOK_SECRET_TOKEN="secret-token",
                                      TIPLINE_TELEGRAM_WEBHOOK_PORT=str(port)))
            assert not server.calls_for("setWebhook")  # the port is checked before Telegram is told


async def test_webhook_mode_without_a_secret_token_names_the_key(tmp_path: Path, database_url: str) -> None:
    await _refused(tmp_path, database_url, 2, "telegram.webhook_secret_token: required in webhook mode", **_webhook())


async def test_webhook_refused_by_telegram_is_one_line_and_status_2(tmp_path: Path, database_url: str) -> None:
    async with FakeBotAPI(TOKEN) as server:
        server.fail_next("setWebhook", status=400)  # e.g. Telegram cannot reach the URL's host
        await _refused(tmp_path, database_url, 2, "telegram.webhook_url: Telegram refused the webhook",
                       **_webhook(TIPLINE_TELEGRAM_BASE_URL=server.base_url,
                                  TIPLINE_TELEGRAM_WEBHOOK_SECRET_TOKEN="secret-token",
                                  TIPLINE_TELEGRAM_WEBHOOK_PORT="0"))
