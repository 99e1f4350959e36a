"""The one error handler: report the exception, never the update (it may name a tipster)."""

from __future__ import annotations

import contextlib
import logging

from telegram import Update
from telegram.error import TelegramError

from bot import metrics
from handlers.common import Context, deps_of, person_lang, reply

log = logging.getLogger("tipline.errors")


async def on_error(update: object, context: Context) -> None:
    update_id = update.update_id if isinstance(update, Update) else None
    metrics.HANDLER_FAILURES.inc()
    error = context.error
    # exc_info gives the traceback; the update itself is never formatted into the log.
    log.error("handler error (journal entry %s): %s", update_id, type(error).__name__,
              exc_info=(type(error), error, error.__traceback__) if error else None)
    poller = context.bot_data.get("poller")
    if poller is not None and update_id is not None:
        poller.failed_updates.add(update_id)
    if isinstance(update, Update) and update.effective_chat is not None and update.callback_query is None:
        deps = deps_of(context)
        with contextlib.suppress(TelegramError):
            await reply(update, context, deps.texts.msg(_lang(update, context), "error_generic"))


def _lang(update: Update, context: Context) -> str:
    try:
        return person_lang(update, context)
    except Exception:  # the database may be what failed
        return deps_of(context).config.campaign.default_language
