"""One normalisation for every text a person types (citizen, office, staff).

Invisible characters do not count as content: format characters (Unicode category Cf:
zero-width spaces and joiners, the byte-order mark, soft hyphens, bidirectional
embeddings, overrides and isolates, ...), control characters other than the line break,
and the blank "filler" letters are removed; every kind of space becomes a plain space,
runs of spaces one, line separators a line break, and more than one empty line in a row
one. Lengths are counted after that, so a text that is only invisible (or only marks
that attach to nothing) is empty.

Bidirectional controls are removed rather than kept: they only change how text is shown
(e.g. a right-to-left override makes "txt.exe" look like "exe.txt"), so without them
staff read the characters in the order they were typed. A zero-width joiner between two
symbols (the joiner inside an emoji sequence) is kept; it is never content on its own.
"""

from __future__ import annotations

import re
import unicodedata

ZWJ = "\u200d"
# Letters that render blank (Hangul fillers) and the blank Braille pattern.
BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_SPACES = re.compile(r"[ ]{2,}")
_EMPTY_LINES = re.compile(r"\n{3,}")


def _keep_joiner(text: str, i: int) -> bool:
    """A zero-width joiner between two symbols (an emoji sequence)."""
    if i == 0 or i + 1 >= len(text):
        return False
    before, after = text[i - 1], text[i + 1]
    return unicodedata.category(before) == "So" and unicodedata.category(after) == "So"


def normalise(text: str) -> str:
    """The text as it will be stored and counted (see the module's doc)."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    out: list[str] = []
    for i, ch in enumerate(text):
        category = unicodedata.category(ch)
        if ch == "\n":
            out.append(ch)
        elif category in ("Zl", "Zp"):
            out.append("\n")
        elif ch == "\t" or category == "Zs":
            out.append(" ")
        elif category == "Cf":
            if ch == ZWJ and _keep_joiner(text, i):
                out.append(ch)
        elif category in ("Cc", "Cs", "Co", "Cn") or ch in BLANK_LETTERS:
            continue
        else:
            out.append(ch)
    lines = [_SPACES.sub(" ", line).strip() for line in "".join(out).split("\n")]
    result = _EMPTY_LINES.sub("\n\n", "\n".join(lines)).strip()
    # Only marks left (a lone combining accent or variation selector): nothing to read.
    if not any(unicodedata.category(ch)[0] in "LNPS" for ch in result):
        return ""
    return result


def normalise_opt(text: str | None) -> str | None:
    """`normalise`, with None (and a text that is empty after it) as None."""
    if text is None:
        return None
    return normalise(text) or None


def visible_length(text: str) -> int:
    """The length of the normalised text: what limits are checked against."""
    return len(normalise(text))
