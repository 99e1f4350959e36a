"""Every text a user sees comes from templates/<language>/ (Jinja2).

- `*.html` templates are autoescaped: they are sent with parse_mode HTML.
- `buttons.txt` holds button labels as macros, not escaped (buttons are plain text).
- `messages.html` holds short messages as macros; longer texts have a file each.
Undefined variables raise (StrictUndefined): a missing value is a bug, not a blank.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from bot.config import LANGUAGES, Config

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


class Texts:
    def __init__(self, config: Config, directory: Path = TEMPLATES) -> None:
        self._config = config
        self.env = Environment(
            loader=FileSystemLoader(str(directory)),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True, default=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        # buttons.txt is plain text: a separate environment without escaping.
        self._plain = Environment(
            loader=FileSystemLoader(str(directory)),
            autoescape=False,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        for env in (self.env, self._plain):
            env.globals.update(
                category_name=self.category_name,
                unit_name=self.unit_name,
                team_name=self.team_name,
                campaign=config.campaign,
            )
            env.filters["local"] = self.local_time
        self._modules: dict[tuple[str, str], Any] = {}
        self._forms: dict[tuple[str, str, str], tuple[str, int]] = {}
        # A message's macro, found once: looking it up lists the template directory, which
        # cost about a millisecond per message sent (a tenth of an intake update's CPU).
        self._macros: dict[tuple[str, str, str, str], Any] = {}

    # Names from config ------------------------------------------------------------
    def category_name(self, key: str, lang: str) -> str:
        found = next((c for c in self._config.categories if c.key == key), None)
        return found.name.get(lang) if found else key

    def unit_name(self, key: str, lang: str, other: str | None = None) -> str:
        unit = self._config.unit(key)
        if unit is not None:
            return unit.name.get(lang)
        return other or key

    def team_name(self, number: int, lang: str) -> str:
        team = self._config.team(number)
        return team.name.get(lang) if team else f"#{number}"

    def local_time(self, value: datetime, fmt: str = "%Y-%m-%d %H:%M") -> str:
        return value.astimezone(self._config.campaign.tz).strftime(fmt)

    # Rendering --------------------------------------------------------------------
    def render(self, lang: str, name: str, /, **context: Any) -> str:
        template = self.env.get_template(f"{_lang(lang)}/{name}.html")
        return template.render(lang=_lang(lang), **context).strip()

    def msg(self, lang: str, name: str, /, **context: Any) -> str:
        """A short message: a macro of one of the messages*.html files."""
        return str(self._macro(lang, "messages", ".html", name)(**context)).strip()

    def button(self, lang: str, name: str, /, **context: Any) -> str:
        """A button label: a macro of one of the buttons*.txt files."""
        return str(self._macro(lang, "buttons", ".txt", name)(**context)).strip()

    def macro(self, lang: str, name: str, macro: str, /) -> Any:
        """A macro of templates/<lang>/<name>.html (autoescaped), to call with its arguments."""
        lang = _lang(lang)
        key = (lang, f"{name}.html")
        module = self._modules.get(key)
        if module is None:
            module = self._modules[key] = self.env.get_template(f"{lang}/{name}.html").make_module({"lang": lang})
        return getattr(module, macro)

    def render_each(self, lang: str, name: str, macro: str, rows: Iterable[Sequence[Any]], /) -> Markup:
        """`macro` of templates/<lang>/<name>.html for each row (its arguments in order),
        joined: what calling it once per row gives, at a fraction of the cost.

        The macro is rendered once with placeholders, then each row fills them with its
        values escaped as autoescape would (`markupsafe.escape`; Markup stays as it is).
        Ten thousand calls of a macro cost about a second; filling costs a few hundredths.
        So the macro must print its arguments as they are: a test, loop or filter on one
        would be applied to the placeholder, not to the row's value. A test on an argument
        is refused (the macro renders differently with empty arguments); a filter leaves
        no placeholder and is refused too."""
        key = (_lang(lang), name, macro)
        form = self._forms.get(key)
        if form is None:
            form = self._forms[key] = self._form(self.macro(lang, name, macro), f"{name}.html {macro}")
        fmt, width = form
        out = []
        for row in rows:
            if len(row) != width:
                raise TypeError(f"{name}.html {macro} takes {width} arguments, not {len(row)}")
            out.append(fmt.format(*[v if v.__class__ is int else _escape_fast(v) for v in row]))
        return Markup("".join(out))

    @staticmethod
    def _form(fn: Any, what: str) -> tuple[str, int]:
        """The macro's output as a format string: {0}, {1}, ... where its arguments go."""
        width = len(fn.arguments)
        pieces = str(fn(*[Markup(f"\x00v{i}\x00") for i in range(width)])).split("\x00")
        literals, fields = pieces[0::2], pieces[1::2]
        blank = str(fn(*[Markup("")] * width))
        if "".join(literals) != blank or not all(f in {f"v{i}" for i in range(width)} for f in fields):
            raise ValueError(f"{what} must print its arguments as they are (no test, loop or filter)")
        fmt = "".join(lit.replace("{", "{{").replace("}", "}}") + "{" + f[1:] + "}" for lit, f in zip(literals, fields))
        return fmt + literals[-1].replace("{", "{{").replace("}", "}}"), width

    def _macro(self, lang: str, stem: str, suffix: str, name: str) -> Any:
        lang = _lang(lang)
        key = (lang, stem, suffix, name)
        found = self._macros.get(key)
        if found is None:
            found = self._macros[key] = self._find_macro(lang, stem, suffix, name)
        return found

    def _find_macro(self, lang: str, stem: str, suffix: str, name: str) -> Any:
        for file in self._files(lang, stem, suffix):
            key = (lang, file)
            module = self._modules.get(key)
            if module is None:
                env = self._plain if suffix == ".txt" else self.env
                module = env.get_template(f"{lang}/{file}").make_module({"lang": lang})
                self._modules[key] = module
            macro = getattr(module, name, None)
            if macro is not None:
                return macro
        raise KeyError(f"templates/{lang}/{stem}*{suffix} have no macro {name!r}")

    def _files(self, lang: str, stem: str, suffix: str) -> list[str]:
        # messages.html first, then the files of each feature (messages_workflow.html, ...)
        names = self.env.list_templates(filter_func=lambda n: n.startswith(f"{lang}/{stem}") and n.endswith(suffix))
        return sorted((n.split("/", 1)[1] for n in names), key=lambda n: (n != f"{stem}{suffix}", n))


def _lang(lang: str) -> str:
    return lang if lang in LANGUAGES else LANGUAGES[0]


def escape(text: str) -> Markup:
    return Markup.escape(text)


_SPECIAL = re.compile(r"[&<>'\"]")


def _escape_fast(value: Any) -> str:
    """What autoescape prints for `value`: markupsafe's escape, skipped (one regex search
    instead of making a Markup) for the common text with nothing to escape."""
    if value.__class__ is str and _SPECIAL.search(value) is None:
        return value
    return str(Markup.escape(value))
