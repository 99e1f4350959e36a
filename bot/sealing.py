"""Ephemeral sealing: data encrypted under keys that rotate and are then destroyed.

Some data must be kept for a while and then be gone for good, even from places an UPDATE
or DELETE does not reach (SQLite's -wal file and free pages, PostgreSQL's dead tuples,
WAL segments, archives and backups). Such data is sealed under a short-lived key kept in a
directory of its own (never in the database, never in config.toml). Once no live token
needs a key, the key file is overwritten, unlinked and the directory synced: every copy of
every token sealed under it, wherever it lies, is then ciphertext nobody can open.

- ``seal(data)`` encrypts under the current key (one per rotation period) and returns a
  token that names its key: ``<key id>.<Fernet token>``.
- ``open(token)`` decrypts, or raises ``KeyGone`` when the key was destroyed.
- A key is "in use until" the end of its period, or later if a caller says so
  (``hold(key_id, until)``, e.g. a draft that lives for an hour); ``destroy_unneeded(now,
  needed)`` destroys every key past its time that is not in ``needed`` (the key ids the
  caller's stored tokens still use).
- A token still needed after its key's time (``expired(now)``) is re-sealed under the
  current key (bot/resealing.py) before its old key is destroyed: a token that outlives
  its period never keeps alive the key that also opens every other token of that period.

Files: ``<key id>.key`` (the Fernet key, 0600, written once) and ``<key id>.until`` (an
ISO time, rewritten by ``hold``), in a directory created 0700. Several processes may
share the directory: key ids carry a random part, and a key is destroyed only once its
time is over for everyone (the ``.until`` file is shared).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

KEY_SUFFIX = ".key"
# A key outlives its time by this much before it may be destroyed: a token sealed at the
# last moment of a period is stored a moment later, and another process may be looking.
GRACE = timedelta(minutes=2)
UNTIL_SUFFIX = ".until"


class SealError(Exception):
    """A token could not be opened."""


class KeyGone(SealError):
    """The token's key has been destroyed (or never existed here)."""


def key_id_of(token: str) -> str:
    key_id, sep, _ = token.partition(".")
    if not sep or not key_id:
        raise SealError("not a sealed token")
    return key_id


