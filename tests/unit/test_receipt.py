"""Receipt codes: generation, display format and tolerant-but-strict parsing."""

from __future__ import annotations

import random
import secrets
from collections import Counter

import pytest

from bot.domain.receipt import (
    RECEIPT_DIGITS,
    format_receipt,
    is_receipt_code,
    looks_like_receipt,
    new_receipt_code,
    parse_receipt,
)


def test_new_code_shape_with_system_random() -> None:
    code = new_receipt_code()
    assert len(code) == RECEIPT_DIGITS == 16
    assert code.isascii() and code.isdigit()
    batch = {new_receipt_code(secrets.SystemRandom()) for _ in range(50)}
    assert len(batch) == 50  # a collision among 50 of 10**16 would mean a broken rng


def test_new_code_is_deterministic_with_seeded_rng() -> None:
    assert new_receipt_code(random.Random(1)) == new_receipt_code(random.Random(1))
    assert new_receipt_code(random.Random(1)) != new_receipt_code(random.Random(2))


class _FixedRandom(random.Random):
    """Returns a chosen value from randrange, to pin down the formatting."""

    def __init__(self, value: int) -> None:
        super().__init__(0)
        self.value = value
        self.bound: int | None = None

    def randrange(  # type: ignore[override]
        self, stop: int, *args: object, **kwargs: object
    ) -> int:
        self.bound = stop
        return self.value


def test_leading_zeros_are_kept_and_full_range_is_used() -> None:
    rng = _FixedRandom(42)
    assert new_receipt_code(rng) == "0000000000000042"
    assert rng.bound == 10**16
    assert new_receipt_code(_FixedRandom(0)) == "0000000000000000"
    assert new_receipt_code(_FixedRandom(10**16 - 1)) == "9999999999999999"


def test_digits_are_roughly_uniform() -> None:
    rng = random.Random(2026)
    counts = Counter("".join(new_receipt_code(rng) for _ in range(2000)))
    # 32,000 digits: each of the 10 expected ~3,200 times.
    assert set(counts) == set("0123456789")
    assert all(2900 < n < 3500 for n in counts.values()), counts
    first = Counter(new_receipt_code(rng)[0] for _ in range(2000))
    assert first["0"] > 120  # a leading zero is as likely as any other digit


def test_format_receipt() -> None:
    assert format_receipt("1234567890123456") == "1234 5678 9012 3456"
    assert format_receipt("0000000000000001") == "0000 0000 0000 0001"


@pytest.mark.parametrize(
    "bad",
    [
        "123456789012345",
        "12345678901234567",
        "1234 5678 9012 3456",
        "12345678901234a6",
        "１２３４５６７８９０１２３４５６",
        "",
    ],
)
def test_format_receipt_rejects_non_canonical(bad: str) -> None:
    with pytest.raises(ValueError, match="16 ASCII digits"):
        format_receipt(bad)


@pytest.mark.parametrize(
    "text",
    [
        "1234567890123456",
        "1234 5678 9012 3456",
        "1234-5678-9012-3456",
        "  1234 5678 9012 3456\n",
        "1234  5678--9012 - 3456",
        "１２３４５６７８９０１２３４５６",  # full-width digits
        "１２３４　５６７８　９０１２　３４５６",  # full-width spaces
        "1234－5678－9012－3456",  # full-width hyphen
        "\t1234567890123456 ",
    ],
)
def test_parse_accepts_separators_and_full_width(text: str) -> None:
    assert parse_receipt(text) == "1234567890123456"
    assert looks_like_receipt(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "- - -",
        "123456789012345",  # 15 digits
        "1234 5678 9012 345",
        "12345678901234567",  # 17 digits
        "1234 5678 9012 3456 7",
        "1234 5678 9012 345a",
        "abcd efgh ijkl mnop",
        "receipt 1234 5678 9012 3456",
        "1234 5678 9012 3456?",
        "1234.5678.9012.3456",
        "1234_5678_9012_3456",
        "1234/5678/9012/3456",
        "1234\n5678\n9012\n3456",  # inner newlines are not separators
        "١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦",  # Arabic-Indic digits are digits, but not ours
    ],
)
def test_parse_rejects(text: str) -> None:
    assert parse_receipt(text) is None
    assert not looks_like_receipt(text)


def test_parse_rejects_non_strings() -> None:
    assert parse_receipt(1234567890123456) is None  # type: ignore[arg-type]
    assert parse_receipt(None) is None  # type: ignore[arg-type]


def test_round_trips() -> None:
    rng = random.Random(5)
    for _ in range(200):
        code = new_receipt_code(rng)
        shown = format_receipt(code)
        assert parse_receipt(shown) == code
        assert parse_receipt(shown.replace(" ", "-")) == code
        assert parse_receipt(code) == code
        assert format_receipt(parse_receipt(shown) or "") == shown


def test_is_receipt_code() -> None:
    assert is_receipt_code("0123456789012345")
    assert not is_receipt_code("0123 4567 8901 2345")
    assert not is_receipt_code("012345678901234")
    assert not is_receipt_code("１２３４５６７８９０１２３４５６")
    assert not is_receipt_code(123)  # type: ignore[arg-type]
