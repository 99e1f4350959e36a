"""A bounded pool for the receipt-code hash (Argon2id, 64 MiB x 3 passes by default).

Why bounded: each hash holds `receipt_hash_memory_kib` of memory and a core for its whole
run. In the default thread pool (cores + 4 threads) 200 tipsters pressing Submit together
ran six hashes at once on two cores: 6 x 64 MiB of memory, every hash slower, and the event
loop starved of CPU. Here at most `security.receipt_hash_workers` hashes run at once (0, the
default: one per core), in threads of their own (argon2 releases the GIL), so memory is at
most workers x 64 MiB and the loop keeps its share of the CPU; the others wait their turn
in the queue, which costs them nothing but time.

The pool also caps glibc's malloc arenas at ARENAS for the whole process (unless the
operator set MALLOC_ARENA_MAX): every thread that allocates, the hashing ones and the
database worker threads alike, otherwise gets an arena of its own (up to eight per core)
that keeps what it freed. With 200 tipsters at the review that was 8 MiB of the 150 MiB
the bound leaves next to the hashes' 64 MiB each. (The hashes' own 64 MiB are mapped and
unmapped for each hash, whatever the arenas.)

The hashing threads also run at a lower priority (nice +HASH_NICE): with 200 tipsters
pressing Submit together, the hashes would otherwise take both cores from the event loop,
which then answers everyone late (its lag, and every reply, waits for a time slice). The
hashes still have every cycle the loop does not use.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from bot.security import Keyring

HASH_NICE = 10
ARENAS = 2
M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def lower_priority() -> None:
    """Make the calling thread nicer. On Linux a thread's nice value is its own, set through
    its thread id (setpriority's "process" is a thread there); elsewhere this does nothing."""
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        if tid != os.getpid():  # never the main thread: that would slow the whole process
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + HASH_NICE))


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """At most `arenas` malloc arenas in this process from now on; False where that cannot
    be set (not glibc) or the operator chose with MALLOC_ARENA_MAX."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # no mallopt: not glibc
        return False


class HashPool:
    def __init__(self, keyring: Keyring, workers: int = 0) -> None:
        limit_malloc_arenas()  # before the threads exist: see the module's docstring
        self.workers = workers or cores()
        self.keyring = keyring
        self._executor: ThreadPoolExecutor | None = None

    async def receipt_hash(self, code: str) -> str:
        """The receipt code's hash, computed off the event loop, at most `workers` at once."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="receipt-hash",
                                                initializer=lower_priority)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.keyring.receipt_hash, code)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
