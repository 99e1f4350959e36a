"""The receipt hash's pool: at most `workers` hashes at once, off the event loop, the same
digest as the keyring's."""

from __future__ import annotations

import asyncio
import threading
import time

from bot.hashing import HashPool, cores
from bot.security import Keyring

PEPPER = "p" * 40


class CountingKeyring(Keyring):
    def __init__(self) -> None:
        super().__init__(PEPPER, "YmVuY2gtZGF0YS1rZXktZm9yLXRpcGxpbmUtYmVuY2g=", time_cost=1, memory_kib=64)
        self.running = self.peak = 0
        self.lock = threading.Lock()
        self.threads: set[str] = set()

    def receipt_hash(self, code: str) -> str:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.threads.add(threading.current_thread().name)
        time.sleep(0.02)
        try:
            return super().receipt_hash(code)
        finally:
            with self.lock:
                self.running -= 1


def test_at_most_workers_hashes_at_once_off_the_loop() -> None:
    keyring = CountingKeyring()
    pool = HashPool(keyring, workers=2)

    async def main() -> list[str]:
        return await asyncio.gather(*(pool.receipt_hash(f"{i:016d}") for i in range(30)))

    digests = asyncio.run(main())
    pool.close()
    assert keyring.peak == 2
    assert threading.main_thread().name not in keyring.threads
    assert all(name.startswith("receipt-hash") for name in keyring.threads)
    assert digests == [Keyring.receipt_hash(keyring, f"{i:016d}") for i in range(30)]


def test_default_is_one_worker_per_core() -> None:
    assert HashPool(CountingKeyring()).workers == cores() >= 1
    assert HashPool(CountingKeyring(), workers=3).workers == 3


def test_hashes_run_at_a_lower_priority_than_the_event_loop() -> None:
    import os
    import sys

    import pytest

    if not sys.platform.startswith("linux"):
        pytest.skip("per-thread nice values are Linux's")

    class NiceKeyring(CountingKeyring):
        def receipt_hash(self, code: str) -> str:  # the thread's own nice value, instead of a digest
            return str(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    pool = HashPool(NiceKeyring(), workers=2)
    loop_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    values = asyncio.run(pool.receipt_hash("0" * 16))
    pool.close()
    assert int(values) == min(19, loop_nice + 10)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == loop_nice  # the loop's is unchanged
