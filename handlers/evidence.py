"""Evidence received in a private chat: cleaned before anyone else sees it.

One call per file (`accept`), from every place that receives evidence: the citizen's
report, their additions and answers through the receipt code, and the office's /enter.

- A file that can be cleaned is downloaded (getFile), rebuilt without metadata in a
  thread (bot/evidence_clean.py) and uploaded again to the same chat under a neutral
  name, captioned "this is exactly what the inspection team will receive". The clean
  copy's file id is what is kept (and later sent to staff); the original's is dropped.
- What cannot be cleaned is kept only with a plain warning and a Withdraw button (`warn`).
- Voice messages are refused when `intake.voice = "refuse"`.

Nothing here logs a file, a name or a chat: a failure is logged by its kind only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from telegram import InputFile, Message
from telegram.error import BadRequest, NetworkError

from bot import evidence_clean
from bot.drafts import EvidenceItem
from bot.services.outbox import Button
from handlers.common import Context, deps_of, reply

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT = 60.0
UPLOAD_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Incoming:
    """A file as Telegram describes it in the message."""

    kind: str  # photo | document | video | voice | audio
    file_id: str
    caption: str | None
    mime: str | None
    file_name: str | None
    size: int | None


@dataclass(frozen=True, slots=True)
class Taken:
    """The outcome of `take`: an item to keep (clean, or to be warned about), or nothing."""

    item: EvidenceItem | None
    reason: str | None = None  # why it could not be cleaned (then `warn` must follow)


def incoming_of(message: Message) -> Incoming | None:
    caption = message.caption
    if message.photo:
        p = message.photo[-1]
        return Incoming("photo", p.file_id, caption, "image/jpeg", None, p.file_size)
    for kind in ("video", "voice", "audio", "document"):
        media = getattr(message, kind, None)
        if media is not None:
            return Incoming(kind, media.file_id, caption, getattr(media, "mime_type", None),
                            getattr(media, "file_name", None), media.file_size)
    return None


async def take(update: object, context: Context, lang: str, incoming: Incoming, number: int) -> Taken:
    """Clean one file and show the tipster the clean copy; or say why it cannot be.
    `number` names the clean copy (evidence-<number>.<ext>)."""
    deps = deps_of(context)
    if incoming.kind == "voice" and deps.config.intake.voice == "refuse":
        await reply(update, context, deps.texts.msg(lang, "evidence_voice_refused"))  # type: ignore[arg-type]
        return Taken(None)
    reason = evidence_clean.precheck(incoming.kind, incoming.mime, incoming.file_name, incoming.size)
    if reason is None:
        try:
            data = await _download(context, incoming.file_id)
            cleaned = await asyncio.to_thread(evidence_clean.clean, data)
        except evidence_clean.Uncleanable as exc:
            reason = exc.reason
        except BadRequest as exc:
            if "too big" not in exc.message.lower():
                raise
            reason = evidence_clean.TOO_BIG
        except NetworkError:
            log.warning("evidence download failed (network)")
            await reply(update, context, deps.texts.msg(lang, "evidence_fetch_failed"))  # type: ignore[arg-type]
            return Taken(None)
        else:
            return Taken(await _show_clean_copy(update, context, lang, incoming, cleaned, number))
    item = EvidenceItem(incoming.kind, incoming.file_id, incoming.caption, cleaned=False,
                        token=secrets.token_urlsafe(6))
    return Taken(item, reason)


async def warn(update: object, context: Context, lang: str, taken: Taken,
               make: Callable[[str, str], Button]) -> None:
    """The plain warning for a file kept uncleaned, with Withdraw / Keep buttons.
    `make(label, payload)` builds a button of the calling flow."""
    deps = deps_of(context)
    assert taken.item is not None and taken.item.token is not None and taken.reason is not None
    token = taken.item.token
    rows = [[make("evidence_withdraw", f"wd:{token}"), make("evidence_keep", f"keep:{token}")]]
    await reply(update, context, deps.texts.msg(lang, "evidence_uncleanable", reason=taken.reason), rows)  # type: ignore[arg-type]


async def accept(update: object, context: Context, lang: str, incoming: Incoming, number: int,
                 make: Callable[[str, str], Button]) -> EvidenceItem | None:
    """`take`, then `warn` if the file cannot be cleaned: the one call a flow makes for each
    file. Returns the item to keep, or None (the person has been told why). The warning goes
    out before the caller keeps the item; its buttons act only on a later update of the same
    chat, which is handled after this one."""
    taken = await take(update, context, lang, incoming, number)
    if taken.item is not None and taken.reason is not None:
        await warn(update, context, lang, taken, make)
    return taken.item


def withdraw(items: list[EvidenceItem], token: str) -> bool:
    """Remove the uncleaned item named by `token` from a draft's list; False if not there."""
    for i, item in enumerate(items):
        if item.token is not None and item.token == token:
            del items[i]
            return True
    return False


def notice(context: Context, lang: str) -> str:
    """What happens to files, for the prompts that ask for evidence."""
    deps = deps_of(context)
    return deps.texts.msg(lang, "evidence_notice", voice=deps.config.intake.voice)


async def _download(context: Context, file_id: str) -> bytes:
    file = await context.bot.get_file(file_id, read_timeout=DOWNLOAD_TIMEOUT)
    if file.file_size is not None and file.file_size > evidence_clean.DOWNLOAD_LIMIT:
        raise evidence_clean.Uncleanable(evidence_clean.TOO_BIG)
    return bytes(await file.download_as_bytearray(read_timeout=DOWNLOAD_TIMEOUT))


async def _show_clean_copy(update: object, context: Context, lang: str, incoming: Incoming,
                           cleaned: evidence_clean.Cleaned, number: int) -> EvidenceItem:
    deps = deps_of(context)
    chat = getattr(update, "effective_chat", None)
    assert chat is not None
    name = evidence_clean.neutral_name(number, cleaned.extension)
    caption = deps.texts.msg(lang, "evidence_clean_copy", name=name)
    upload = InputFile(cleaned.data, filename=name, attach=False)
    if incoming.kind == "photo" and cleaned.photo:
        sent = await context.bot.send_photo(chat.id, upload, caption=caption, parse_mode="HTML",
                                            write_timeout=UPLOAD_TIMEOUT, read_timeout=UPLOAD_TIMEOUT)
        return EvidenceItem("photo", sent.photo[-1].file_id, incoming.caption)
    sent = await context.bot.send_document(chat.id, upload, caption=caption, parse_mode="HTML",
                                           disable_content_type_detection=True,
                                           write_timeout=UPLOAD_TIMEOUT, read_timeout=UPLOAD_TIMEOUT)
    assert sent.document is not None
    return EvidenceItem("document", sent.document.file_id, incoming.caption)
