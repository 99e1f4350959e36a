"""One normalisation for every typed text: invisible characters are not content."""

from __future__ import annotations

import pytest

from bot.domain.text import normalise, normalise_opt, visible_length

INVISIBLE = [
    "\u200b",  # zero-width space
    "\u200c\u200d",  # zero-width non-joiner, joiner
    "\u2060",  # word joiner
    "\ufeff",  # byte-order mark
    "\u00ad",  # soft hyphen
    "\u202e\u202c",  # right-to-left override, pop
    "\u2066\u2069",  # left-to-right isolate, pop
    "\u061c",  # Arabic letter mark
    "\u180e",  # Mongolian vowel separator
    "\u3164",  # Hangul filler
    "\u2800",  # blank Braille pattern
    "\ufe0f",  # a variation selector on nothing
    "\u3000\u00a0\u2003\t",  # ideographic, no-break, em space, tab
    "\u2028\u2029\r\n",  # line and paragraph separators
    "\x07\x1b",  # control characters
]


@pytest.mark.parametrize("invisible", INVISIBLE)
def test_invisible_only_is_empty(invisible: str) -> None:
    assert normalise(invisible * 3) == ""
    assert normalise(f" {invisible} \n {invisible}") == ""
    assert normalise_opt(invisible) is None


def test_invisible_characters_inside_text_are_removed_and_not_counted() -> None:
    assert normalise("定\u200b昌\u200d镇\ufeff") == "定昌镇"
    assert visible_length("a\u200b" * 10) == 10
    assert normalise("\u202etxt.exe\u202c") == "txt.exe"  # shown in the order it was typed
    assert normalise("\u2067abc\u2069 def") == "abc def"


def test_spaces_and_lines_are_tidied() -> None:
    assert normalise("  窗口\u3000\u3000工作人员  \t 不在 ") == "窗口 工作人员 不在"
    assert normalise("第一行  \r\n\r\n\r\n\r\n第二行\u2028第三行") == "第一行\n\n第二行\n第三行"


def test_visible_content_is_kept() -> None:
    text = "11月20日上午9点，镇政府便民服务大厅 (A-1)! 👍🏽 👨\u200d👩\u200d👧 é"
    assert normalise(text) == text
    assert normalise("e\u0301") == "\u00e9"  # composed (NFC), one character
