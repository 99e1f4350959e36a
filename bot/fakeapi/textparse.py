"""Telegram-style formatted-text parsing for the fake Bot API server.

Telegram parses ``parse_mode`` text *before* it checks the length limits: the
4096-character limit of a message (1024 for a caption) applies to the visible
text after the markup has been removed, measured in UTF-16 code units.  This
module imitates that so the fake server accepts and rejects the same texts the
real one does, and turns the markup into ``MessageEntity`` dicts (offsets and
lengths in UTF-16 code units) like the real server returns.

Imitated:

* ``HTML``: the tags Telegram supports (``b strong i em u ins s strike del a
  code pre tg-spoiler span class="tg-spoiler" blockquote [expandable]
  tg-emoji``), the named entities ``&lt; &gt; &amp; &quot;`` and numeric
  references (``&#39;`` / ``&#x27;``, which :func:`html.escape` produces).
  Unsupported tags, unbalanced or badly nested tags, a ``<`` that does not
  start a tag and an unclosed tag are errors with descriptions modelled on
  Telegram's (``Unsupported start tag "br" at byte offset 5``...).
* ``MarkdownV2``: escapes, ``* _ __ ~ || ` ```` ``` and ``[text](url)``;
  an unescaped reserved character is an error (``Character '.' is reserved
  and must be escaped with the preceding '\\'``), as is an unclosed entity.
* legacy ``Markdown``: ``* _ ` ``` [text](url)``.

Not imitated: Telegram's automatic detection of URLs, mentions, hashtags in
bot messages; trimming of surrounding whitespace; entity merging rules.

Deliberate difference: in strict mode (the default) a bare ``&`` that does not
start one of the entities above is rejected in HTML.  Real Telegram keeps it as
a literal ``&``; rejecting it catches the bug of putting unescaped user text
into an HTML message, which breaks for real as soon as the text contains ``<``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EntityParseError",
    "parse_formatted",
    "parse_html",
    "parse_markdown",
    "parse_markdown_v2",
    "utf16_len",
]

Entity = dict[str, Any]


class EntityParseError(ValueError):
    """The text is not valid in its parse mode (Telegram: "can't parse entities")."""


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, the unit Telegram counts in."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


@dataclass
class _Builder:
    """Accumulates visible text and entities, tracking the UTF-16 offset."""

    parts: list[str] = field(default_factory=list)
    offset: int = 0
    entities: list[Entity] = field(default_factory=list)

    def add(self, chunk: str) -> None:
        if chunk:
            self.parts.append(chunk)
            self.offset += utf16_len(chunk)

    def entity(self, etype: str, start: int, **extra: Any) -> None:
        length = self.offset - start
        if length > 0:  # Telegram drops empty entities
            ent: Entity = {"type": etype, "offset": start, "length": length}
            ent.update({k: v for k, v in extra.items() if v is not None})
            self.entities.append(ent)

    def result(self) -> tuple[str, list[Entity]]:
        self.entities.sort(key=lambda e: (e["offset"], -e["length"]))
        return "".join(self.parts), self.entities


# --------------------------------------------------------------------------- HTML

_HTML_TAGS: dict[str, str] = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_HTML_PLAIN_RUN = re.compile(r"[^<&]+")
_TAG_NAME = re.compile(r"[A-Za-z0-9_-]*")
_ATTR = re.compile(
    r"""\s*([A-Za-z0-9_-]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""",
)


def _decode_html_entity(text: str, pos: int) -> tuple[str, int] | None:
    """Decode an entity starting at ``text[pos] == '&'`` like tdlib does.

    Returns ``(char, next_pos)`` or ``None`` when no entity starts there.  As in
    tdlib the terminating ``;`` is optional.
    """
    n = len(text)
    end = pos + 1
    if end < n and text[end] == "#":
        end += 1
        base = 10
        if end < n and text[end] in "xX":
            base = 16
            end += 1
        digits_start = end
        valid = "0123456789abcdefABCDEF" if base == 16 else "0123456789"
        while end < n and text[end] in valid:
            end += 1
        if end == digits_start:
            return None
        code = int(text[digits_start:end], base)
        if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            return None
        char = chr(code)
    else:
        while end < n and text[end].isascii() and text[end].isalpha():
            end += 1
        name = text[pos + 1 : end]
        if name not in _NAMED_ENTITIES:
            return None
        char = _NAMED_ENTITIES[name]
    if end < n and text[end] == ";":
        end += 1
    return char, end


def _unescape_attr(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "&":
            decoded = _decode_html_entity(value, i)
            if decoded is not None:
                out.append(decoded[0])
                i = decoded[1]
                continue
        out.append(value[i])
        i += 1
    return "".join(out)


@dataclass
class _OpenTag:
    name: str
    start: int
    attrs: dict[str, str]
    language: str | None = None


def parse_html(text: str, *, strict_ampersand: bool = True) -> tuple[str, list[Entity]]:
    """Parse Telegram HTML. Returns ``(visible_text, entities)``.

    Raises :class:`EntityParseError` with a Telegram-like description.
    """
    out = _Builder()
    stack: list[_OpenTag] = []
    i = 0
    n = len(text)
    while i < n:
        run = _HTML_PLAIN_RUN.match(text, i)
        if run:
            out.add(run.group())
            i = run.end()
            continue
        char = text[i]
        if char == "&":
            decoded = _decode_html_entity(text, i)
            if decoded is None:
                if strict_ampersand:
                    raise EntityParseError(
                        f'Unsupported HTML entity "&" at byte offset {_byte_offset(text, i)}'
                        " (fakebot is stricter than Telegram here: escape '&' as '&amp;')"
                    )
                out.add("&")
                i += 1
            else:
                out.add(decoded[0])
                i = decoded[1]
            continue
        # char == "<"
        begin = i
        if i + 1 < n and text[i + 1] == "/":
            close = text.find(">", i + 2)
            if close == -1:
                raise EntityParseError(
                    f"Unclosed end tag at byte offset {_byte_offset(text, begin)}"
                )
            name = text[i + 2 : close].strip().lower()
            if not stack:
                raise EntityParseError(
                    f"Unexpected end tag at byte offset {_byte_offset(text, begin)}"
                )
            top = stack.pop()
            if top.name != name:
                raise EntityParseError(
                    f"Unmatched end tag at byte offset {_byte_offset(text, begin)}, "
                    f'expected "</{top.name}>", found "</{name}>"'
                )
            _close_html_tag(out, top, stack)
            i = close + 1
            continue
        name_match = _TAG_NAME.match(text, i + 1)
        assert name_match is not None  # the pattern accepts the empty string
        name = name_match.group().lower()
        if name not in _HTML_TAGS:
            raise EntityParseError(
                f'Unsupported start tag "{name}" at byte offset {_byte_offset(text, begin)}'
            )
        j = name_match.end()
        attrs: dict[str, str] = {}
        while True:
            while j < n and text[j].isspace():
                j += 1
            if j >= n:
                raise EntityParseError(
                    f"Unclosed start tag at byte offset {_byte_offset(text, begin)}"
                )
            if text[j] == ">":
                j += 1
                break
            attr = _ATTR.match(text, j)
            if attr is None or attr.end() == j:
                raise EntityParseError(
                    f'Unclosed start tag "{name}" at byte offset {_byte_offset(text, begin)}'
                )
            value = next((g for g in attr.groups()[1:] if g is not None), "")
            attrs[attr.group(1).lower()] = _unescape_attr(value)
            j = attr.end()
        if name == "span" and attrs.get("class") != "tg-spoiler":
            raise EntityParseError('Tag "span" must have class "tg-spoiler"')
        if name == "tg-emoji" and not attrs.get("emoji-id"):
            raise EntityParseError('Tag "tg-emoji" must have attribute "emoji-id"')
        stack.append(_OpenTag(name=name, start=out.offset, attrs=attrs))
        i = j
    if stack:
        raise EntityParseError(
            f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"'
        )
    return out.result()


def _close_html_tag(out: _Builder, tag: _OpenTag, stack: list[_OpenTag]) -> None:
    etype = _HTML_TAGS[tag.name]
    if tag.name == "a":
        href = tag.attrs.get("href")
        if href:
            out.entity("text_link", tag.start, url=href)
        return
    if tag.name == "code":
        parent = stack[-1] if stack else None
        cls = tag.attrs.get("class", "")
        if parent is not None and parent.name == "pre" and parent.start == tag.start:
            if cls.startswith("language-"):
                parent.language = cls[len("language-") :]
            return  # <pre><code> is a single pre entity
        out.entity("code", tag.start)
        return
    if tag.name == "pre":
        out.entity("pre", tag.start, language=tag.language)
        return
    if tag.name == "blockquote" and "expandable" in tag.attrs:
        out.entity("expandable_blockquote", tag.start)
        return
    if tag.name == "tg-emoji":
        out.entity("custom_emoji", tag.start, custom_emoji_id=tag.attrs["emoji-id"])
        return
    out.entity(etype, tag.start)


# ------------------------------------------------------------------ MarkdownV2

_MDV2_RESERVED = set("_*[]()~`>#+-=|{}.!")
_MDV2_PLAIN_RUN = re.compile(r"[^_*\[\]()~`>#+\-=|{}.!\\]+")
_MDV2_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "code": "Code",
    "pre": "Pre",
    "text_link": "TextUrl",
    "custom_emoji": "CustomEmoji",
}


@dataclass
class _OpenMd:
    kind: str
    start: int
    byte_pos: int
    language: str | None = None


def _read_md_url(text: str, pos: int) -> tuple[str, int]:
    """Read ``(url)`` starting at ``text[pos] == '('``; returns (url, next_pos)."""
    url: list[str] = []
    j = pos + 1
    while j < len(text):
        if text[j] == "\\" and j + 1 < len(text):
            url.append(text[j + 1])
            j += 2
            continue
        if text[j] == ")":
            return "".join(url), j + 1
        url.append(text[j])
        j += 1
    raise EntityParseError(f"Can't find end of a URL at byte offset {_byte_offset(text, pos)}")


def parse_markdown_v2(text: str) -> tuple[str, list[Entity]]:
    """Parse Telegram MarkdownV2 (approximation of tdlib's parser)."""
    out = _Builder()
    stack: list[_OpenMd] = []
    i = 0
    n = len(text)

    def toggle(kind: str, pos: int, width: int) -> int:
        """Open or close a symmetric entity at ``pos``; returns the next position."""
        if stack and stack[-1].kind == kind:
            out.entity(kind, stack.pop().start)
        else:
            stack.append(_OpenMd(kind, out.offset, _byte_offset(text, pos)))
        return pos + width

    while i < n:
        char = text[i]
        top_kind = stack[-1].kind if stack else None
        if char == "\\":
            if i + 1 < n and 0 < ord(text[i + 1]) <= 126:
                out.add(text[i + 1])
                i += 2
            else:
                raise EntityParseError(
                    "Character '\\' is reserved and must be escaped with the preceding '\\'"
                )
            continue
        if top_kind in ("code", "pre"):
            if top_kind == "code" and char == "`":
                top = stack.pop()
                out.entity("code", top.start)
                i += 1
            elif top_kind == "pre" and text.startswith("```", i):
                top = stack.pop()
                out.entity("pre", top.start, language=top.language)
                i += 3
            else:
                out.add(char)
                i += 1
            continue
        run = _MDV2_PLAIN_RUN.match(text, i)
        if run:
            out.add(run.group())
            i = run.end()
            continue
        if char == "_":
            if text.startswith("__", i):
                i = toggle("underline", i, 2)
            else:
                i = toggle("italic", i, 1)
        elif char == "*":
            i = toggle("bold", i, 1)
        elif char == "~":
            i = toggle("strikethrough", i, 1)
        elif char == "|" and text.startswith("||", i):
            i = toggle("spoiler", i, 2)
        elif char == "`":
            if text.startswith("```", i):
                j = i + 3
                newline = text.find("\n", j)
                language: str | None = None
                if newline != -1 and re.fullmatch(r"[A-Za-z0-9_+#.-]*", text[j:newline]):
                    language = text[j:newline] or None
                    j = newline + 1
                stack.append(_OpenMd("pre", out.offset, _byte_offset(text, i), language))
                i = j
            else:
                stack.append(_OpenMd("code", out.offset, _byte_offset(text, i)))
                i += 1
        elif char == "[" or (char == "!" and text.startswith("![", i)):
            kind = "custom_emoji" if char == "!" else "text_link"
            stack.append(_OpenMd(kind, out.offset, _byte_offset(text, i)))
            i += 2 if char == "!" else 1
        elif char == "]" and top_kind in ("text_link", "custom_emoji"):
            top = stack.pop()
            if i + 1 < n and text[i + 1] == "(":
                url, i = _read_md_url(text, i + 1)
            else:
                url, i = "", i + 1
            if top.kind == "custom_emoji":
                match = re.fullmatch(r"tg://emoji\?id=(\d+)", url)
                if not match:
                    raise EntityParseError("Custom emoji entity must contain a tg://emoji URL")
                out.entity("custom_emoji", top.start, custom_emoji_id=match.group(1))
            elif url:
                out.entity("text_link", top.start, url=url)
        elif char == ">" and (i == 0 or text[i - 1] == "\n"):
            i += 1  # blockquote marker (entity not generated by this fake)
        else:
            raise EntityParseError(
                f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
            )
    if stack:
        top = stack[0]
        raise EntityParseError(
            f"Can't find end of {_MDV2_NAMES.get(top.kind, top.kind)} entity "
            f"at byte offset {top.byte_pos}"
        )
    return out.result()


# --------------------------------------------------------------- Markdown (legacy)

_MD_PLAIN_RUN = re.compile(r"[^_*`\[\\]+")


def parse_markdown(text: str) -> tuple[str, list[Entity]]:
    """Parse legacy Telegram Markdown (no nesting)."""
    out = _Builder()
    i = 0
    n = len(text)
    while i < n:
        run = _MD_PLAIN_RUN.match(text, i)
        if run:
            out.add(run.group())
            i = run.end()
            continue
        char = text[i]
        if char == "\\" and i + 1 < n and text[i + 1] in "_*`[":
            out.add(text[i + 1])
            i += 2
            continue
        if char == "\\":
            out.add(char)
            i += 1
            continue
        begin = i
        if char == "[":
            close = text.find("]", i + 1)
            if close == -1:
                raise EntityParseError(
                    "Can't find end of the entity starting at byte offset "
                    f"{_byte_offset(text, begin)}"
                )
            start = out.offset
            out.add(text[i + 1 : close])
            i = close + 1
            if i < n and text[i] == "(":
                url, i = _read_md_url(text, i)
                out.entity("text_link", start, url=url)
            continue
        if text.startswith("```", i):
            close = text.find("```", i + 3)
            etype, width = "pre", 3
        else:
            close = text.find(char, i + 1)
            etype = {"*": "bold", "_": "italic", "`": "code"}[char]
            width = 1
        if close == -1:
            raise EntityParseError(
                f"Can't find end of the entity starting at byte offset {_byte_offset(text, begin)}"
            )
        start = out.offset
        out.add(text[i + width : close])
        out.entity(etype, start)
        i = close + width
    return out.result()


# ------------------------------------------------------------------------ dispatch


def parse_formatted(
    text: str, parse_mode: str | None, *, strict_ampersand: bool = True
) -> tuple[str, list[Entity]]:
    """Parse ``text`` in ``parse_mode`` (case-insensitive; ``None`` = plain).

    Raises :class:`EntityParseError` for bad markup and :class:`ValueError` for
    an unknown parse mode.
    """
    if not parse_mode:
        return text, []
    mode = parse_mode.lower()
    if mode == "html":
        return parse_html(text, strict_ampersand=strict_ampersand)
    if mode == "markdownv2":
        return parse_markdown_v2(text)
    if mode == "markdown":
        return parse_markdown(text)
    raise ValueError(f"unsupported parse_mode {parse_mode!r}")
