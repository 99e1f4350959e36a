"""Citizens' conversations, held in memory and keyed by a chat pseudonym.

The memory is the cache: bot/conversations.py keeps a sealed copy of each conversation in
progress (and of each back-off counter) in the database, under the same pseudonym, so a
restart continues it. Entries expire after `ttl`; back-off counters for wrong codes live
here too (a day after the last wrong code).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from bot import conversations
from bot.conversations import parse_when, when


class Step(StrEnum):
    IDLE = "idle"
    CHANNEL = "channel"  # the office's entry: phone or mail
    CATEGORY = "category"
    UNIT = "unit"
    UNIT_OTHER = "unit_other"
    PLACE = "place"
    TEXT = "text"
    EVIDENCE = "evidence"
    REVIEW = "review"
    RECEIPT = "receipt"  # waiting for a receipt code
    FOLLOWUP = "followup"  # a tip opened with its receipt code
    ADD_INFO = "add_info"  # adding information to that tip


@dataclass
class EvidenceItem:
    kind: str  # photo | document | video | voice | audio
    file_id: str  # of the cleaned copy; of the original only for what could not be cleaned
    caption: str | None = None
    cleaned: bool = True
    token: str | None = None  # names an uncleaned item in its Withdraw button


@dataclass
class Draft:
    category: str | None = None
    unit: str | None = None
    unit_other: str | None = None
    place: str | None = None
    text: str | None = None
    channel: str | None = None  # an office entry's phone | mail (a citizen's tip: None, "telegram")
    evidence: list[EvidenceItem] = field(default_factory=list)
    editing: bool = False  # after an edit, go back to the review
    notify: bool = False  # the tipster asked to be told of news
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(9))  # on the Submit button

    def complete(self) -> bool:
        return None not in (self.category, self.unit, self.place, self.text)


@dataclass
class ChatSession:
    lang: str
    step: Step = Step.IDLE
    draft: Draft | None = None
    unit_page: int = 0
    tip_id: int | None = None  # the tip opened with a receipt code
    question_id: int | None = None  # the team's question being answered
    open_questions: list[int] = field(default_factory=list)  # the opened tip's unanswered questions
    addition_text: list[str] = field(default_factory=list)
    addition_evidence: list[EvidenceItem] = field(default_factory=list)
    touched: datetime | None = None
    expired_notice: bool = False
    pending_ack: asyncio.Task[None] | None = field(default=None, repr=False, compare=False)  # an album's answer


@dataclass
class Backoff:
    failures: int = 0
    not_before: datetime | None = None
    last: datetime | None = None


@dataclass
class Flood:
    window_start: datetime
    count: int = 0
    warned: bool = False


BACKOFF_KEPT = timedelta(days=1)  # a back-off counter is forgotten a day after the last wrong code


class SessionStore:
    """Sessions by pseudonym; expired ones are dropped on access and by `sweep`."""

    def __init__(self, ttl: timedelta) -> None:
        self.ttl = ttl
        self._sessions: dict[str, ChatSession] = {}
        self.backoffs: dict[str, Backoff] = {}
        self.floods: dict[str, Flood] = {}

    def get(self, key: str, now: datetime, default_lang: str) -> tuple[ChatSession, bool]:
        """The chat's session and whether an unfinished one had expired."""
        session = self._sessions.get(key)
        expired = False
        if session is not None and session.touched is not None and now - session.touched > self.ttl:
            expired = session.step not in (Step.IDLE,)
            session = ChatSession(lang=session.lang)
            self._sessions[key] = session
        if session is None:
            session = ChatSession(lang=default_lang)
            self._sessions[key] = session
        session.touched = now
        return session, expired

    def peek(self, key: str) -> ChatSession | None:
        return self._sessions.get(key)

    def put(self, key: str, session: ChatSession) -> None:
        self._sessions[key] = session

    def drop(self, key: str) -> None:
        self._sessions.pop(key, None)

    def sweep(self, now: datetime) -> int:
        """Forget expired sessions and stale counters; returns how many sessions went."""
        stale = [k for k, s in self._sessions.items() if s.touched is None or now - s.touched > self.ttl]
        for key in stale:
            del self._sessions[key]
        for key in [k for k, b in self.backoffs.items() if b.last is None or now - b.last > BACKOFF_KEPT]:
            del self.backoffs[key]
        for key in [k for k, f in self.floods.items() if now - f.window_start > timedelta(minutes=5)]:
            del self.floods[key]
        return len(stale)

    def __len__(self) -> int:
        return len(self._sessions)


