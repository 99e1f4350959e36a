"""The CLI refuses bad arguments with status 2, naming the option, and picks the period
that ended last for a summary without --date."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from bot.clock import FakeClock
from tests.integration.test_cli import config_file  # noqa: F401  (fixture)
from tests.officials_data import local


def _exit_status(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0)


def test_summary_with_a_bad_date_exits_2_naming_the_option(config_file: Path,  # noqa: F811
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_status(["--config", str(config_file), "summary", "--date", "foo"]) == 2
    err = capsys.readouterr().err
    assert "--date" in err and "'foo'" in err and "Traceback" not in err


def test_invite_with_negative_days_exits_2_and_prints_no_code(config_file: Path,  # noqa: F811
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    for days in ("-3", "0", "x"):
        assert _exit_status(["--config", str(config_file), "invite", "--role", "office", "--days", days]) == 2
        out, err = capsys.readouterr()
        assert out == "" and "--days" in err


@pytest.mark.parametrize(("hour", "period"), [(19, "2026-11-20"), (23, "2026-11-20"), (17, "2026-11-19")])
def test_summary_without_a_date_shows_the_period_that_ended_last(
    config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,  # noqa: F811
    hour: int, period: str,
) -> None:
    monkeypatch.setattr("bot.app.SystemClock", lambda: FakeClock(local(2026, 11, 20, hour, 30)))
    assert main(["--config", str(config_file), "summary", "--en"]) == 0
    out = capsys.readouterr().out
    assert f"Daily summary {period}" in out
