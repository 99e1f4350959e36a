"""The deployment files: the systemd unit (verified by systemd-analyze where it exists)
and the container image's build steps (linted here: no container runtime is assumed)."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
UNIT = ROOT / "deploy" / "tipline.service"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "compose.yaml"
SECRET_NAMES = re.compile(r"TOKEN|PEPPER|KEY(?!_DIR$)|PASSWORD|SECRET", re.I)  # a key's directory is no secret
KEY_DIR = "/var/lib/tipline-keys"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def test_unit_restarts_on_failure_as_its_own_user_in_a_sandbox() -> None:
    service = _unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert service["User"] == "tipline" and service["Group"] == "tipline"
    assert service["ProtectSystem"] == "strict" and service["PrivateTmp"] == "yes"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectHome"] == "yes"
    assert service["StateDirectory"].split() == ["tipline", "tipline-keys"]
    assert service["WorkingDirectory"] == "/var/lib/tipline" and service["StateDirectoryMode"] == "0700"
    assert set(service["RestartPreventExitStatus"].split()) == {"2", "4"}  # config, refused token
    assert shlex.split(service["ExecStart"])[1:] == ["run"]
    environment = _unit_environment()
    assert not [name for name in environment if SECRET_NAMES.search(name)]
    assert environment["TIPLINE_JOURNAL_KEY_DIR"] == KEY_DIR  # beside the data directory, not in it


def _unit_environment() -> dict[str, str]:
    pairs = [line.split("=", 2)[1:] for line in UNIT.read_text(encoding="utf-8").splitlines()
             if line.startswith("Environment=")]
    return {name: value for name, value in pairs}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed on this machine (no systemd): the unit is "
                           "only checked by the parser test above")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # ExecStart must name an executable that exists: point it at this checkout's tipline.
    tipline = Path(sys.executable).parent / "tipline"
    if not tipline.exists():
        tipline = Path(shutil.which("tipline") or sys.executable)
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={tipline}", UNIT.read_text(encoding="utf-8"), flags=re.M)
    unit = tmp_path / "tipline.service"
    unit.write_text(text, encoding="utf-8")
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values and only warns: any output is a finding.
    findings = [line for line in (result.stdout + result.stderr).splitlines() if "tipline.service" in line]
    assert result.returncode == 0 and not findings, result.stdout + result.stderr


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "a continuation line at the end"
    return out


def test_dockerfile_steps() -> None:
    steps = _instructions()
    names = [s[0] for s in steps]
    assert names[0] == "FROM"
    assert re.fullmatch(r"python:3\.1[1-9]-slim", steps[0][1]), "a pinned Python 3.11+ slim base image"
    assert all(n in {"FROM", "ENV", "RUN", "WORKDIR", "COPY", "USER", "VOLUME", "ENTRYPOINT", "CMD", "ARG",
                     "EXPOSE", "LABEL", "HEALTHCHECK"} for n in names), names
    # Installed from pyproject.toml, which is copied in before the install.
    install = next(i for i, (n, a) in enumerate(steps) if n == "RUN" and re.search(r"pip install .*(\s|^)\.(\s|$)", a))
    copies = [a for n, a in steps[:install] if n == "COPY"]
    assert any("pyproject.toml" in a.split() for a in copies)
    for args in (a for n, a in steps if n == "COPY"):
        *sources, _dest = args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert source not in ("config.toml", ".") and not source.endswith(".env"), f"COPY {source}"
    # Runs as a user of its own, set after the last step that needs root.
    users = [i for i, (n, _) in enumerate(steps) if n == "USER"]
    assert users and users[-1] > max(i for i, (n, _) in enumerate(steps) if n == "RUN")
    assert steps[users[-1]][1] not in ("root", "0", "0:0")
    assert any(n == "RUN" and "useradd" in a and steps[users[-1]][1] in a for n, a in steps)
    # No secret baked in.
    for n, a in steps:
        if n in ("ENV", "ARG"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", a) or [a.split()[0]]:
                assert not SECRET_NAMES.search(name), f"{n} {name}: secrets come from the environment at run time"
    assert dict(steps)["ENTRYPOINT"] == '["tipline"]' and dict(steps)["CMD"] == '["run"]'
    # The journal keys: a directory (and volume) of their own, 0700, outside the data directory.
    env = " ".join(a for n, a in steps if n == "ENV")
    assert f"TIPLINE_JOURNAL_KEY_DIR={KEY_DIR}" in env
    assert f'"{KEY_DIR}"' in dict(steps)["VOLUME"] and '"/var/lib/tipline"' in dict(steps)["VOLUME"]
    assert any(n == "RUN" and f"-m 0700 {KEY_DIR}" in a for n, a in steps)
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {"config.toml", ".venv", "data", ".git"} <= set(ignored)


def test_compose_runs_tipline_with_postgresql() -> None:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = compose["services"]
    assert services["db"]["image"].startswith("postgres:")
    app = services["tipline"]
    assert app["build"]["context"] == ".." and (COMPOSE.parent / app["build"]["context"] / "Dockerfile").exists()
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert app["read_only"] is True and app["restart"] == "on-failure"
    assert "/healthz" in " ".join(app["healthcheck"]["test"])
    for service in services.values():  # secrets come from the env file, never from the compose file
        for name, value in (service.get("environment") or {}).items():
            assert not (SECRET_NAMES.search(name) and value), name
    mounts = dict(v.rsplit(":", 1)[::-1] for v in app["volumes"] if v.count(":") == 1)
    assert mounts[KEY_DIR] != mounts["/var/lib/tipline"] and mounts[KEY_DIR] in compose["volumes"]
    assert KEY_DIR not in " ".join(app.get("tmpfs") or [])  # pending updates' keys survive a restart
    example = (COMPOSE.parent / "tipline.env.example").read_text(encoding="utf-8")
    assert "TIPLINE_DATABASE_URL=postgresql+psycopg://tipline:PASSWORD@db:5432/tipline" in example
    assert re.search(r"^TIPLINE_BOT_TOKEN=$", example, re.M)
