"""Conversations shared by several processes on one database (webhook mode, any number of
processes): a chat whose updates go A, then B, then A again continues at A from B's step,
and a draft finished at B is gone at A too (bot/conversations.py: versions, compare-and-set)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine, select

from bot.app import build_deps
from bot.clock import FakeClock
from bot.config import Config
from bot.conversations import Slot
from bot.deps import Deps
from bot.drafts import ChatSession, Draft, Step
from storage.models import Conversation

CHAT = 6_230_044_001


class Process:
    """One process's view: its own memory (sessions, conversation store), the shared database."""

    def __init__(self, config: Config, clock: FakeClock, engine: Engine) -> None:
        self.deps: Deps = build_deps(config, clock, engine)[0]
        self.bot_data = {"deps": self.deps}
        p = self.deps.keyring.pseudonym("chat", CHAT)
        self.key, self.slots = p, [Slot("citizen", p, p)]

    async def handle(self, update_id: int, change: Callable[[ChatSession], None]) -> bool:
        """One update the way the application handles it: load, the handler, save. False if
        it was found handled already."""
        store = self.deps.conversations
        assert store is not None
        if await store.load(self.bot_data, self.slots, update_id):
            return False
        session, _ = self.deps.chats.get(self.key, self.deps.clock.now(), "zh-CN")
        change(session)
        await store.flush(self.bot_data, self.slots, update_id)
        return True

    def session(self) -> ChatSession | None:
        return self.deps.chats.peek(self.key)


@pytest.fixture
def processes(config: Config, clock: FakeClock, engine: Engine) -> tuple[Process, Process]:
    return Process(config, clock, engine), Process(config, clock, engine)


def start(s: ChatSession) -> None:
    s.step, s.draft = Step.UNIT, Draft(category="late")


def start_other(s: ChatSession) -> None:
    s.step, s.draft = Step.UNIT, Draft(category="rude")


def unit(name: str) -> Callable[[ChatSession], None]:
    def change(s: ChatSession) -> None:
        assert s.draft is not None
        s.draft.unit, s.step = name, Step.PLACE
    return change


def place(s: ChatSession) -> None:
    assert s.draft is not None
    s.draft.place, s.step = "the county office", Step.TEXT


def cancel(s: ChatSession) -> None:
    s.step, s.draft = Step.IDLE, None


async def test_a_chat_continues_from_the_step_another_process_took(processes: tuple[Process, Process]) -> None:
    a, b = processes
    assert await a.handle(1, start)
    assert await b.handle(2, unit("Dingchang"))  # B reads A's draft, takes the next step
    assert await a.handle(3, place)  # back at A: from B's step, not A's own older one
    s = a.session()
    assert s is not None and s.draft is not None
    assert (s.step, s.draft.unit, s.draft.place) == (Step.TEXT, "Dingchang", "the county office")
    # B's update delivered again to A (saved at B, not yet marked handled): not applied twice
    assert not await a.handle(2, unit("twice"))
    # and B, in turn, sees A's step
    assert await b.handle(4, lambda s: None)
    s = b.session()
    assert s is not None and s.draft is not None and s.draft.place == "the county office"


async def test_a_draft_finished_elsewhere_is_gone_here(processes: tuple[Process, Process], engine: Engine) -> None:
    a, b = processes
    assert await a.handle(1, start)
    assert await b.handle(2, cancel)  # cancelled at B: the row is gone
    with engine.connect() as conn:
        assert not conn.execute(select(Conversation.kind)).all()
    assert await a.handle(3, lambda s: None)  # A has no draft left to continue
    s = a.session()
    assert s is not None and s.step is Step.IDLE and s.draft is None
    # A new draft started at B after the old one finished there (its row made again, with
    # the same number of writes) is the one A continues
    assert await a.handle(4, start)
    assert await b.handle(5, cancel)
    assert await b.handle(6, start_other)
    assert await a.handle(7, lambda s: None)
    s = a.session()
    assert s is not None and s.draft is not None and s.draft.category == "rude"


async def test_a_write_over_a_change_made_elsewhere_is_not_made(processes: tuple[Process, Process],
                                                                engine: Engine) -> None:
    a, b = processes
    assert await a.handle(1, start)
    assert await b.handle(2, unit("B's"))
    # A changes its copy without reading B's change (both at once): B's row stays
    session, _ = a.deps.chats.get(a.key, a.deps.clock.now(), "zh-CN")
    unit("A's")(session)
    await a.deps.conversations.flush(a.bot_data, a.slots, 3)  # type: ignore[union-attr]
    assert await b.handle(4, lambda s: None)
    s = b.session()
    assert s is not None and s.draft is not None and s.draft.unit == "B's"
    assert await a.handle(5, lambda s: None)  # and A reads it again with its next update
    s = a.session()
    assert s is not None and s.draft is not None and s.draft.unit == "B's"
    with engine.connect() as conn:
        assert len(conn.execute(select(Conversation.version)).all()) == 1


