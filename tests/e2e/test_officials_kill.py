"""A tipline process killed (SIGKILL) in the middle of a broadcast: after the restart every
subscriber has exactly one copy of each message."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bot.app import build_deps
from pydantic import SecretStr

from bot.config import Config
from bot.services import schedule
from storage.db import upgrade
from storage.models import OutboxMessage
from tests.conftest import ROOT
from tests.e2e.conftest import TOKEN, Harness, e2e_config, plain
from tests.fakebot import ApiError, FakeBotAPI
from tests.officials_data import add_person, local

OFFICIALS = 20
FIRST = 6_700_001
DELIVERED_BEFORE_KILL = 15


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, SecretStr):  # the child needs the secrets themselves
        return value.get_secret_value()
    return value


def _document(config: Config) -> dict[str, Any]:
    return _json_ready(config.model_dump(by_alias=True))


async def test_a_process_killed_mid_broadcast_leaves_every_official_one_copy(database_url: str,
                                                                             tmp_path: Path) -> None:
    async with FakeBotAPI(TOKEN, global_per_second=None, per_chat_per_second=None, group_per_minute=None) as srv:
        config = e2e_config(database_url, srv, telegram={"global_per_second": 20.0},
                            scheduler={"enabled": False})
        h = Harness(srv, config)
        h.clock.offset += local(2026, 12, 1, 18, 1) - h.clock.now()
        deps, engine = build_deps(config, h.clock)
        upgrade(engine)
        with deps.sessions.begin() as session:
            for i in range(OFFICIALS):
                add_person(session, deps, FIRST + i, f"Official {i}", "official")
                srv.user(FIRST + i, f"Official {i}")
        assert schedule.run_job(deps, "summary", "2026-12-01", h.clock.now()) == f"summary to {OFFICIALS}, digest to 0"
        engine.dispose()

        # After a few deliveries, Telegram stops answering: requests hang, no message is made.
        created = [0]
        gate = asyncio.Event()
        hanging = [0]
        originals = {m: srv._methods[m][1] for m in ("sendmessage", "sendphoto")}

        def gated(method: str):  # type: ignore[no-untyped-def]
            async def handler(params: dict, files: dict) -> Any:
                if created[0] >= DELIVERED_BEFORE_KILL:
                    hanging[0] += 1
                    await gate.wait()
                    raise ApiError(502, "Bad Gateway")
                created[0] += 1
                with srv._lock:
                    return originals[method](params, files)
            return handler

        srv.register_method("sendMessage", gated("sendmessage"))
        srv.register_method("sendPhoto", gated("sendphoto"))
        doc = tmp_path / "config.json"
        doc.write_text(json.dumps(_document(config)), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.e2e.child", str(doc), str(h.clock.offset.total_seconds()),
            cwd=str(ROOT), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            await srv.wait_for(lambda: hanging[0] > 0, timeout=30)
            await asyncio.sleep(0.5)  # the child records the answers it had
            child.send_signal(signal.SIGKILL)
            await child.wait()
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        assert len(srv.sent) == DELIVERED_BEFORE_KILL
        gate.set()
        srv.register_method("sendMessage", originals["sendmessage"])
        srv.register_method("sendPhoto", originals["sendphoto"])

        # Restart; rows the killed process had in flight come back when their lease ends.
        h.clock.offset += config_lease()
        await h.start()
        try:
            await srv.wait_for(lambda: _unsent(h) == 0, timeout=30)
            copies = Counter((r["chat_id"], r["method"]) for r in srv.sent
                             if r["method"] == "sendPhoto" or "每日汇总 2026-12-01" in plain(r))
            assert copies == Counter({(FIRST + i, m): 1 for i in range(OFFICIALS)
                                      for m in ("sendMessage", "sendPhoto")})
        finally:
            await h.stop()


def config_lease():  # type: ignore[no-untyped-def]
    from datetime import timedelta

    return timedelta(minutes=11)  # the sender's lease is 10 minutes


def _unsent(h: Harness) -> int:
    with h.deps.sessions.begin() as session:
        return int(session.scalar(select(func.count()).select_from(OutboxMessage)
                                  .where(OutboxMessage.status != "sent")) or 0)
