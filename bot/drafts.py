"""Citizens' conversations, held in memory only and keyed by a chat pseudonym.

Nothing here is ever written to disk: a restart forgets unfinished drafts (the tipster
is told so), which is the price of keeping no trace of who was typing. Entries expire
after `ttl`; back-off counters for wrong codes live here too.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


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

    def sweep(self, now: datetime) -> int:
        """Forget expired sessions and stale counters; returns how many sessions went."""
        stale = [k for k, s in self._sessions.items() if s.touched is None or now - s.touched > self.ttl]
        for key in stale:
            del self._sessions[key]
        day = timedelta(days=1)
        for key in [k for k, b in self.backoffs.items() if b.last is None or now - b.last > day]:
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
