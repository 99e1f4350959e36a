"""Split an HTML-formatted message into parts Telegram accepts (4096 visible characters).

Telegram counts the text *after* parsing entities, in UTF-16 code units. Splits fall on
a line break where one is near the limit, never inside a tag or an entity; tags open at
the split are closed before it and reopened after it.
"""

from __future__ import annotations

import html as _html
import re
import unicodedata

TELEGRAM_TEXT_LIMIT = 4096
TELEGRAM_CAPTION_LIMIT = 1024
_LINES = re.compile(r"[^\n]+|\n")
_TOKEN = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)([^>]*)>|&[#a-zA-Z0-9]+;|[^<&]+|[<&]")


def visible_length(html: str) -> int:
    return sum(_visible(tok, kind) for tok, kind in _tokens(html))


def _visible(tok: str, kind: str) -> int:
    if kind == "tag":
        return 0
    return _units(_html.unescape(tok) if kind == "entity" else tok)


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _tokens(html: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(html):
        tok = m.group(0)
        if m.group(2) is not None:
            out.append((tok, "tag"))
        elif tok.startswith("&") and len(tok) > 1:
            out.append((tok, "entity"))
        else:
            # split long text runs into single characters lazily below
            out.append((tok, "text"))
    return out


def has_content(html: str) -> bool:
    """Whether the visible text holds anything but white space and invisible format
    characters (Telegram refuses such a message as empty)."""
    for tok, kind in _tokens(html):
        if kind == "tag":
            continue
        text = _html.unescape(tok) if kind == "entity" else tok
        if any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in text):
            return True
    return False


def split_html(html: str, limit: int = TELEGRAM_TEXT_LIMIT) -> list[str]:
    """The parts to send, in order; never a part with nothing visible in it (an empty or
    blank text gives no part at all)."""
    if visible_length(html) <= limit:
        return [html] if has_content(html) else []
    parts: list[str] = []
    open_tags: list[tuple[str, str]] = []  # (name, full opening tag)
    current: list[str] = []
    length = 0
    break_state: tuple[int, list[tuple[str, str]], int] | None = None

    def flush(upto: int | None, tags_then: list[tuple[str, str]]) -> None:
        nonlocal current, length
        head = current if upto is None else current[:upto]
        tail = [] if upto is None else current[upto:]
        closing = "".join(f"</{name}>" for name, _ in reversed(tags_then))
        text = "".join(head).rstrip("\n") + closing
        if has_content(text):
            parts.append(text)
        reopening = "".join(tag for _, tag in tags_then)
        current = [reopening, *tail] if reopening else list(tail)
        length = visible_length("".join(current))

    for tok, kind in _tokens(html):
        if kind == "tag":
            m = _TOKEN.match(tok)
            assert m is not None
            closing, name = m.group(1) == "/", m.group(2).lower()
            if closing:
                for i in range(len(open_tags) - 1, -1, -1):
                    if open_tags[i][0] == name:
                        del open_tags[i]
                        break
            else:
                open_tags.append((name, tok))
            current.append(tok)
            continue
        # A line of text goes in whole when it fits; only a line that overflows goes
        # character by character (line breaks stay pieces of their own, the places to
        # split). The same parts as splitting every character, at a fraction of the cost.
        segments = [tok] if kind == "entity" else _LINES.findall(tok)
        for segment in segments:
            if kind == "text" and len(segment) > 1:
                size = _units(segment)
                if length + size <= limit:
                    current.append(segment)
                    length += size
                    continue
            pieces = [segment] if kind == "entity" else list(segment)
            for piece in pieces:
                size = _visible(piece, kind)
                if length + size > limit:
                    # Prefer the last line break if it leaves this part at least 3/4 full.
                    if break_state is not None and break_state[0] > 0 and break_state[2] >= limit * 3 // 4:
                        flush(break_state[0], break_state[1])
                    else:
                        flush(None, list(open_tags))
                    break_state = None
                current.append(piece)
                length += size
                if piece == "\n":
                    break_state = (len(current), list(open_tags), length)
    if current:
        text = "".join(current)
        if has_content(text):
            parts.append(text)
    return parts
