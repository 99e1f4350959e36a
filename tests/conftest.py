"""Shared fixtures: a real database per test (SQLite file, or a fresh PostgreSQL schema when
TIPLINE_TEST_DATABASE_URL points at a server), migrated by Alembic; test configuration."""

from __future__ import annotations

import os
import secrets
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from bot.config import Config, parse_config
from storage.db import make_engine, upgrade

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"
TEST_PEPPER = "test-pepper-" + "p" * 40
TEST_DATA_KEY = Fernet.generate_key().decode()


def example_data() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def example_config_file(directory: Path, edits: dict[str, str]) -> Path:
    """config.toml in `directory`: the example with each `old` (which must be there) made `new` once."""
    text = EXAMPLE.read_text(encoding="utf-8")
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    path = directory / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def runnable_config_file(directory: Path, database_url: str) -> Path:
    """The example as a file `tipline` runs with: test secrets, the database, a cheap receipt hash."""
    return example_config_file(directory, {
        'pepper = ""': f'pepper = "{TEST_PEPPER}"',
        'data_key = ""': f'data_key = "{TEST_DATA_KEY}"',
        'url = "sqlite:///data/tipline.sqlite3"': f'url = "{database_url}"',
        "receipt_hash_memory_kib = 65536": "receipt_hash_memory_kib = 64"})


def make_config(database_url: str = "sqlite://", **sections: dict[str, Any]) -> Config:
    """The example configuration with test secrets, a cheap receipt hash and overrides."""
    data = example_data()
    data["telegram"]["token"] = "123456:TEST-TOKEN"
    data["database"]["url"] = database_url
    # Journal keys never in the working directory: a directory of their own per configuration.
    data["journal"]["key_dir"] = tempfile.mkdtemp(prefix="tipline-keys-")
    data["security"].update(
        pepper=TEST_PEPPER,
        data_key=TEST_DATA_KEY,
        receipt_hash_time_cost=1,
        receipt_hash_memory_kib=64,
    )
    for section, values in sections.items():
        if isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    return parse_config(data, source="test", env={})


def postgres_url() -> str | None:
    url = os.environ.get("TIPLINE_TEST_DATABASE_URL", "")
    return url if url.startswith("postgresql") else None


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for one test."""
    pg = postgres_url()
    if pg is None:
        yield f"sqlite:///{tmp_path / 'tipline.sqlite3'}"
        return
    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(pg).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def config(database_url: str) -> Config:
    return make_config(database_url)
