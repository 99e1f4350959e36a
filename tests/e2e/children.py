"""A tipline process started by a test (`python -m tests.e2e.<module> ...`), which prints
one line once it is ready; the test kills it (SIGKILL), stops it (SIGTERM) or pauses it
(SIGSTOP) as faults happen in production."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from tests.conftest import ROOT


class ChildProcess:
    proc: asyncio.subprocess.Process | None = None

    async def spawn(self, module: str, *args: str, quiet: bool = False) -> list[str]:
        """Start `python -m module args...` and return its first line (its readiness), split."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args, cwd=str(ROOT), env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL if quiet else None)
        assert self.proc.stdout is not None
        return (await asyncio.wait_for(self.proc.stdout.readline(), 60)).decode().split()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    def pause(self, resume: bool = False) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT if resume else signal.SIGSTOP)

    async def stop(self) -> None:
        """A graceful stop; a process that does not stop within 30 s is killed."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                await self.kill()
