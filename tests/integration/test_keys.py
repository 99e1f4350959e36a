"""Keys handled like keys: config.toml private from its first byte, every key generated,
secrets never shown, and rotate-keys leaving every row readable with the new key only."""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Engine, select

from bot.cli import main
from bot.config import load_config
from bot.deps import Deps
from bot.domain.lifecycle import CaseAction, Outcome
from bot.drafts import EvidenceItem
from bot.services import audit, followup, intake, staff, workflow
from bot.services.intake import NewTip
from storage.db import make_engine, upgrade
from storage.models import Base
from storage.models_officials import Bulletin
from tests.conftest import EXAMPLE

from .conftest import add_lead

_WATCH: dict[str, Any] = {"dir": None, "events": []}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    directory = _WATCH["dir"]
    if directory is None or event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.fsdecode(args[0])
    if path.startswith(directory):
        _WATCH["events"].append((path, args[1], args[2]))


sys.addaudithook(_audit)  # audit hooks cannot be removed: it watches only while "dir" is set


@pytest.fixture
def watched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Every open of a file in tmp_path, and the mode every os.open asks for; umask 0, so
    that only the mode asked for protects the file."""
    modes: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, *a: Any, **kw: Any) -> int:
        fd = real_open(path, flags, mode, *a, **kw)
        if os.fsdecode(path).startswith(str(tmp_path)) and flags & os.O_CREAT:
            # Right after creation, before a byte is written: nobody else may read it.
            created = os.fstat(fd).st_mode
            modes.append((os.fsdecode(path), flags, stat.S_IMODE(created)))
        return fd

    monkeypatch.setattr(os, "open", spy)
    old = os.umask(0)
    _WATCH["dir"], _WATCH["events"] = str(tmp_path), []
    try:
        yield modes
    finally:
        _WATCH["dir"] = None
        os.umask(old)


def _writes(tmp_path: Path) -> list[tuple[str, Any, Any]]:
    return [e for e in _WATCH["events"] if not (isinstance(e[2], int) and e[2] & (os.O_WRONLY | os.O_RDWR) == 0)]


def test_init_creates_a_private_config_with_every_key(tmp_path: Path, watched: Any) -> None:
    target = tmp_path / "config.toml"
    assert main(["--config", str(target), "init"]) == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    creations = watched
    assert creations and all(mode == 0o600 and flags & os.O_EXCL for _, flags, mode in creations), creations
    # Nothing else opened a file there for writing (e.g. a write_text followed by a chmod).
    writers = [e for e in _writes(tmp_path) if e[1] is not None]  # builtins.open passes a mode string
    assert not writers, writers
    config = load_config(target, env={})
    sec = config.security
    assert len(sec.pepper.get_secret_value()) >= 32
    Fernet(sec.data_key.get_secret_value())
    Fernet(sec.contact_key.get_secret_value())
    assert sec.data_key.get_secret_value() != sec.contact_key.get_secret_value()


def test_keygen_write_fills_the_keys_privately(tmp_path: Path, watched: Any, capsys: pytest.CaptureFixture[str]
                                               ) -> None:
    target = tmp_path / "config.toml"
    target.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")  # as copied by hand
    target.chmod(0o644)
    _WATCH["events"].clear()
    watched.clear()
    assert main(["--config", str(target), "keygen", "--write"]) == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert watched and all(mode == 0o600 for _, _, mode in watched)
    assert not [e for e in _writes(tmp_path) if e[1] is not None]
    sec = load_config(target, env={}).security
    assert sec.pepper.get_secret_value() and sec.contact_key.get_secret_value()
    assert main(["keygen"]) == 0
    printed = capsys.readouterr().out
    assert "pepper" in printed and "data_key" in printed and "contact_key" in printed


def test_no_secret_in_a_repr_a_log_or_a_failure(config_file_secrets: tuple[Path, list[str]],
                                                caplog: pytest.LogCaptureFixture) -> None:
    path, secrets = config_file_secrets
    caplog.set_level(logging.DEBUG)
    config = load_config(path, env={})
    from bot.app import build_deps

    deps, engine = build_deps(config)
    try:
        logging.getLogger("tipline.test").info("config %s %r security %s", config, config, config.security)
        shown = [repr(config), str(config), repr(config.security), str(config.telegram), repr(deps), repr(deps.keyring),
                 str(config.model_dump()), caplog.text]
        with pytest.raises(AssertionError) as failure:
            assert config.security == config.telegram  # a failing test prints both sides
        shown.append(str(failure.value))
    finally:
        engine.dispose()
    for secret in secrets:
        assert not [s for s in shown if secret in s], "a secret is shown"


@pytest.fixture
def config_file_secrets(tmp_path: Path) -> tuple[Path, list[str]]:
    target = tmp_path / "config.toml"
    assert main(["--config", str(target), "init"]) == 0
    text = target.read_text(encoding="utf-8").replace('token = ""', 'token = "123456:SECRET-TOKEN-abcdef"', 1)
    text = text.replace('url = "sqlite:///data/tipline.sqlite3"', f'url = "sqlite:///{tmp_path / "t.sqlite3"}"', 1)
    target.write_text(text, encoding="utf-8")
    sec = load_config(target, env={}).security
    return target, ["123456:SECRET-TOKEN-abcdef", *(_plain(v) for v in (sec.pepper, sec.data_key, sec.contact_key))]


def _plain(value: Any) -> str:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)


def _fill(deps: Deps) -> None:
    """Content in the encrypted columns, by the services that write them."""
    now = deps.clock.now()
    with deps.sessions.begin() as session:
        add_lead(session, deps, 8, 801, "Lead")
        add_lead(session, deps, 8, 802, "Office", role="office")
        tip_id = intake.submit(session, deps, NewTip("absence", "other", "Some office", "Hall 2", "Nobody at the desk",
                                                     evidence=(EvidenceItem("photo", "PHOTO-1", "a caption"),)),
                               deps.keyring.receipt_hash("1234123412341234"), now)
    with deps.sessions.begin() as session:
        followup.add_information(session, deps, tip_id, ["more"], [EvidenceItem("photo", "PHOTO-2")], now)
        staff.acknowledge(session, deps, tip_id, 801, now)
    with deps.sessions.begin() as session:
        allowed = workflow.authorize(session, 801, tip_id, CaseAction.ASK)
        assert isinstance(allowed, workflow.Allowed)
        workflow.ask(session, deps, allowed, "What time?", now)
    with deps.sessions.begin() as session:
        allowed = workflow.authorize(session, 802, tip_id, CaseAction.REASSIGN)
        assert isinstance(allowed, workflow.Allowed), allowed
        workflow.reassign(session, deps, allowed, 1, "closer to the unit", now)
        session.add(Bulletin(number=1, status="draft", period="2026-03-01", breach_ids="[]", created_at=now,
                             issued_on="2026-03-02"))
    with deps.sessions.begin() as session:
        from bot.services import bulletins

        bulletins.set_note(session, deps, 1, "a note")
        tip2 = intake.submit(session, deps, NewTip("absence", "other", None, "Hall 3", "Again nobody"),
                             deps.keyring.receipt_hash("1234123412349999"), now)
    with deps.sessions.begin() as session:
        staff.acknowledge(session, deps, tip2, 802, now)
    with deps.sessions.begin() as session:
        allowed = workflow.authorize(session, 802, tip2, CaseAction.RECORD_OUTCOME)
        assert isinstance(allowed, workflow.Allowed), allowed
        workflow.record_outcome(session, deps, allowed, workflow.OutcomeInput(
            Outcome.TRANSFERRED, "not ours", transferred_to="the county bureau"), now)
        audit.record(session, staff_id=None, tip_id=tip2, action="note", detail="cli", quote="q",
                     keyring=deps.keyring, at=now)


def test_rotate_keys_leaves_every_row_readable_with_the_new_key_only(
        tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.app import build_deps
    from bot.clock import FakeClock
    from tests.conftest import make_config

    from .conftest import START

    path = tmp_path / "config.toml"
    assert main(["--config", str(path), "init"]) == 0
    text = path.read_text(encoding="utf-8").replace('url = "sqlite:///data/tipline.sqlite3"', f'url = "{database_url}"')
    path.write_text(text.replace("receipt_hash_memory_kib = 65536", "receipt_hash_memory_kib = 64"), encoding="utf-8")
    config = load_config(path, env={})
    old_key = config.security.data_key.get_secret_value()
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        deps, _ = build_deps(config, FakeClock(START), engine)
        _fill(deps)
        filled = _columns_with_rows(engine)
        assert {"tips.text_enc", "tips.place_enc", "tips.unit_other_enc", "evidence.file_ref_enc",
                "evidence.caption_enc", "tip_additions.text_enc", "questions.text_enc", "tip_events.detail_enc",
                "outbox.payload_enc", "audit_log.quote_enc", "bulletins.note_enc",
                "outcomes.transferred_to_enc", "outcomes.finding_enc"} <= set(filled), filled
        assert main(["--config", str(path), "rotate-keys"]) == 0
        assert "rows" in capsys.readouterr().err  # the progress bar
        new_key = load_config(path, env={}).security.data_key.get_secret_value()
        assert "," not in new_key and new_key != old_key
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        new, old = Fernet(new_key), Fernet(old_key)
        for name, tokens in _columns_with_rows(engine).items():
            for token in tokens:
                new.decrypt(token.encode())
                with pytest.raises(InvalidToken):
                    old.decrypt(token.encode())
        assert sum(len(v) for v in _columns_with_rows(engine).values()) == sum(len(v) for v in filled.values())
    finally:
        engine.dispose()


def _columns_with_rows(engine: Engine) -> dict[str, list[str]]:
    """Every `*_enc` column of the schema (found here, not taken from rotate-keys' list)
    but the contact key's, with its values."""
    out: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for column in table.columns:
                if not column.name.endswith("_enc") or (table.name, column.name) == ("notify_contacts", "chat_enc"):
                    continue
                values = [v for (v,) in conn.execute(select(column).where(column.is_not(None)))]
                if values:
                    out[f"{table.name}.{column.name}"] = values
    return out