def backoff_wait(failures: int, free: int, base: float, cap: float) -> float:
    """Seconds a chat must wait after `failures` wrong codes in a row."""
    if failures < free:
        return 0.0
    return float(min(cap, base * (2 ** (failures - free))))


# --- kept across restarts (bot/conversations.py) ----------------------------------------------
def dump_evidence(items: list[EvidenceItem]) -> list[dict[str, Any]]:
    return [asdict(i) for i in items]


def load_evidence(items: list[dict[str, Any]]) -> list[EvidenceItem]:
    return [EvidenceItem(**i) for i in items]


def dump_session(s: ChatSession) -> dict[str, Any] | None:
    """A session worth keeping (a draft, a receipt code awaited, a tip opened); None when idle."""
    if s.step is Step.IDLE:
        return None
    draft = None
    if s.draft is not None:
        draft = {**asdict(s.draft), "evidence": dump_evidence(s.draft.evidence)}
    return {"lang": s.lang, "step": s.step.value, "draft": draft, "unit_page": s.unit_page, "tip_id": s.tip_id,
            "question_id": s.question_id, "open_questions": list(s.open_questions),
            "addition_text": list(s.addition_text), "addition_evidence": dump_evidence(s.addition_evidence),
            "touched": when(s.touched)}


def load_session(d: dict[str, Any]) -> ChatSession:
    draft = None
    if d.get("draft") is not None:
        draft = Draft(**{**d["draft"], "evidence": load_evidence(d["draft"].get("evidence", []))})
    return ChatSession(lang=d["lang"], step=Step(d["step"]), draft=draft, unit_page=d.get("unit_page", 0),
                       tip_id=d.get("tip_id"), question_id=d.get("question_id"),
                       open_questions=list(d.get("open_questions", [])),
                       addition_text=list(d.get("addition_text", [])),
                       addition_evidence=load_evidence(d.get("addition_evidence", [])),
                       touched=parse_when(d.get("touched")))


def _store(bot_data: dict[str, Any]) -> SessionStore:
    return bot_data["deps"].chats  # type: ignore[no-any-return]


def _session_expires(s: ChatSession, bot_data: dict[str, Any]) -> datetime:
    assert s.touched is not None
    return s.touched + _store(bot_data).ttl


def _dump_backoff(b: Backoff) -> dict[str, Any] | None:
    if b.last is None:
        return None
    return {"failures": b.failures, "not_before": when(b.not_before), "last": when(b.last)}


def _load_backoff(d: dict[str, Any]) -> Backoff:
    return Backoff(failures=int(d["failures"]), not_before=parse_when(d.get("not_before")),
                   last=parse_when(d.get("last")))


def _backoff_expires(b: Backoff, _bot_data: dict[str, Any]) -> datetime:
    assert b.last is not None
    return b.last + BACKOFF_KEPT


conversations.register(conversations.Kind(
    "citizen", "chat",
    get=lambda bot_data, key: _store(bot_data).peek(key),
    put=lambda bot_data, key, d: _store(bot_data).put(key, load_session(d)),
    dump=dump_session, expires=_session_expires,
    clear=lambda bot_data, key: _store(bot_data).drop(key),
))
for _name, _scope in (("backoff", "chat"), ("joinwait", "join")):  # wrong receipt codes; wrong /join codes
    conversations.register(conversations.Kind(
        _name, _scope,
        get=lambda bot_data, key: _store(bot_data).backoffs.get(key),
        put=lambda bot_data, key, d: _store(bot_data).backoffs.__setitem__(key, _load_backoff(d)),
        dump=_dump_backoff, expires=_backoff_expires,
        clear=lambda bot_data, key: _store(bot_data).backoffs.pop(key, None),
    ))
