"""bot/together.py: calls that arrive together run together, each caller gets its own result."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bot.together import Together


async def test_callers_arriving_together_share_one_run_and_get_their_own_results() -> None:
    runs: list[list[int]] = []
    together: Together[int, int] = Together(lambda items: runs.append(list(items)) or [i * 10 for i in items], 100)
    results = await asyncio.gather(*(together(i) for i in range(20)))
    assert results == [i * 10 for i in range(20)]
    assert runs == [list(range(20))]  # one run, in the callers' order


async def test_a_batch_is_limited_by_weight_and_later_callers_wait_for_the_next() -> None:
    runs: list[list[list[int]]] = []
    release = threading.Event()

    def run(items: list[list[int]]) -> list[int]:
        runs.append(items)
        if len(runs) == 1:
            release.wait(5)  # the first batch is running while more callers arrive
        return [sum(i) for i in items]

    together: Together[list[int], int] = Together(run, 4, weight=len)
    first = asyncio.ensure_future(together([1, 2, 3]))
    await asyncio.sleep(0.05)  # the first batch has started
    later = [asyncio.ensure_future(together([i, i])) for i in range(4)]
    await asyncio.sleep(0.05)
    release.set()
    assert await first == 6
    assert [await f for f in later] == [0, 2, 4, 6]
    assert runs[0] == [[1, 2, 3]]
    # weight 2 each, limit 4: two batches of two (a batch is closed once it weighs 4 or more)
    assert runs[1:] == [[[0, 0], [1, 1]], [[2, 2], [3, 3]]]


async def test_an_error_reaches_every_caller_of_its_batch_and_the_next_batch_runs() -> None:
    calls = 0

    def run(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database away")
        return items

    together: Together[int, int] = Together(run, 100)
    failed = await asyncio.gather(together(1), together(2), return_exceptions=True)
    assert [type(e) for e in failed] == [RuntimeError, RuntimeError]
    assert await together(3) == 3


@pytest.mark.parametrize("n", [1, 3])
async def test_results_must_match_the_items(n: int) -> None:
    together: Together[int, int] = Together(lambda items: [0] * (len(items) + 1), 100)
    outcomes = await asyncio.gather(*(together(i) for i in range(n)), return_exceptions=True)
    # a run that lost track of its callers: each of them hears of it, none gets a wrong result
    assert [type(o) for o in outcomes] == [ValueError] * n
