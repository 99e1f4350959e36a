"""Invite codes: what staff type after /join. The pure part; their hashes live in storage.

A code is 12 characters of ALPHABET, shown as three groups of four; what a person types is
normalised (case and separators dropped) before it is hashed and looked up.
"""

from __future__ import annotations

import secrets
from typing import Final

ALPHABET: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed by hand
LENGTH: Final = 12
_LETTERS: Final = frozenset(ALPHABET)


def new_invite_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, LENGTH, 4))


def normalize_invite(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


def could_be_invite(code: str) -> bool:
    """Whether `code` normalises to a code tipline could have made (only such a code can be valid)."""
    normal = normalize_invite(code)
    return len(normal) == LENGTH and set(normal) <= _LETTERS