class EphemeralKeys:
    def __init__(self, directory: str | Path, rotate: timedelta) -> None:
        if rotate <= timedelta(0):
            raise ValueError("the rotation period must be positive")
        self.directory = Path(directory)
        self.rotate = rotate
        self._lock = threading.Lock()
        self._fernets: dict[str, Fernet] = {}
        self._secrets: dict[str, bytes] = {}  # the key files' bytes, for `tag`
        self._current: tuple[datetime, str] | None = None  # (period start, key id)

    # the directory ----------------------------------------------------------------------
    def ensure_directory(self) -> None:
        """Create the directory (0700) on first use; a process that never seals makes none."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(self.directory.stat().st_mode)
        if mode & 0o077:
            os.chmod(self.directory, 0o700)

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _path(self, key_id: str, suffix: str) -> Path:
        if not key_id.replace("-", "").isalnum():
            raise SealError("not a key id")
        return self.directory / f"{key_id}{suffix}"

    def key_ids(self) -> list[str]:
        """The keys on disk, oldest period first."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name[: -len(KEY_SUFFIX)] for p in self.directory.glob(f"*{KEY_SUFFIX}"))

    # periods ----------------------------------------------------------------------------
    def _period_start(self, now: datetime) -> datetime:
        step = int(self.rotate.total_seconds())
        epoch = int(now.astimezone(UTC).timestamp())
        return datetime.fromtimestamp(epoch - epoch % step, UTC)

    def current_key_id(self, now: datetime) -> str:
        """The key that seals at `now`, created on first use in its period."""
        start = self._period_start(now)
        with self._lock:
            if self._current is not None and self._current[0] == start:
                return self._current[1]
            self.ensure_directory()
            key_id = f"{start:%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"
            key = Fernet.generate_key()
            self._write_until(key_id, start + self.rotate)  # first: a key is never seen without its time
            path = self._path(key_id, KEY_SUFFIX)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # 0600 from the first byte
            try:
                os.write(fd, key)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._sync_directory()
            self._fernets[key_id] = Fernet(key)
            self._secrets[key_id] = key
            self._current = (start, key_id)
            return key_id

    # sealing ----------------------------------------------------------------------------
    def seal(self, data: bytes, now: datetime) -> str:
        key_id = self.current_key_id(now)
        return f"{key_id}.{self._fernet(key_id).encrypt(data).decode('ascii')}"

    def open(self, token: str) -> bytes:
        key_id = key_id_of(token)
        try:
            return self._fernet(key_id).decrypt(token[len(key_id) + 1:].encode("ascii"))
        except (InvalidToken, ValueError) as exc:
            raise SealError("the token does not open with its key") from exc

    def tag(self, key_id: str, data: bytes) -> str:
        """A keyed digest of `data` under key `key_id` (``<key id>:<hex>``): the same data gives
        the same tag while the key lives; once it is destroyed nobody can tell what was tagged."""
        self._fernet(key_id)  # KeyGone if destroyed
        secret = self._secrets.get(key_id)
        if secret is None:
            raise KeyGone(f"key {key_id} has been destroyed")
        return f"{key_id}:{hmac.new(secret, b'tag:' + data, hashlib.sha256).hexdigest()[:32]}"

    def _fernet(self, key_id: str) -> Fernet:
        fernet = self._fernets.get(key_id)
        if fernet is not None:
            return fernet
        try:
            key = self._path(key_id, KEY_SUFFIX).read_bytes()
        except FileNotFoundError:
            raise KeyGone(f"key {key_id} has been destroyed") from None
        fernet = Fernet(key.strip())
        with self._lock:
            self._fernets[key_id] = fernet
            self._secrets[key_id] = key.strip()
        return fernet

    # lifetime ---------------------------------------------------------------------------
    def _write_until(self, key_id: str, until: datetime) -> None:
        path = self._path(key_id, UNTIL_SUFFIX)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, until.astimezone(UTC).isoformat().encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def in_use_until(self, key_id: str) -> datetime | None:
        try:
            return datetime.fromisoformat(self._path(key_id, UNTIL_SUFFIX).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def hold(self, key_id: str, until: datetime) -> None:
        """Keep `key_id` at least until `until` (never shortens a key's time)."""
        with self._lock:
            current = self.in_use_until(key_id)
            if current is None or current < until:
                self._write_until(key_id, until)

    def expired(self, now: datetime) -> set[str]:
        """The keys on disk whose time (and its grace) is over: destroyed unless needed."""
        out: set[str] = set()
        for key_id in self.key_ids():
            until = self.in_use_until(key_id)
            if until is None or until + GRACE <= now:
                out.add(key_id)
        return out

    def destroy_unneeded(self, now: datetime, needed: Iterable[str]) -> list[str]:
        """Destroy every key whose time is over and that no stored token needs; returns their ids."""
        keep = set(needed)
        gone: list[str] = []
        for key_id in sorted(self.expired(now) - keep):
            self.destroy(key_id)
            gone.append(key_id)
        return gone

    def destroy(self, key_id: str) -> None:
        """Overwrite the key file, unlink it and sync the directory."""
        path = self._path(key_id, KEY_SUFFIX)
        with self._lock:
            self._fernets.pop(key_id, None)
            self._secrets.pop(key_id, None)
            if self._current is not None and self._current[1] == key_id:
                self._current = None
            with contextlib.suppress(FileNotFoundError):
                size = path.stat().st_size
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, secrets.token_bytes(max(size, 64)))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                path.unlink()
            with contextlib.suppress(FileNotFoundError):
                self._path(key_id, UNTIL_SUFFIX).unlink()
            self._sync_directory()
