"""The application's collaborators, built once and handed to handlers and jobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from bot.clock import Clock
from bot.config import Config
from bot.conversations import ConversationStore
from bot.domain.routing import Router, Rule
from bot.drafts import SessionStore
from bot.hashing import HashPool
from bot.sealing import EphemeralKeys
from bot.security import Keyring
from bot.texts import Texts


@dataclass
class Deps:
    config: Config
    sessions: sessionmaker[Session]
    keyring: Keyring
    texts: Texts
    clock: Clock
    router: Router
    chats: SessionStore
    wake_sender: list = field(default_factory=list)  # callbacks that nudge the outbox sender
    staff_flows: dict = field(default_factory=dict)  # a staff member's guided flow, by user id
    # Short-lived keys for data that must become unreadable once done with (bot/sealing.py).
    ephemeral: EphemeralKeys | None = None
    hashes: HashPool | None = None  # the receipt hash's bounded pool (made from the config if not given)
    # Conversations in progress kept across restarts, sealed under the ephemeral keys.
    conversations: ConversationStore | None = None

    def __post_init__(self) -> None:
        if self.conversations is None:
            self.conversations = ConversationStore(self.sessions, self.keyring, self.ephemeral, self.clock)
        if self.hashes is None:
            self.hashes = HashPool(self.keyring, self.config.security.receipt_hash_workers)

    async def receipt_hash(self, code: str) -> str:
        assert self.hashes is not None
        return await self.hashes.receipt_hash(code)

    def nudge_sender(self) -> None:
        for wake in self.wake_sender:
            wake()


def make_router(config: Config) -> Router:
    return Router(
        [Rule(r.id, r.team, r.category, r.unit, r.unit_kind) for r in config.routing.rules],
        config.routing.fallback_team,
    )


def make_keyring(config: Config) -> Keyring:
    sec = config.security
    return Keyring(
        sec.pepper.get_secret_value(),
        sec.data_key.get_secret_value(),
        time_cost=sec.receipt_hash_time_cost,
        memory_kib=sec.receipt_hash_memory_kib,
        parallelism=sec.receipt_hash_parallelism,
    )


def make_ephemeral_keys(config: Config) -> EphemeralKeys:
    j = config.journal
    return EphemeralKeys(j.key_dir, timedelta(minutes=j.key_rotate_minutes))
