"""split_html on large, varied messages: every part within the limit, never blank, never
cut inside a tag or an entity, tags balanced in each part, nothing visible lost."""

from __future__ import annotations

import html
import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.splitting import has_content, split_html, visible_length

TAGS = ("b", "i", "u", "s", "code", "a")
OPEN = {"a": '<a href="https://example.invalid/?q=1&amp;r=2">'}
WORDS = ("督查", "abc", "😀", " ", "\u200b", "<", ">", "&", '"', "字" * 30, "word " * 12, "\t")

# A line: text (escaped, so < and & only ever appear in tags and entities) in and out of tags.
text = st.lists(st.sampled_from(WORDS), min_size=0, max_size=8).map(lambda ws: html.escape("".join(ws)))
span = st.tuples(st.sampled_from(TAGS), text).map(lambda t: f"{OPEN.get(t[0], f'<{t[0]}>')}{t[1]}</{t[0]}>")
line = st.lists(st.one_of(text, span), min_size=0, max_size=6).map("".join)
# A multi-line tag (a bold heading over several lines, as a bulletin's case has).
block = st.tuples(st.sampled_from(TAGS), st.lists(text, min_size=1, max_size=4)).map(
    lambda t: f"{OPEN.get(t[0], f'<{t[0]}>')}" + "\n".join(t[1]) + f"</{t[0]}>")
piece = st.one_of(line, line, block)

TAG = re.compile(r"<(/?)([a-z]+)[^<>]*>")
ENTITY = re.compile(r"&(?:[a-z]+|#[0-9]+);")


def visible_text(part: str) -> str:
    return html.unescape(TAG.sub("", part))


def invisible_out(text: str) -> str:
    return re.sub(r"[\s\u200b]", "", text)


def assert_well_formed(part: str) -> None:
    # a tag or an entity cut in two would leave a bare < > or & behind
    bare = ENTITY.sub("", TAG.sub("", part))
    assert "<" not in bare and ">" not in bare and "&" not in bare, part[:200]
    stack: list[str] = []
    for m in TAG.finditer(part):
        if m.group(1):
            assert stack and stack[-1] == m.group(2), part[:200]
            stack.pop()
        else:
            stack.append(m.group(2))
    assert not stack, part[:200]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(piece, min_size=1, max_size=40), repeat=st.integers(1, 400),
       limit=st.sampled_from([16, 64, 300, 4096]))
@example(pieces=[" "], repeat=1, limit=16)  # a blank message: no part at all
@example(pieces=["<b>" + "字" * 20 + "\n" + "a" * 30 + "</b>"], repeat=300, limit=64)
def test_split_of_a_large_message_keeps_every_rule(pieces: list[str], repeat: int, limit: int) -> None:
    body = "\n".join(pieces * repeat)  # up to a few hundred thousand characters
    parts = split_html(body, limit)
    for part in parts:
        assert visible_length(part) <= limit
        assert has_content(part)
        assert_well_formed(part)
    # nothing visible lost or added: only line breaks where a part ends, and parts with
    # nothing visible (white space, invisible format characters) go
    assert invisible_out("".join(visible_text(p) for p in parts)) == invisible_out(visible_text(body))
    if not has_content(body):
        assert parts == []


def test_a_cut_prefers_the_last_line_break_when_the_part_is_three_quarters_full() -> None:
    body = "\n".join(["x" * 70, "y" * 10, "z" * 40])  # limit 100: the third line does not fit
    assert split_html(body, 100) == ["x" * 70 + "\n" + "y" * 10, "z" * 40]
    body = "\n".join(["x" * 50, "z" * 70])  # only half full at the break: cut mid-line
    assert split_html(body, 100) == ["x" * 50 + "\n" + "z" * 49, "z" * 21]
