"""Staff lifecycle from the shell: `tipline staff ...` and `tipline invite --list|--revoke`,
and a personal invite code posted in a group, which is burned."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from bot.app import build_deps
from bot.cli import main
from bot.config import load_config
from bot.services.staff import JoinStatus, bind_group, create_invite, join
from storage.models import AuditEntry, Invite, Staff
from tests.integration.test_cli import config_file  # noqa: F401  (fixture)


def _deps(path: Path):  # type: ignore[no-untyped-def]
    return build_deps(load_config(path, env={}))


def _join(path: Path, user_id: int, name: str, role: str, team: int | None) -> None:
    deps, engine = _deps(path)
    with deps.sessions.begin() as session:
        code = create_invite(session, deps.keyring, deps.clock.now(), kind="person", role=role, team_number=team)
        assert join(session, deps, code, user_id, name, "en", deps.clock.now()).status is JoinStatus.JOINED
    engine.dispose()


def _staff(path: Path, user_id: int) -> Staff:
    deps, engine = _deps(path)
    with deps.sessions.begin() as session:
        s = session.scalars(select(Staff).where(Staff.telegram_user_id == user_id)).one()
    engine.dispose()
    return s


def test_staff_commands_change_and_audit(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    cfg = ["--config", str(config_file)]
    assert main([*cfg, "migrate"]) == 0
    _join(config_file, 610001, "Zhao Lead", "lead", 3)
    _join(config_file, 610002, "Qian Member", "member", 3)
    lead, member = _staff(config_file, 610001), _staff(config_file, 610002)
    capsys.readouterr()

    assert main([*cfg, "staff", "list"]) == 0
    out = capsys.readouterr().out
    assert f"#{lead.id}" in out and "Zhao Lead" in out and "active" in out

    assert main([*cfg, "staff", "deactivate", f"#{lead.id}"]) == 0
    assert "deactivate done" in capsys.readouterr().out
    assert _staff(config_file, 610001).active is False
    assert main([*cfg, "staff", "deactivate", str(lead.id)]) == 0
    assert "nothing changed" in capsys.readouterr().out
    assert main([*cfg, "staff", "list"]) == 0
    assert "Zhao Lead" not in capsys.readouterr().out  # deactivated: only with --all
    assert main([*cfg, "staff", "list", "--all"]) == 0
    assert "deactivated" in capsys.readouterr().out

    assert main([*cfg, "staff", "reactivate", str(lead.id)]) == 0
    assert _staff(config_file, 610001).active is True
    assert main([*cfg, "staff", "set-role", str(member.id), "lead"]) == 0
    assert _staff(config_file, 610002).role == "lead"
    assert main([*cfg, "staff", "move", str(member.id), "--team", "5"]) == 0
    assert _staff(config_file, 610002).team_number == 5
    assert main([*cfg, "staff", "set-role", str(member.id), "office"]) == 0
    assert _staff(config_file, 610002).team_number is None
    capsys.readouterr()
    assert main([*cfg, "staff", "move", str(member.id), "--team", "2"]) == 2  # the office has no team
    assert "only leads and members" in capsys.readouterr().err
    assert main([*cfg, "staff", "move", str(lead.id), "--team", "42"]) == 2
    assert "no team 42" in capsys.readouterr().err
    assert main([*cfg, "staff", "deactivate", "999"]) == 1

    deps, engine = _deps(config_file)
    with deps.sessions.begin() as session:
        actions = [e.action for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
        details = [e.detail or "" for e in session.scalars(select(AuditEntry).where(AuditEntry.action.like("staff_%")))]
    engine.dispose()
    assert actions[-5:] == ["staff_deactivated", "staff_reactivated", "staff_role_set", "staff_moved",
                            "staff_role_set"]
    assert all(d.startswith("cli") for d in details)
    assert main([*cfg, "staff", "log"]) == 0
    assert "staff_moved" in capsys.readouterr().out


def test_invites_are_listed_and_revoked(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    cfg = ["--config", str(config_file)]
    assert main([*cfg, "invite", "--role", "lead", "--team", "2"]) == 0
    code = capsys.readouterr().out.strip()
    assert main([*cfg, "invite", "--role", "office"]) == 0
    capsys.readouterr()
    assert main([*cfg, "invite", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "lead of team 2" in listed and "office" in listed and code not in listed  # codes are not stored

    assert main([*cfg, "invite", "--revoke", code.lower()]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main([*cfg, "invite", "--revoke", "#2"]) == 0
    assert main([*cfg, "invite", "--revoke", "#2"]) == 0
    assert "nothing changed" in capsys.readouterr().out
    assert main([*cfg, "invite", "--list"]) == 0
    assert "no open invite codes" in capsys.readouterr().out
    assert main([*cfg, "invite", "--revoke", "NOPE-NOPE-NOPE"]) == 1

    deps, engine = _deps(config_file)
    with deps.sessions.begin() as session:
        result = join(session, deps, code, 620001, "Too Late", "en", deps.clock.now())
        revoked = session.scalars(select(AuditEntry).where(AuditEntry.action == "invite_revoked")).all()
    engine.dispose()
    assert result.status is JoinStatus.INVALID
    assert len(revoked) == 2


def test_personal_code_posted_in_a_group_is_burned(config_file: Path) -> None:  # noqa: F811
    assert main(["--config", str(config_file), "migrate"]) == 0
    deps, engine = _deps(config_file)
    with deps.sessions.begin() as session:
        code = create_invite(session, deps.keyring, deps.clock.now(), kind="person", role="lead", team_number=1)
    with deps.sessions.begin() as session:
        burned = bind_group(session, deps, code, -100123, "Team 1", deps.clock.now(), by_user_id=630001)
    assert burned.status is JoinStatus.BURNED
    with deps.sessions.begin() as session:  # the rightful owner cannot use it either
        assert join(session, deps, code, 630002, "Owner", "en", deps.clock.now()).status is JoinStatus.INVALID
        invite = session.scalars(select(Invite)).one()
        assert invite.revoked_at is not None and invite.used_at is None
        assert session.scalars(select(AuditEntry.action)).all() == ["invite_burned"]
    engine.dispose()
