"""Calls that arrive together run together: one worker-thread run for a batch of callers.

Many chats' updates are handled at the same moment; each would otherwise make its own trip
to a worker thread and its own transaction (on SQLite its own hold of the write lock and
flush to disk), queued behind the others. Here a caller's item joins a queue; one task
takes what has queued (up to `limit`, by `weight`) and runs `run` on it in a worker thread,
which returns one result per item. Items that arrive while a batch runs go in the next, so
every batch starts after all its callers asked. Each caller gets its own result, or the
batch's exception.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

A = TypeVar("A")
R = TypeVar("R")


class Together(Generic[A, R]):
    def __init__(self, run: Callable[[list[A]], list[R]], limit: int,
                 weight: Callable[[A], int] = lambda _: 1, name: str | None = None) -> None:
        self._run, self._limit, self._weight, self._name = run, limit, weight, name
        self._queue: deque[tuple[A, asyncio.Future[R]]] = deque()
        self._task: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task running the batches (to cancel at shutdown), if one was started."""
        return self._task

    async def __call__(self, item: A) -> R:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, done))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain(), name=self._name)
        return await done

    async def _drain(self) -> None:
        while self._queue:
            batch: list[tuple[A, asyncio.Future[R]]] = []
            weight = 0
            while self._queue and weight < self._limit:
                batch.append(self._queue.popleft())
                weight += self._weight(batch[-1][0])
            try:
                results = await asyncio.to_thread(self._run, [item for item, _ in batch])
                if len(results) != len(batch):
                    raise ValueError(f"{len(results)} results for {len(batch)} items")
            except Exception as exc:  # noqa: BLE001 - each caller gets it (and keeps its item to retry)
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), result in zip(batch, results, strict=True):
                if not done.done():
                    done.set_result(result)
