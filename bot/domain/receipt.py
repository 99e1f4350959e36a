"""Receipt codes: how an anonymous tipster finds their tip again.

A receipt is 16 uniformly random decimal digits (a leading 0 is allowed).
Being the tipster's only credential, all 10**16 values are used: there is
deliberately no check digit (Luhn or otherwise), which would cut the space
tenfold for little gain, since a mistyped code simply matches nothing.
This module is the pure part; storage (hashing, rate limits) lives elsewhere.
"""

from __future__ import annotations

import random
import secrets
import unicodedata
from typing import Final

__all__ = [
    "RECEIPT_DIGITS",
    "format_receipt",
    "is_receipt_code",
    "looks_like_receipt",
    "new_receipt_code",
    "parse_receipt",
]

RECEIPT_DIGITS: Final = 16
_ASCII_DIGITS: Final = frozenset("0123456789")
# After NFKC a full-width space (U+3000) is a plain space and a full-width
# hyphen (U+FF0D) a plain '-'.
_SEPARATORS: Final = frozenset(" -")
_SYSTEM_RANDOM: Final = secrets.SystemRandom()


def new_receipt_code(rng: secrets.SystemRandom | random.Random = _SYSTEM_RANDOM) -> str:
    """A fresh uniform 16-digit code; pass a seeded Random only in tests."""
    return f"{rng.randrange(10**RECEIPT_DIGITS):0{RECEIPT_DIGITS}d}"


def is_receipt_code(code: str) -> bool:
    """True for exactly 16 ASCII digits (the canonical stored form)."""
    return isinstance(code, str) and len(code) == RECEIPT_DIGITS and set(code) <= _ASCII_DIGITS


def format_receipt(code: str) -> str:
    """Groups of four for display: ``"1234 5678 9012 3456"``."""
    if not is_receipt_code(code):
        raise ValueError("a receipt code is exactly 16 ASCII digits")
    return " ".join(code[i : i + 4] for i in range(0, RECEIPT_DIGITS, 4))


def parse_receipt(text: str) -> str | None:
    """The 16 digits typed in ``text``, or None if it is not a receipt.

    Accepts ASCII or full-width digits separated by spaces, '-' or
    full-width spaces, with surrounding whitespace. Anything else (letters,
    other punctuation, 15 or 17 digits) is refused rather than guessed at,
    so a message that merely contains a number is not taken as a receipt.
    """
    if not isinstance(text, str):
        return None
    normalized = unicodedata.normalize("NFKC", text).strip()
    digits = []
    for ch in normalized:
        if ch in _ASCII_DIGITS:
            digits.append(ch)
        elif ch not in _SEPARATORS:
            return None
    code = "".join(digits)
    return code if len(code) == RECEIPT_DIGITS else None


def looks_like_receipt(text: str) -> bool:
    """True if ``text`` parses as a receipt (routes a message to the lookup flow)."""
    return parse_receipt(text) is not None
