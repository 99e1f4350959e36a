"""The admin CLI, run as the office would run it, against a real database."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from tests.conftest import EXAMPLE, runnable_config_file


@pytest.fixture
def config_file(tmp_path: Path, database_url: str) -> Path:
    return runnable_config_file(tmp_path, database_url)


def test_invite_then_teams_lists_the_joined_lead(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config_file), "invite", "--role", "lead", "--team", "3"]) == 0
    out, err = capsys.readouterr()
    code = out.strip()
    assert len(code) == 14 and code.count("-") == 2
    assert "team 3" in err and "/join" in err

    from bot.app import build_deps
    from bot.config import load_config
    from bot.services.staff import JoinStatus, join

    deps, engine = build_deps(load_config(config_file, env={}))
    with deps.sessions.begin() as session:
        assert join(session, deps, code, 424242, "Zhao Lead", "zh-CN", deps.clock.now()).status is JoinStatus.JOINED
    engine.dispose()

    assert main(["--config", str(config_file), "teams", "--en"]) == 0
    out, _ = capsys.readouterr()
    team3 = out.split("Inspection Team 3")[1].split("Inspection Team 4")[0]
    assert "lead   Zhao Lead  424242" in team3


def test_invite_checks_its_arguments(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config_file), "invite", "--role", "lead", "--team", "9"]) == 2
    assert "--team 9" in capsys.readouterr().err
    assert main(["--config", str(config_file), "invite", "--group"]) == 2
    assert main(["--config", str(config_file), "invite", "--role", "member"]) == 2


def test_broken_config_is_reported_with_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text(EXAMPLE.read_text(encoding="utf-8").replace("fallback_team = 8", "fallback_team = 12"),
                   encoding="utf-8")
    assert main(["--config", str(bad), "check-config"]) == 2
    assert "routing.fallback_team" in capsys.readouterr().err


def test_init_writes_a_config_with_fresh_secrets_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "config.toml"
    assert main(["--config", str(target), "init"]) == 0
    first = target.read_text(encoding="utf-8")
    assert 'pepper = ""' not in first and 'data_key = ""' not in first
    assert main(["--config", str(target), "init"]) == 1  # never overwrites
    assert target.read_text(encoding="utf-8") == first
    assert main(["--config", str(target), "check-config"]) == 0


def test_run_without_a_token_says_so(config_file: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIPLINE_BOT_TOKEN", raising=False)
    assert main(["--config", str(config_file), "run"]) == 2
    assert "telegram.token" in capsys.readouterr().err


def test_outbox_and_migrate(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config_file), "migrate"]) == 0
    assert main(["--config", str(config_file), "outbox"]) == 0
    assert "0 messages" in capsys.readouterr().out


def test_official_and_office_group_invites_then_broadcast_status_and_summary(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.app import build_deps
    from bot.config import load_config
    from bot.services import schedule
    from bot.services.office import office_targets
    from bot.services.staff import JoinStatus, bind_group, join
    from tests.officials_data import local

    assert main(["--config", str(config_file), "invite", "--role", "official"]) == 0
    out, err = capsys.readouterr()
    official_code = out.strip()
    assert "registers a official" in err or "official" in err
    assert main(["--config", str(config_file), "invite", "--group", "--office"]) == 0
    out, err = capsys.readouterr()
    group_code = out.strip()
    assert "office" in err
    assert main(["--config", str(config_file), "invite", "--office"]) == 2
    capsys.readouterr()
    assert main(["--config", str(config_file), "broadcast-status"]) == 0
    assert "no broadcasts yet" in capsys.readouterr().out

    deps, engine = build_deps(load_config(config_file, env={}))
    with deps.sessions.begin() as session:
        joined = join(session, deps, official_code, 515151, "Official Sun", "zh-CN", deps.clock.now())
        assert (joined.status, joined.role) == (JoinStatus.JOINED, "official")
        assert bind_group(session, deps, group_code, -100777, "问责办", deps.clock.now()).team_number == 0
        assert [t.chat_id for t in office_targets(session, deps)] == [-100777]
    assert schedule.run_job(deps, "summary", "2026-11-20", local(2026, 11, 20, 18, 1)) == "summary to 1, digest to 0"
    engine.dispose()
    assert main(["--config", str(config_file), "broadcast-status"]) == 0
    out = capsys.readouterr().out
    assert "summary" in out and "2026-11-20" in out and "delivered 0 of 1, 0 failed, 1 waiting  [sending]" in out
    assert main(["--config", str(config_file), "summary", "--date", "2026-11-20", "--en"]) == 0
    out = capsys.readouterr().out
    assert "Daily summary 2026-11-20" in out and "<b>" not in out


def test_teams_counts_group_members_and_warns_of_strangers(config_file: Path, capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    from bot.app import build_deps
    from bot.config import load_config
    from bot.services.staff import bind_group, create_invite, join
    from tests.fakebot import FakeBotAPI

    server = FakeBotAPI("123456:TEST-TOKEN", global_per_second=None, per_chat_per_second=None, group_per_minute=None)
    server.start_in_thread()
    try:
        counts = {-100_111: 5, -100_222: 2}
        server.register_method("getChatMemberCount", lambda params, files: counts[int(params["chat_id"])])
        server.register_method("getChatMember", lambda params, files: {
            "status": "left" if int(params["user_id"]) == 303 else "member",
            "user": {"id": int(params["user_id"]), "is_bot": False, "first_name": "x"}})
        text = config_file.read_text(encoding="utf-8").replace('token = ""', 'token = "123456:TEST-TOKEN"', 1)
        text = text.replace('base_url = "https://api.telegram.org/bot"', f'base_url = "{server.base_url}"', 1)
        config_file.write_text(text, encoding="utf-8")
        assert main(["--config", str(config_file), "migrate"]) == 0
        deps, engine = build_deps(load_config(config_file, env={}))
        with deps.sessions.begin() as session:
            now = deps.clock.now()
            for uid, role, team in ((301, "lead", 1), (302, "member", 1), (303, "member", 1), (401, "lead", 2)):
                code = create_invite(session, deps.keyring, now, kind="person", role=role, team_number=team)
                join(session, deps, code, uid, f"Staff {uid}", "en", now)
            for chat, team in ((-100_111, 1), (-100_222, 2)):
                code = create_invite(session, deps.keyring, now, kind="group", role=None, team_number=team)
                bind_group(session, deps, code, chat, f"Team {team} group", now)
        engine.dispose()
        assert main(["--config", str(config_file), "teams", "--en"]) == 0
        out = capsys.readouterr().out
    finally:
        server.stop_thread()
    team1 = out.split("Inspection Team 1")[1].split("Inspection Team 2")[0]
    team2 = out.split("Inspection Team 2")[1].split("Inspection Team 3")[0]
    # 5 members: the bot, 2 of the 3 registered staff (303 is not in the group), 2 others.
    assert "5 members: the bot, 2 registered staff, 2 others" in team1 and "WARNING: 2 member(s)" in team1
    assert 'delivery = "leads"' in team1
    assert "2 members: the bot, 1 registered staff, 0 others" in team2 and "WARNING" not in team2
