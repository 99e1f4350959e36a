"""Liveness signals: the long-running loops say "still here", /healthz reads it.

A loop calls `beat(name)` each time round (the poller after each getUpdates, the outbox
sender each pass, the scheduler on each tick) and its task is registered once with
`watch(name, task)`. `status(name)` tells whether the task is still running and how long
ago it last beat. Process-wide and tiny on purpose: any loop can feed it with one line,
whoever rewrites the loop.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

_beats: dict[str, float] = {}
_tasks: dict[str, asyncio.Task[object]] = {}


@dataclass(frozen=True, slots=True)
class Liveness:
    watched: bool  # a task was registered under this name
    running: bool  # ... and it has not ended
    age: float | None  # seconds since the last beat; None: never


def beat(name: str) -> None:
    _beats[name] = time.monotonic()


def watch(name: str, task: asyncio.Task[object] | None) -> None:
    """Register the task that runs loop `name` (None forgets it)."""
    if task is None:
        _tasks.pop(name, None)
    else:
        _tasks[name] = task


def status(name: str) -> Liveness:
    task = _tasks.get(name)
    last = _beats.get(name)
    return Liveness(task is not None, task is not None and not task.done(),
                    None if last is None else time.monotonic() - last)


def reset() -> None:
    """Forget every beat and task (a new runtime in the same process, tests)."""
    _beats.clear()
    _tasks.clear()
