"""Templates: both languages say the same things, escape what users typed, never guess."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from jinja2 import UndefinedError

from bot.drafts import Draft, EvidenceItem
from bot.splitting import split_html, visible_length
from bot.texts import TEMPLATES, Texts
from tests.conftest import make_config

MACRO = re.compile(r"{%\s*macro\s+(\w+)\(([^)]*)\)")


def _macros(path: str) -> dict[str, str]:
    return {m.group(1): m.group(2).replace(" ", "") for m in MACRO.finditer((TEMPLATES / path).read_text("utf-8"))}


MACRO_FILES = sorted(p.name for p in (TEMPLATES / "zh-CN").iterdir()
                     if p.name.startswith(("messages", "buttons")))


@pytest.mark.parametrize("name", MACRO_FILES)
def test_languages_define_the_same_macros_with_the_same_arguments(name: str) -> None:
    assert _macros(f"zh-CN/{name}") == _macros(f"en/{name}")
    assert _macros(f"zh-CN/{name}")


def test_macro_names_are_unique_across_files() -> None:
    seen: dict[str, str] = {}
    for name in MACRO_FILES:
        kind = name.split("_")[0].split(".")[0]
        for macro in _macros(f"zh-CN/{name}"):
            assert (kind, macro) not in seen, f"{macro} is in {seen.get((kind, macro))} and {name}"
            seen[(kind, macro)] = name  # type: ignore[index]


def test_languages_have_the_same_template_files() -> None:
    zh = sorted(p.name for p in (TEMPLATES / "zh-CN").iterdir())
    en = sorted(p.name for p in (TEMPLATES / "en").iterdir())
    assert zh == en


def test_user_text_is_escaped_in_html_templates() -> None:
    texts = Texts(make_config())
    draft = Draft(category="absence", unit="other", unit_other="<b>x</b>", place="a & b", text="<script>",
                  evidence=[EvidenceItem("photo", "f")])
    out = texts.render("en", "review", draft=draft, offer_notify=False)
    assert "&lt;script&gt;" in out and "a &amp; b" in out and "&lt;b&gt;x&lt;/b&gt;" in out
    assert "<script>" not in out


def test_button_labels_are_not_escaped() -> None:
    texts = Texts(make_config())
    assert texts.button("en", "category", name="Food & drink") == "Food & drink"


def test_missing_values_raise_instead_of_rendering_blank() -> None:
    texts = Texts(make_config())
    with pytest.raises(UndefinedError):
        texts.msg("en", "too_long", limit=10)
    with pytest.raises(KeyError):
        texts.msg("en", "no_such_message")


def test_local_time_uses_the_campaign_zone() -> None:
    texts = Texts(make_config())
    assert texts.local_time(datetime(2026, 11, 26, 10, 0, tzinfo=UTC)) == "2026-11-26 18:00"


def test_zh_is_default_and_unknown_language_falls_back() -> None:
    texts = Texts(make_config())
    assert texts.msg("fr", "cancelled") == texts.msg("zh-CN", "cancelled")
    assert texts.msg("en", "cancelled") != texts.msg("zh-CN", "cancelled")


def test_split_respects_the_limit_and_keeps_every_character() -> None:
    body = "<b>title</b>\n" + "\n".join("line %d " % i + "字" * 90 for i in range(200))
    parts = split_html(body)
    assert len(parts) > 1
    assert all(visible_length(p) <= 4096 for p in parts)
    joined = "".join(re.sub(r"<[^>]+>", "", p) for p in parts).replace("\n", "")
    assert joined == re.sub(r"<[^>]+>", "", body).replace("\n", "")


def test_split_never_breaks_an_entity_or_leaves_a_tag_open() -> None:
    body = "<i>" + "&amp;" * 5000 + "</i>"
    parts = split_html(body, limit=1000)
    for p in parts:
        assert p.startswith("<i>") and p.endswith("</i>")
        assert re.fullmatch(r"<i>(&amp;)+</i>", p)
    assert sum(visible_length(p) for p in parts) == 5000


def test_visible_length_counts_utf16_units() -> None:
    assert visible_length("<b>😀</b>a&lt;") == 4


HOSTILE = ("<b>x</b>", "a & b", "{0}", "{}", "}{", "\"'", "&amp;", "", " ", "王某", "=1+1")


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_render_each_equals_the_macro_called_for_each_row(lang: str) -> None:
    """The bulletin's cases filled into the macro rendered once: the same text as calling
    the macro for each case, whatever the values hold (escaped as autoescape would)."""
    texts = Texts(make_config())
    case = texts.macro(lang, "bulletin_case", "case")
    listed = texts.macro(lang, "bulletin_case", "penalties")
    rows = [(i, HOSTILE[i % 11], HOSTILE[(i + 1) % 11], HOSTILE[(i + 2) % 11], HOSTILE[(i + 5) % 11],
             "2026-07-01", i % 4 + 1, listed(["self_criticism", "<odd>"][: i % 3]))
            for i in range(1, 50)]
    filled = texts.render_each(lang, "bulletin_case", "case", rows)
    assert filled == "".join(str(case(*row)) for row in rows)
    assert "&lt;b&gt;x&lt;/b&gt;" in filled and "a &amp; b" in filled and "&amp;amp;" in filled
    assert "&lt;odd&gt;" in filled  # the penalty list's own escaping stands (Markup is not escaped twice)


def test_render_each_refuses_a_macro_that_does_more_than_print_its_arguments(tmp_path: Any) -> None:
    for lang in ("zh-CN", "en"):
        (tmp_path / lang).mkdir()
        (tmp_path / lang / "rows.html").write_text(
            "{% macro plain(a, b) %}<i>{{ a }}</i>{0} {{ b }}{{ a }} {1}\n{% endmacro %}"
            "{% macro tested(a) %}{% if a %}{{ a }}{% else %}none{% endif %}{% endmacro %}"
            "{% macro filtered(a) %}{{ a|upper }}{% endmacro %}", "utf-8")
    texts = Texts(make_config(), tmp_path)
    filled = texts.render_each("en", "rows", "plain", [("<", 1), ("x", "&")])
    assert filled == "<i>&lt;</i>{0} 1&lt; {1}\n<i>x</i>{0} &amp;x {1}\n"
    for name in ("tested", "filtered"):
        with pytest.raises(ValueError, match="print its arguments as they are"):
            texts.render_each("en", "rows", name, [("",)])
    with pytest.raises(TypeError):
        texts.render_each("en", "rows", "plain", [("only one",)])
