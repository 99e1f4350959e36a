"""The playground's engine: the Bot API stand-in, tipline itself, the people, the clock.

One process, one event loop: :class:`bot.fakeapi.FakeBotAPI` on 127.0.0.1 (a random
port), tipline's :class:`bot.app.Runtime` talking to it through ``telegram.base_url``
exactly as it talks to Telegram, and the web page (:mod:`bot.playground.web`). The
playground only acts as the people in the chats would: it pushes their messages and
button presses into the stand-in and reads what the bot sent. It never reaches into
tipline, except to create the staff's invite codes as `tipline invite` does and to run
the timer jobs at once after the trainer moves the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from markupsafe import Markup

from bot.app import Runtime
from bot.clock import OffsetClock
from bot.config import LANGUAGES, Config, parse_config
from bot.fakeapi import FakeBotAPI
from bot.playground.render import message_view
from bot.security import new_data_key, new_pepper

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent.parent
TOKEN = "100000001:PLAYGROUND-not-a-telegram-token"
CITIZEN_ID = 7_000_000  # + n
LEAD_ID = 8_000_000  # + team number
OFFICE_ID = 8_500_001
OFFICIAL_ID = 8_600_001
GROUP_ID = -1_009_000_000_000  # - team number
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
JUMPS = {"1h": timedelta(hours=1), "4h": timedelta(hours=4), "1d": timedelta(days=1)}


@dataclass
class Pane:
    """One chat on the page."""

    key: str
    kind: str  # citizen, group, lead, office, official
    chat_id: int
    number: int  # the citizen's or the team's number (0 for the office and the official)
    members: list[int] = field(default_factory=list)  # who can type here (the first by default)


def base_data(config_path: str | Path | None) -> dict[str, Any]:
    """The campaign (categories, units, teams, rules, deadlines, ...) from the configuration
    file when there is one, else from config.example.toml."""
    path = Path(config_path) if config_path else None
    if path is None or not path.exists():
        path = ROOT / "config.example.toml"
    return tomllib.loads(path.read_text(encoding="utf-8"))


class Playground:
    def __init__(self, data: dict[str, Any], *, data_dir: str | Path | None = None, port: int | None = None,
                 language: str | None = None, database_url: str | None = None) -> None:
        pg = dict(data.get("playground") or {})
        self.data_dir = Path(data_dir if data_dir is not None else pg.get("data_dir", "data/playground"))
        self.requested_port = int(port if port is not None else pg.get("port", 8080))
        self.language = language or pg.get("language") or "zh-CN"
        if self.language not in LANGUAGES:
            self.language = LANGUAGES[0]
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._data = copy.deepcopy(data)
        self._database_url = database_url or f"sqlite:///{(self.data_dir / 'playground.sqlite3').resolve()}"
        self.state = self._load_state()
        self.clock = OffsetClock()
        self.clock.offset = timedelta(seconds=float(self.state.get("offset_seconds", 0)))
        self.server = FakeBotAPI(TOKEN, bot_username="tipline_playground_bot", bot_first_name="tipline",
                                 burst_tolerance=0.1)
        # people's photos and the bot's documents are shown on the page: keep their bytes
        self.server._files.KEEP_CONTENT_BYTES = MAX_UPLOAD_BYTES
        self.runtime: Runtime | None = None
        self.config: Config | None = None
        self.panes: list[Pane] = []
        self.port = 0
        self.generation = 0
        self.seq = 0  # moves on whenever a page should redraw
        self.changed: asyncio.Event | None = None  # set (and replaced) when a page should redraw
        self._seen_at: dict[tuple[int, int], datetime] = {}
        self._query_pane: dict[str, str] = {}
        self._last_version: tuple[int, ...] = ()
        self._tasks: list[asyncio.Task[Any]] = []
        self._web: Any = None
        self.ready = asyncio.Event()

    # state on disk --------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        path = self.data_dir / "state.json"
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
        return {"offset_seconds": 0, "citizens": 1, "teams": [], "registered": {}}

    def _save_state(self) -> None:
        self.state["offset_seconds"] = self.clock.offset.total_seconds()
        path = self.data_dir / "state.json"
        path.write_text(json.dumps(self.state, indent=1), encoding="utf-8")

    def _secrets(self) -> dict[str, str]:
        """The playground's own pepper and keys, made on first start (never production's)."""
        path = self.data_dir / "secrets.json"
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
        secrets = {"pepper": new_pepper(), "data_key": new_data_key(), "contact_key": new_data_key()}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(secrets, f)
        return secrets

    def build_config(self) -> Config:
        data = copy.deepcopy(self._data)
        data.pop("playground", None)
        data["telegram"] = {**(data.get("telegram") or {}), "token": TOKEN, "base_url": self.server.base_url,
                            "base_file_url": self.server.base_file_url, "poll_timeout_seconds": 10}
        data["database"] = {**(data.get("database") or {}), "url": self._database_url}
        data["security"] = {**(data.get("security") or {}), **self._secrets()}
        data["campaign"] = {**(data.get("campaign") or {}), "default_language": self.language}
        # The journal's keys beside the playground's own data, not in the working directory.
        data["journal"] = {**(data.get("journal") or {}), "key_dir": str((self.data_dir / "journal-keys").resolve())}
        return parse_config(data, source="playground", env={})

    # life -----------------------------------------------------------------------------
    async def start(self) -> None:
        from bot.playground.web import start_web

        self.changed = asyncio.Event()
        for name in ("aiohttp.access", "aiohttp.server"):
            logging.getLogger(name).setLevel(logging.WARNING)
        await self.server.start()
        try:
            self._web, self.port = await start_web(self, self.requested_port)
        except OSError:
            await self.server.stop()
            raise
        self.config = self.build_config()
        self.runtime = Runtime(self.config, clock=self.clock)
        await self.runtime.start()
        self._tasks.append(asyncio.create_task(self._watch(), name="playground-watch"))
        self.panes = []
        self._ensure_users()
        for team in [1, *[t for t in self.state["teams"] if t != 1]]:
            self._add_team_panes(team)
        for n in range(1, int(self.state["citizens"]) + 1):
            self._add_citizen_pane(n)
        self._add_pane(Pane("office", "office", OFFICE_ID, 0, [OFFICE_ID]))
        self._add_pane(Pane("official", "official", OFFICIAL_ID, 0, [OFFICIAL_ID]))
        self._sort_panes()
        self._tasks.append(asyncio.create_task(self._register_all(), name="playground-register"))
        self.ready.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._web is not None:
            await self._web.cleanup()
        if self.runtime is not None:
            await self.runtime.stop()
            self.runtime.engine.dispose()
        await self.server.stop()
        self._save_state()

    # people ------------------------------------------------------------------------------
    def text(self, name: str, /, lang: str | None = None, **kwargs: Any) -> str:
        assert self.runtime is not None
        return str(Markup(self.runtime.deps.texts.msg(lang or self.language, name, **kwargs)).unescape())

    def _lang_code(self) -> str:
        return "en" if self.language == "en" else "zh-hans"

    def _add_pane(self, pane: Pane) -> None:
        if all(p.key != pane.key for p in self.panes):
            self.panes.append(pane)

    def _sort_panes(self) -> None:
        order = {"citizen": 0, "group": 1, "lead": 2, "office": 3, "official": 4}
        self.panes.sort(key=lambda p: (order[p.kind], p.number))

    def _add_citizen_pane(self, n: int) -> None:
        uid = CITIZEN_ID + n
        self.server.user(uid, self.text("pg_citizen_name", n=n), language_code=self._lang_code())
        self._add_pane(Pane(f"citizen-{n}", "citizen", uid, n, [uid]))

    def _add_team_panes(self, team: int) -> None:
        assert self.config is not None
        lead = LEAD_ID + team
        self.server.user(lead, self.text("pg_lead_name", team=team), language_code=self._lang_code())
        found = self.config.team(team)
        title = found.name.get(self.language) if found else f"#{team}"
        self.server.group(GROUP_ID - team, title)
        self._add_pane(Pane(f"group-{team}", "group", GROUP_ID - team, team, [lead]))
        self._add_pane(Pane(f"lead-{team}", "lead", lead, team, [lead]))

    def add_citizen(self) -> Pane:
        self.state["citizens"] = int(self.state["citizens"]) + 1
        n = int(self.state["citizens"])
        self._add_citizen_pane(n)
        self._sort_panes()
        self._save_state()
        self.touch()
        return self.pane(f"citizen-{n}")

    def add_team(self) -> Pane | None:
        assert self.config is not None
        shown = {p.number for p in self.panes if p.kind == "group"}
        free = [t.number for t in self.config.teams if t.number not in shown]
        if not free:
            return None
        team = free[0]
        self.state["teams"] = sorted({*self.state["teams"], team})
        self._add_team_panes(team)
        self._sort_panes()
        self._save_state()
        self._tasks.append(asyncio.create_task(self._register_team(team)))
        self.touch()
        return self.pane(f"group-{team}")

    def pane(self, key: str) -> Pane:
        for pane in self.panes:
            if pane.key == key:
                return pane
        raise KeyError(key)

    # registration through the production path: an invite code and /join ----------------------
    def _invite(self, **kwargs: Any) -> str:
        from bot.services.staff import create_invite

        assert self.runtime is not None
        deps = self.runtime.deps
        with deps.sessions.begin() as session:
            return create_invite(session, deps.keyring, deps.clock.now(), **kwargs)

    async def _join(self, key: str, user: int, chat: int | None, **invite: Any) -> None:
        if self.state["registered"].get(key):
            return
        code = self._invite(**invite)
        before = len(self.server.sent_to(chat if chat is not None else user))
        self.push_text(user, f"/join {code}", chat=chat)
        target = chat if chat is not None else user
        with contextlib.suppress(AssertionError):
            await self.server.wait_for(lambda: len(self.server.sent_to(target)) > before, timeout=30)
        self.state["registered"][key] = True
        self._save_state()

    async def _register_team(self, team: int) -> None:
        lead = LEAD_ID + team
        await self._join(f"lead-{team}", lead, None, kind="person", role="lead", team_number=team)
        await self._join(f"group-{team}", lead, GROUP_ID - team, kind="group", role=None, team_number=team)

    async def _register_all(self) -> None:
        try:
            await self._join("office", OFFICE_ID, None, kind="person", role="office", team_number=None)
            await self._join("official", OFFICIAL_ID, None, kind="person", role="official", team_number=None)
            for pane in [p for p in self.panes if p.kind == "group"]:
                await self._register_team(pane.number)
        except Exception:  # pragma: no cover - shown on the page as a missing answer
            log.exception("registering the playground's staff failed")

    def _ensure_users(self) -> None:
        self.server.user(OFFICE_ID, self.text("pg_office_name"), language_code=self._lang_code())
        self.server.user(OFFICIAL_ID, self.text("pg_official_name"), language_code=self._lang_code())

    # acting as people ------------------------------------------------------------------------
    def _check_member(self, pane: Pane, user: int | None) -> int:
        if user is None:
            return pane.members[0]
        if user not in pane.members:
            raise ValueError("not a member of this chat")
        return user

    def push_text(self, user: int, text: str, chat: int | None = None) -> None:
        update = self.server.push_message(user, text, chat=chat)
        self._stamp(update["message"])
        self.touch()

    def send_text(self, key: str, text: str, user: int | None = None) -> None:
        pane = self.pane(key)
        text = text.strip()
        if not text:
            raise ValueError("empty")
        uid = self._check_member(pane, user)
        self.push_text(uid, text[:4096], chat=pane.chat_id if pane.kind == "group" else None)

    def send_file(self, key: str, name: str, data: bytes, mime: str | None, user: int | None = None,
                  caption: str | None = None) -> None:
        pane = self.pane(key)
        if not data:
            raise ValueError("empty")
        if len(data) > MAX_UPLOAD_BYTES:
            raise ValueError("too large")
        uid = self._check_member(pane, user)
        chat = pane.chat_id if pane.kind == "group" else None
        photo = (mime or "").startswith("image/") and (mime or "") != "image/svg+xml"
        caption = (caption or "").strip()[:1024] or None
        if photo:
            update = self.server.push_message(uid, chat=chat, photo=True, caption=caption, content=data)
        else:
            update = self.server.push_message(uid, chat=chat, document=(name or "file")[:200], caption=caption,
                                              content=data, mime_type=mime or None)
        self._stamp(update["message"])
        self.touch()

    def press(self, key: str, message_id: int, data: str, user: int | None = None) -> None:
        pane = self.pane(key)
        uid = self._check_member(pane, user)
        message = self.server.message(pane.chat_id, message_id)
        if message is None:
            raise ValueError("no such message")
        rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
        if not any(b.get("callback_data") == data for row in rows for b in row):
            raise ValueError("no such button")
        update = self.server.push_callback(uid, message, data)
        self._query_pane[str(update["callback_query"]["id"])] = key
        self.touch()

    # the clock ------------------------------------------------------------------------------
    async def jump(self, how: str) -> timedelta:
        assert self.config is not None
        now = self.clock.now()
        tz = self.config.campaign.tz
        if how in JUMPS:
            delta = JUMPS[how]
        elif how == "summary":
            hh, mm = map(int, self.config.scheduler.summary_at.split(":"))
            local = now.astimezone(tz)
            target = local.replace(hour=hh, minute=mm, second=0, microsecond=0)
            if target <= local:
                target += timedelta(days=1)
            delta = target.astimezone(UTC) - now + timedelta(minutes=1)
        elif how == "bulletin":
            from bot.services.schedule import next_bulletin_run

            delta = next_bulletin_run(self.config, now) - now + timedelta(minutes=1)
        else:
            raise ValueError(how)
        self.clock.advance(delta)
        self._save_state()
        self.touch()
        await self.run_jobs()
        return delta

    async def run_jobs(self) -> None:
        """The timer jobs at once, at the new time (they also run on their own timers)."""
        assert self.runtime is not None
        app = self.runtime.app
        lock: asyncio.Lock | None = app.bot_data.get("schedule_lock")
        for name in ("due-steps", "scheduler-tick"):
            for job in app.job_queue.get_jobs_by_name(name):
                if name == "scheduler-tick" and lock is not None:
                    # A tick already running read the clock before the jump, and a tick
                    # skips while another holds the lock: wait for it, then run at the new time.
                    async with lock:
                        pass
                await job.run(app)

    # what the page shows ----------------------------------------------------------------------
    def touch(self) -> None:
        self.generation += 1

    def _stamp(self, message: dict[str, Any]) -> None:
        key = (int(message["chat"]["id"]), int(message["message_id"]))
        self._seen_at.setdefault(key, self.clock.now())

    def _version(self) -> tuple[int, ...]:
        s = self.server
        return (len(s.calls), len(s.callback_answers), self.generation)

    async def _watch(self) -> None:
        """Notice what the bot did (every request it makes is a call) and wake the pages."""
        while True:
            version = self._version()
            if version != self._last_version:
                self._last_version = version
                for pane in self.panes:
                    for msg in self.server.messages_in(pane.chat_id):
                        self._stamp(msg)
                self.seq += 1
                if self.changed is not None:
                    event, self.changed = self.changed, asyncio.Event()
                    event.set()
            await asyncio.sleep(0.15)

    def snapshot(self) -> dict[str, Any]:
        assert self.config is not None
        tz = self.config.campaign.tz
        now = self.clock.now()
        answers: dict[str, list[dict[str, Any]]] = {}
        for i, answer in enumerate(self.server.callback_answers):
            key = self._query_pane.get(str(answer["callback_query_id"]))
            if key is not None and answer.get("text"):
                answers.setdefault(key, []).append({"seq": i, "text": answer["text"],
                                                    "show_alert": bool(answer.get("show_alert"))})
        panes = []
        for pane in self.panes:
            messages = []
            for msg in self.server.messages_in(pane.chat_id):
                seen = self._seen_at.get((pane.chat_id, int(msg["message_id"])), now)
                view = message_view(msg, self.server.bot_user["id"])
                view["time"] = seen.astimezone(tz).strftime("%m-%d %H:%M")
                messages.append(view)
            members = [{"id": uid, "name": (self.server._users.get(uid) or {}).get("first_name", str(uid))}
                       for uid in pane.members]
            panes.append({"key": pane.key, "kind": pane.kind, "number": pane.number, "members": members,
                          "title": self._title(pane), "messages": messages,
                          "alerts": answers.get(pane.key, [])})
        offset = self.clock.offset
        return {
            "now": now.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
            "weekday": now.astimezone(tz).isoweekday(),
            "offset_minutes": int(offset.total_seconds() // 60),
            "panes": panes,
            "can_add_team": len({p.number for p in self.panes if p.kind == "group"}) < len(self.config.teams),
        }

    def _title(self, pane: Pane) -> str:
        if pane.kind == "group":
            chat = self.server._chats.get(pane.chat_id)
            return str(chat.info.get("title")) if chat is not None else str(pane.number)
        return (self.server._users.get(pane.members[0]) or {}).get("first_name", "")

    def file(self, file_id: str) -> tuple[bytes, str, str | None] | None:
        with self.server._lock:
            stored = self.server._files.get(file_id)
            if stored is None or stored.content is None:
                return None
            return stored.content, stored.mime_type or (
                "image/jpeg" if stored.kind == "photo" else "application/octet-stream"), stored.file_name


async def run_forever(playground: Playground, announce: Any = print) -> None:
    """Start, print the URL, serve until SIGINT/SIGTERM."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await playground.start()
    announce(playground)
    try:
        await stop.wait()
    finally:
        await playground.stop()