async def test_many_chats_saved_at_once_share_one_transaction(config: Config, clock: FakeClock,
                                                              engine: Engine) -> None:
    """Updates of many chats handled at the same moment: their conversations are written
    together (bot/conversations.py, `_write_together`), each caller back once its own row
    is committed; one write transaction each would queue for SQLite's write lock."""
    import asyncio

    from sqlalchemy import event

    deps = build_deps(config, clock, engine)[0]
    store = deps.conversations
    assert store is not None
    bot_data = {"deps": deps}
    chats = [CHAT + i for i in range(20)]
    wrote: set[int] = set()
    transactions = []

    def record(conn, _cursor, statement: str, *_: object) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith(("INSERT INTO CONVERSATIONS", "UPDATE CONVERSATIONS")):
            wrote.add(id(conn))

    def commit(conn) -> None:  # type: ignore[no-untyped-def]
        if id(conn) in wrote:
            wrote.discard(id(conn))
            transactions.append(1)

    async def handle(chat: int, update_id: int) -> None:
        p = deps.keyring.pseudonym("chat", chat)
        slots = [Slot("citizen", p, p)]
        assert not await store.load(bot_data, slots, update_id)
        session, _ = deps.chats.get(p, deps.clock.now(), "zh-CN")
        start(session)
        await store.flush(bot_data, slots, update_id)

    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine, "commit", commit)
    try:
        await asyncio.gather(*(handle(chat, 100 + i) for i, chat in enumerate(chats)))
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine, "commit", commit)
    with deps.sessions.begin() as session:
        stored = session.scalar(select(Conversation.pseudonym).where(Conversation.kind == "citizen")
                                .order_by(Conversation.pseudonym).limit(1))
        count = len(list(session.scalars(select(Conversation.version))))
    assert stored is not None and count == len(chats)  # every chat's draft is in
    assert 1 <= len(transactions) <= 3, transactions  # not one each


async def test_many_chats_loaded_at_once_share_one_version_read(config: Config, clock: FakeClock,
                                                                 engine: Engine) -> None:
    """Updates of many chats arriving together read their conversations' versions in one
    statement (bot/conversations.py, `_versions_together`), not one each; and each still
    sees its own chat's row: one written by another process is read again."""
    import asyncio

    from sqlalchemy import event

    a, b = Process(config, clock, engine), Process(config, clock, engine)
    store = a.deps.conversations
    assert store is not None
    chats = [CHAT + i for i in range(20)]
    slots = {c: [Slot("citizen", p, p)] for c in chats for p in [a.deps.keyring.pseudonym("chat", c)]}
    # B starts a draft in one of the chats; A has never seen any of them.
    other = chats[7]
    b_store = b.deps.conversations
    assert b_store is not None
    assert not await b_store.load(b.bot_data, slots[other], 1)
    session, _ = b.deps.chats.get(slots[other][0].pseudonym, clock.now(), "zh-CN")
    start_other(session)
    await b_store.flush(b.bot_data, slots[other], 1)

    reads: list[str] = []

    def record(_conn, _cursor, statement: str, *_: object) -> None:  # type: ignore[no-untyped-def]
        flat = " ".join(statement.split()).upper()
        if flat.startswith("SELECT") and "FROM CONVERSATIONS" in flat and "SEALED" not in flat:
            reads.append(flat)

    event.listen(engine, "before_cursor_execute", record)
    try:
        applied = await asyncio.gather(*(store.load(a.bot_data, slots[c], 100 + i) for i, c in enumerate(chats)))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert applied == [False] * len(chats)
    assert 1 <= len(reads) <= 2, len(reads)  # not one each
    theirs = a.deps.chats.peek(slots[other][0].pseudonym)
    assert theirs is not None and theirs.draft is not None and theirs.draft.category == "rude"


async def test_a_row_written_twice_in_one_batch_keeps_the_later_state(processes: tuple[Process, Process]) -> None:
    """A staff member's conversation saved from two chats at once lands in one batch: the
    second write compares with the version the first left, and is not taken for another
    process's change."""
    a, _ = processes
    store = a.deps.conversations
    assert store is not None
    assert await a.handle(1, start)
    s = a.session()
    assert s is not None
    unit("Dingchang")(s)
    first = store._changes(a.bot_data, a.slots, 2, True)  # noqa: SLF001
    place(s)
    second = store._changes(a.bot_data, a.slots, 3, True)  # noqa: SLF001
    outcome = store._write([*first, *second])  # noqa: SLF001
    assert isinstance(outcome[0], int) and outcome[1] == outcome[0] + 1
    store._written([*first, *second], outcome)  # noqa: SLF001
    assert await a.handle(4, lambda s: None)
    s = a.session()
    assert s is not None and s.draft is not None and s.draft.place == "the county office"
