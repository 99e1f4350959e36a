"""Webhook mode with two tipline processes (children) on one PostgreSQL database behind one
fake Telegram that spreads the deliveries over both, as a reverse proxy does. Each process
records every update it handles (start and end, on the machine's monotonic clock), so the
test sees order and overlap across processes. Counts and order are asserted, never timings."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from bot.app import build_deps
from storage.db import upgrade
from tests.e2e.children import ChildProcess
from tests.e2e.conftest import TOKEN, e2e_config
from tests.e2e.test_officials_kill import _document
from tests.e2e.test_webhook import PUBLIC_URL, SECRET
from tests.fakebot import FakeBotAPI

HELP = "怎么用"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Child(ChildProcess):
    def __init__(self, doc: Path, record: Path, handle_delay: float = 0.0, journal_delay: float = 0.0) -> None:
        self.doc, self.record = doc, record
        self.delays = (str(handle_delay), str(journal_delay))

    async def start(self) -> None:
        line = await self.spawn("tests.e2e.webhook_child", str(self.doc), str(self.record), *self.delays, quiet=True)
        assert line == ["started"], line


def handled(record: Path) -> list[tuple[int, str, int, int, int]]:
    """(time, what, update_id, chat, pid) for each line, in time order."""
    out = []
    if record.exists():
        for line in record.read_text().splitlines():
            pid, what, update_id, chat, at = line.split()
            out.append((int(at), what, int(update_id), int(chat), int(pid)))
    return sorted(out)


def check_order(events: list[tuple[int, str, int, int, int]], expected: dict[int, list[int]]) -> None:
    """Each chat's updates handled once each, in update_id order, never two at once."""
    by_chat: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for _, what, update_id, chat, _ in events:
        by_chat[chat].append((what, update_id))
    for chat, ids in expected.items():
        seen = by_chat[chat]
        starts = [u for w, u in seen if w == "start"]
        assert starts == ids, (chat, starts, ids)
        for n in range(0, len(seen), 2):
            assert seen[n] == ("start", seen[n][1]) and seen[n + 1] == ("end", seen[n][1]), (chat, seen[n:n + 3])


@pytest.fixture
def postgres(database_url: str) -> str:
    if make_url(database_url).get_backend_name() != "postgresql":
        pytest.skip("several processes share one token on PostgreSQL")
    return database_url


async def _setup(database_url: str, srv: FakeBotAPI, tmp_path: Path, count: int = 2) -> list[Path]:
    docs = []
    key_dir = str(tmp_path / "journal-keys")  # shared by the processes, as the README says
    for n in range(count):
        config = e2e_config(database_url, srv, telegram={
            "mode": "webhook", "webhook_port": _free_port(), "webhook_url": PUBLIC_URL,
            "webhook_secret_token": SECRET}, scheduler={"enabled": False}, journal={"key_dir": key_dir})
        if n == 0:
            deps, engine = build_deps(config)
            upgrade(engine)
            engine.dispose()
        doc = tmp_path / f"config-{n}.json"
        doc.write_text(json.dumps(_document(config)), encoding="utf-8")
        docs.append(doc)
        srv_backend = f"http://127.0.0.1:{config.telegram.webhook_port}/telegram"
        srv.webhook.backends = [*(srv.webhook.backends or []), srv_backend]
    return docs


async def test_two_processes_behind_one_proxy_keep_each_chats_order(postgres: str, tmp_path: Path) -> None:
    async with FakeBotAPI(TOKEN, global_per_second=None, per_chat_per_second=None, group_per_minute=None) as srv:
        docs = await _setup(postgres, srv, tmp_path)
        record = tmp_path / "handled.log"
        children = [Child(doc, record) for doc in docs]
        try:
            await asyncio.gather(*(c.start() for c in children))
            chats = list(range(5_920_000, 5_920_012))
            expected: dict[int, list[int]] = defaultdict(list)
            for round_ in range(8):  # each chat's updates, one after the other (as a person types)
                for uid in chats:
                    update = srv.push_message(srv.user(uid, f"P{uid}"), "/help" if round_ % 2 else "/cancel")
                    expected[uid].append(update["update_id"])
            total = sum(len(v) for v in expected.values())
            await srv.wait_for(lambda: sum(1 for e in handled(record) if e[1] == "end") >= total, timeout=120,
                               message="every update handled")
            await asyncio.sleep(0.5)  # anything handled twice would show now
            events = handled(record)
            check_order(events, expected)
            pids = {e[4] for e in events}
            backends = {a["backend"] for a in srv.webhook.attempts}
            print(f"\ntwo processes: {total} updates, {len(srv.webhook.attempts)} deliveries over "
                  f"{len(backends)} receivers, handled by {len(pids)} processes")
            assert len(backends) == 2 and len(pids) == 2  # both took part
            assert all(a["status"] == 200 for a in srv.webhook.attempts)
        finally:
            await asyncio.gather(*(c.stop() for c in children))


async def test_kill_9_after_the_200_loses_nothing(postgres: str, tmp_path: Path) -> None:
    async with FakeBotAPI(TOKEN, global_per_second=None, per_chat_per_second=None, group_per_minute=None) as srv:
        docs = await _setup(postgres, srv, tmp_path)
        record = tmp_path / "handled.log"
        # The first process answers after a slow commit and is slow to handle: it is killed after
        # its 200s, before it handled them. The second (and the first, restarted) carry on.
        doomed = Child(docs[0], record, handle_delay=30.0, journal_delay=0.3)
        other = Child(docs[1], record)
        restarted = Child(docs[0], record)
        try:
            await doomed.start()
            await other.start()
            chats = list(range(5_921_000, 5_921_006))
            expected: dict[int, list[int]] = defaultdict(list)
            for uid in chats:
                expected[uid].append(srv.push_message(srv.user(uid, f"K{uid}"), "/help")["update_id"])
            first_backend = srv.webhook.backends[0]  # type: ignore[index]
            await srv.wait_for(lambda: any(a["backend"] == first_backend and a["status"] == 200
                                           for a in srv.webhook.attempts), timeout=30,
                               message="a 200 from the doomed process")
            await doomed.kill()
            answered_by_doomed = {a["update_id"] for a in srv.webhook.attempts
                                  if a["backend"] == first_backend and a["status"] == 200}
            await restarted.start()
            for uid in chats:  # more of each chat's updates after the kill
                expected[uid].append(srv.push_message(srv.user(uid, f"K{uid}"), "/cancel")["update_id"])
            total = sum(len(v) for v in expected.values())
            await srv.wait_for(lambda: sum(1 for e in handled(record) if e[1] == "end") >= total, timeout=120,
                               message="every update handled after the kill")
            await asyncio.sleep(0.5)
            events = handled(record)
            print(f"\nkill -9 after 200: {len(answered_by_doomed)} updates answered 200 by the killed process, "
                  f"{total} handled in all")
            assert answered_by_doomed
            check_order(events, expected)
        finally:
            for child in (doomed, other, restarted):
                await child.stop()
