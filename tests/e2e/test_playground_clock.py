"""The playground's clock: a jump runs the timer jobs at once, at the new time, and the
offset survives a restart of the playground."""

from __future__ import annotations

import json
from pathlib import Path

from bot.playground.core import Playground
from bot.services.schedule import already_ran, due_periods
from tests.conftest import example_data


async def test_a_jump_runs_the_due_jobs_at_once_and_is_kept(database_url: str, tmp_path: Path) -> None:
    data = example_data()
    data["security"].update(receipt_hash_time_cost=1, receipt_hash_memory_kib=64)
    pg = Playground(data, data_dir=tmp_path / "pg", port=0, database_url=database_url)
    await pg.start()
    try:
        assert pg.runtime is not None and pg.config is not None
        before = pg.clock.now()
        delta = await pg.jump("summary")
        now = pg.clock.now()
        assert now - before >= delta
        local = now.astimezone(pg.config.campaign.tz)
        assert (local.hour, local.minute) == (18, 1)
        period = due_periods(pg.config, now)["summary"]
        # the scheduler's own tick comes every 30 s: the run is there because the jump ran it
        with pg.runtime.deps.sessions.begin() as session:
            assert already_ran(session, "summary", period)
    finally:
        await pg.stop()
    state = json.loads((tmp_path / "pg" / "state.json").read_text(encoding="utf-8"))
    assert state["offset_seconds"] >= delta.total_seconds() - 1
    again = Playground(data, data_dir=tmp_path / "pg", port=0, database_url=database_url)
    assert again.clock.offset.total_seconds() == state["offset_seconds"]
