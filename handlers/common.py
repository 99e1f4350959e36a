"""What every handler needs: the typed context, the application's deps, safe replies."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import Any

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions, Update
from telegram.error import BadRequest, Forbidden, NetworkError
from telegram.ext import Application, CallbackContext, ExtBot

from bot.deps import Deps
from bot.domain.text import normalise
from bot.services.outbox import Button
from bot.services.staff import staff_by_user
from bot.splitting import split_html


NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
NO_PREVIEW_JSON = NO_PREVIEW.to_dict()
REPLY_ATTEMPTS = 3


class BotData(dict[str, Any]):
    """bot_data holds the application's Deps under "deps"."""


# Chat and user data stay empty: a tipster's state lives in the pseudonymous SessionStore.
Context = CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], BotData]
TiplineApp = Application[ExtBot[None], Context, dict[Any, Any], dict[Any, Any], BotData, Any]


def deps_of(context: Context) -> Deps:
    return context.bot_data["deps"]


def keyboard(rows: list[list[Button]] | None) -> InlineKeyboardMarkup | None:
    if not rows:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(b.text, callback_data=b.data) for b in row] for row in rows])


def keyboard_json(rows: list[list[Button]] | None) -> dict[str, Any] | None:
    """The Bot API's form of `keyboard(rows)` (None: no keyboard)."""
    if not rows:
        return None
    return {"inline_keyboard": [[{"text": b.text, "callback_data": b.data} for b in row] for row in rows]}


async def post(bot: Bot, method: str, params: dict[str, Any]) -> None:
    """A Bot API call whose answer nobody reads. python-telegram-bot's own methods build
    the returned Message (or other object) from its JSON, a tenth of the event loop's time
    per update; this goes the same way otherwise (the application's rate limiter, request
    class and timeouts) and raises the same errors (BadRequest, Forbidden, RetryAfter...)."""
    await bot._post(method, params)  # noqa: SLF001 - PTB's one request path, without the parsing


async def reply(
    update: Update,
    context: Context,
    text: str,
    buttons: list[list[Button]] | None = None,
    *,
    protect: bool = False,
) -> None:
    """Answer in the update's chat; long texts are split, buttons go with the last part."""
    chat = update.effective_chat
    if chat is None:
        return
    await send(context.bot, chat.id, text, buttons, protect=protect)


async def send(
    bot: Bot,
    chat_id: int,
    text: str,
    buttons: list[list[Button]] | None = None,
    *,
    protect: bool = False,
) -> None:
    """Send to a chat now (not through the outbox): long texts are split, buttons go with
    the last part, network errors are retried a few times, then raised."""
    parts = split_html(text)
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        for attempt in range(REPLY_ATTEMPTS):
            try:
                await post(bot, "sendMessage", {
                    "chat_id": chat_id,
                    "text": part,
                    "parse_mode": "HTML",
                    "reply_markup": keyboard_json(buttons) if last else None,
                    "protect_content": protect,
                    "link_preview_options": NO_PREVIEW_JSON,
                })
                break
            except (BadRequest, Forbidden):
                raise
            except NetworkError:  # 5xx, timeouts: the person is waiting, try again soon
                if attempt == REPLY_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)


def initial_lang(deps: Deps, update: Update) -> str:
    """A newcomer's language, from their Telegram app's language."""
    code = (update.effective_user.language_code or "") if update.effective_user else ""
    if code.startswith("en"):
        return "en"
    if code.startswith("zh"):
        return "zh-CN"
    return deps.config.campaign.default_language


def person_lang(update: Update, context: Context) -> str:
    """The language to answer this person in: a staff member's own (set with /language);
    a citizen's, as chosen in this chat (kept in memory only); else their app's."""
    deps = deps_of(context)
    user, chat = update.effective_user, update.effective_chat
    if user is not None:
        with deps.sessions.begin() as session:
            member = staff_by_user(session, user.id)
            if member is not None:
                return member.language
    if chat is not None and chat.type == "private":
        session_ = deps.chats.peek(deps.keyring.pseudonym("chat", chat.id))
        if session_ is not None:
            return session_.lang
    return initial_lang(deps, update)


def private(update: Update) -> bool:
    return update.effective_chat is not None and update.effective_chat.type == "private"


def unit_pages(deps: Deps) -> int:
    return max(1, math.ceil(len(deps.config.units) / deps.config.intake.units_per_page))


def unit_picker(deps: Deps, lang: str, page: int, make: Callable[..., Button]) -> tuple[list[list[Button]], int]:
    """A page of unit buttons with Previous/Next and "other"; `make(label, payload, **kw)`
    builds a button of the calling flow. Returns the rows and the page actually shown."""
    per = deps.config.intake.units_per_page
    page = min(max(page, 0), unit_pages(deps) - 1)
    rows = [[make("unit", f"unit:{u.key}", name=u.name.get(lang))] for u in deps.config.units[page * per : (page + 1) * per]]
    nav = []
    if page > 0:
        nav.append(make("prev", f"upage:{page - 1}"))
    if page < unit_pages(deps) - 1:
        nav.append(make("next", f"upage:{page + 1}"))
    if nav:
        rows.append(nav)
    rows.append([make("other_unit", "unit:other")])
    return rows, page


async def checked_text(update: Update, context: Context, lang: str, text: str, maximum: int, minimum: int = 1
                       ) -> str | None:
    """The typed text, normalised (bot/domain/text.py: invisible characters removed, spaces
    tidied), if its length is within bounds; else None, after telling the person why (an
    overlong text is refused, never cut; a text of invisible characters is empty)."""
    deps = deps_of(context)
    value = normalise(text)
    if not value:
        await reply(update, context, deps.texts.msg(lang, "empty_text"))
    elif len(value) > maximum:
        await reply(update, context, deps.texts.msg(lang, "too_long", limit=maximum, length=len(value)))
    elif len(value) < minimum:
        await reply(update, context, deps.texts.msg(lang, "too_short", minimum=minimum, length=len(value)))
    else:
        return value
    return None


async def replace_keyboard(update: Update, rows: list[list[Button]]) -> None:
    """Swap the pressed message's buttons in place (e.g. another page of units)."""
    query = update.callback_query
    if query is not None and query.message is not None:
        with contextlib.suppress(BadRequest):
            await post(query.get_bot(), "editMessageReplyMarkup", {
                "chat_id": query.message.chat.id, "message_id": query.message.message_id,
                "reply_markup": keyboard_json(rows)})
