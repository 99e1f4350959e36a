"""Files that hold keys: readable by their owner only, from the first byte.

`write_private` creates the file with os.open(O_CREAT | O_EXCL, 0o600), so it never
exists with wider permissions, whatever the umask (a umask can only take permissions
away); fchmod then makes the mode exactly 0600. Replacing a file goes through a new
private file in the same directory and an atomic rename.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

PRIVATE = 0o600


def write_private(path: Path | str, text: str, *, replace: bool = False) -> None:
    path = Path(path)
    if not replace:
        _create(path, text)
        return
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        _create(temp, text)
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def _create(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    try:
        os.fchmod(fd, PRIVATE)
        data = text.encode("utf-8")
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
