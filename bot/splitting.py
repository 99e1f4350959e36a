"""Split an HTML-formatted message into parts Telegram accepts (4096 visible characters).

Telegram counts the text *after* parsing entities, in UTF-16 code units. Splits fall on
a line break where one is near the limit, never inside a tag or an entity; tags open at
the split are closed before it and reopened after it.

One pass over the text, in time linear in its length: a bulletin of ten thousand cases is
a couple of megabytes, and splitting it character by character was most of its job.
"""

from __future__ import annotations

import html as _html
import re
import unicodedata
from collections.abc import Iterator

TELEGRAM_TEXT_LIMIT = 4096
TELEGRAM_CAPTION_LIMIT = 1024
# a tag, an entity, a run of text without a line break, a line break, a stray < or &
_TOKEN = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)([^>]*)>|&[#a-zA-Z0-9]+;|[^<&\n]+|\n|[<&]")
_ASTRAL = re.compile("[\U00010000-\U0010FFFF]")


def visible_length(html: str) -> int:
    return sum(_units(text) for text in _texts(html))


def _units(text: str) -> int:
    # UTF-16 code units: one per character but two for those outside the BMP
    return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2


def _texts(html: str) -> Iterator[str]:
    """The visible text, token by token (entities decoded), lazily."""
    for m in _TOKEN.finditer(html):
        if m.group(2) is None:
            tok = m.group(0)
            yield _html.unescape(tok) if tok[0] == "&" and len(tok) > 1 else tok


def has_content(html: str) -> bool:
    """Whether the visible text holds anything but white space and invisible format
    characters (Telegram refuses such a message as empty). Stops at the first such
    character: a part of a long message is not read to its end."""
    for text in _texts(html):
        for ch in text:
            if not ch.isspace() and unicodedata.category(ch) != "Cf":
                return True
    return False


def _fitting(text: str, room: int, units: int) -> int:
    """How many leading characters of `text` (`units` UTF-16 units) fit in `room` units."""
    if room <= 0:
        return 0
    if len(text) == units:  # no character takes two units: a slice, not a loop
        return min(len(text), room)
    used = 0
    for i, ch in enumerate(text):
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > room:
            return i
    return len(text)


def split_html(html: str, limit: int = TELEGRAM_TEXT_LIMIT) -> list[str]:
    """The parts to send, in order; never a part with nothing visible in it (an empty or
    blank text gives no part at all)."""
    parts: list[str] = []
    open_tags: list[tuple[str, str]] = []  # (name, full opening tag)
    current: list[str] = []  # the pieces of the part being filled
    length = 0  # its visible length
    # the last line break in it: (pieces up to and with it, tags open there, length there)
    last_break: tuple[int, tuple[tuple[str, str], ...], int] | None = None
    # Most messages have no character outside the BMP: then a text's length is its units,
    # found once for the whole message instead of encoding every run.
    units = _units if _ASTRAL.search(html) else len

    def cut() -> None:
        """The part is full: end it at the last line break if that leaves it at least 3/4
        full, else right here. Tags open at the cut are closed and reopened."""
        nonlocal current, length, last_break
        if last_break is not None and last_break[0] > 0 and last_break[2] >= limit * 3 // 4:
            upto, tags, at = last_break
            head, tail, length = current[:upto], current[upto:], length - at  # tags have no length
        else:
            tags, head, tail, length = tuple(open_tags), current, [], 0
        text = "".join(head).rstrip("\n") + "".join(f"</{name}>" for name, _ in reversed(tags))
        if has_content(text):
            parts.append(text)
        reopening = "".join(tag for _, tag in tags)
        current = [reopening, *tail] if reopening else tail
        last_break = None

    for m in _TOKEN.finditer(html):
        tok = m.group(0)
        name = m.group(2)
        if name is not None:  # a tag: no length
            name = name.lower()
            if m.group(1):
                for i in range(len(open_tags) - 1, -1, -1):
                    if open_tags[i][0] == name:
                        del open_tags[i]
                        break
            else:
                open_tags.append((name, tok))
            current.append(tok)
            continue
        if tok[0] == "&" and len(tok) > 1:  # an entity: whole or not at all
            size = _units(_html.unescape(tok))  # &#128512; is two units in any message
            if length + size > limit:
                cut()
            current.append(tok)
            length += size
            continue
        if tok == "\n":
            if length + 1 > limit:
                cut()
            current.append(tok)
            length += 1
            last_break = (len(current), tuple(open_tags), length)
            continue
        # A run of text: whole when it fits; else as much as fits, a cut, and the rest.
        size = units(tok)
        while tok and length + size > limit:
            k = _fitting(tok, limit - length, size)
            if k:
                current.append(tok[:k])
                length += units(tok[:k])
            cut()
            # at least one character goes after a cut, whatever the room (a limit of 1
            # and a character of two units must still advance)
            k += 1
            current.append(tok[k - 1:k])
            length += units(tok[k - 1:k])
            tok = tok[k:]
            size = units(tok)
        if tok:
            current.append(tok)
            length += size
    if current:
        text = "".join(current)
        if has_content(text):
            parts.append(text)
    return parts
