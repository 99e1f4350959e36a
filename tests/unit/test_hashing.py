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


def test_the_pool_caps_the_malloc_arenas_of_the_process() -> None:
    """Eight threads allocating at once share at most ARENAS arenas once a HashPool exists
    (glibc's malloc_info counts them); without the cap they would get several of their own."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    from bot.hashing import ARENAS

    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        pytest.skip("glibc's arenas, left to their default")
    code = r"""
import ctypes, os, sys, tempfile, threading
from bot.hashing import HashPool
from tests.unit.test_hashing import CountingKeyring
libc = ctypes.CDLL(None)
if not hasattr(libc, "malloc_info"):
    print("no-glibc"); sys.exit()
HashPool(CountingKeyring(), workers=2)
barrier = threading.Barrier(8)
def work():
    held = [bytearray(64 * 1024) for _ in range(50)]  # malloc'd in this thread's arena
    barrier.wait()
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc.fopen.restype = ctypes.c_void_p
path = tempfile.mktemp()
fp = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(fp))
libc.fclose(ctypes.c_void_p(fp))
text = open(path).read(); os.unlink(path)
print(text.count("<heap nr="))
"""
    root = Path(__file__).resolve().parent.parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(root)}, check=True).stdout.strip()
    if out == "no-glibc":
        pytest.skip("not glibc")
    assert 1 <= int(out) <= ARENAS
