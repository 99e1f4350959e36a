"""Every text a user sees comes from templates/<language>/ (Jinja2).

- `*.html` templates are autoescaped: they are sent with parse_mode HTML.
- `buttons.txt` holds button labels as macros, not escaped (buttons are plain text).
- `messages.html` holds short messages as macros; longer texts have a file each.
Undefined variables raise (StrictUndefined): a missing value is a bug, not a blank.
"""

from __future__ import annotations

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

    def _macro(self, lang: str, stem: str, suffix: str, name: str) -> Any:
        lang = _lang(lang)
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
