"""Builders for realistic Bot API JSON objects (User, Chat, files, entities).

Everything here is plain ``dict`` data exactly as the Bot API would put it on
the wire, so it can be fed to PTB (``Update.de_json``) or compared in tests.
"""

from __future__ import annotations

import base64
import mimetypes
import random
import re
from dataclasses import dataclass, field
from typing import Any

from bot.fakeapi.textparse import utf16_len

__all__ = [
    "FileRegistry",
    "StoredFile",
    "command_entities",
    "make_chat_for_user",
    "make_group",
    "make_user",
]

JSON = dict[str, Any]

# Real file_ids start with a type-specific prefix; we mimic that so that a
# photo id can't be mistaken for a document id when reading test output.
FILE_ID_PREFIX: dict[str, str] = {
    "photo": "AgACAgIAAxkBAA",
    "document": "BQACAgIAAxkBAA",
    "video": "BAACAgIAAxkBAA",
    "voice": "AwACAgIAAxkBAA",
    "audio": "CQACAgIAAxkBAA",
    "animation": "CgACAgIAAxkBAA",
    "sticker": "CAACAgIAAxkBAA",
    "video_note": "DQACAgIAAxkBAA",
}
UNIQUE_ID_PREFIX = "AQAD"

_COMMAND_RE = re.compile(r"(?:(?<=\s)|^)/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?(?=\s|$)")


def make_user(
    user_id: int,
    first_name: str,
    username: str | None = None,
    last_name: str | None = None,
    language_code: str | None = "zh-hans",
    *,
    is_bot: bool = False,
) -> JSON:
    """A Bot API ``User`` object."""
    user: JSON = {"id": int(user_id), "is_bot": is_bot, "first_name": first_name}
    if last_name is not None:
        user["last_name"] = last_name
    if username is not None:
        user["username"] = username
    if language_code is not None:
        user["language_code"] = language_code
    return user


def make_chat_for_user(user: JSON) -> JSON:
    """The private ``Chat`` between the bot and ``user``."""
    chat: JSON = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
    for key in ("last_name", "username"):
        if key in user:
            chat[key] = user[key]
    return chat


def make_group(chat_id: int, title: str, chat_type: str | None = None) -> JSON:
    """A group ``Chat``: ids of the form -100… are supergroups, others basic groups."""
    chat_id = int(chat_id)
    if chat_id >= 0:
        raise ValueError(f"group chat ids are negative, got {chat_id}")
    if chat_type is None:
        chat_type = "supergroup" if str(chat_id).startswith("-100") else "group"
    if chat_type not in ("group", "supergroup", "channel"):
        raise ValueError(f"bad group chat type {chat_type!r}")
    return {"id": chat_id, "type": chat_type, "title": title}


def command_entities(text: str | None) -> list[JSON]:
    """``bot_command`` entities for every /command in ``text`` (as Telegram adds them)."""
    if not text or "/" not in text:
        return []
    return [
        {
            "type": "bot_command",
            "offset": utf16_len(text[: m.start()]),
            "length": utf16_len(m.group()),
        }
        for m in _COMMAND_RE.finditer(text)
    ]


@dataclass
class StoredFile:
    """A file the fake server knows about (by any of its file_ids)."""

    kind: str
    file_id: str
    file_unique_id: str
    file_size: int
    file_name: str | None = None
    mime_type: str | None = None
    content: bytes | None = None
    file_path: str = ""
    #: for photos: every PhotoSize of the photo, smallest first
    sizes: list[JSON] = field(default_factory=list)
    #: learnt from a pushed update rather than created by this registry
    adopted: bool = False


_PLACEHOLDER_JPEG: list[bytes] = []


def placeholder_jpeg() -> bytes:
    """A 32x24 grey JPEG (made once, with Pillow)."""
    if not _PLACEHOLDER_JPEG:
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (32, 24), (128, 128, 128)).save(buf, "JPEG")
        _PLACEHOLDER_JPEG.append(buf.getvalue())
    return _PLACEHOLDER_JPEG[0]


class FileRegistry:
    """Allocates unique, realistic-looking file ids and remembers them.

    ``file_id`` values are unique per file *and* per size for photos; a file
    reused via its file_id keeps its ``file_unique_id`` (as on Telegram).
    """

    #: Uploaded content up to this size is kept for the /file download route.
    KEEP_CONTENT_BYTES = 512 * 1024

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._counter = 0
        self._by_id: dict[str, StoredFile] = {}
        self._by_path: dict[str, StoredFile] = {}

    def __contains__(self, file_id: object) -> bool:
        return file_id in self._by_id

    def get(self, file_id: str) -> StoredFile | None:
        return self._by_id.get(file_id)

    def by_path(self, file_path: str) -> StoredFile | None:
        return self._by_path.get(file_path)

    def _token(self, nbytes: int) -> str:
        self._counter += 1
        raw = self._counter.to_bytes(6, "big") + self._rng.randbytes(nbytes)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def new_ids(self, kind: str) -> tuple[str, str]:
        """A fresh ``(file_id, file_unique_id)`` pair for a file of ``kind``."""
        prefix = FILE_ID_PREFIX.get(kind, "BQACAgIAAxkBAA")
        return prefix + self._token(30), UNIQUE_ID_PREFIX + self._token(6)

    def register(
        self,
        kind: str,
        *,
        file_name: str | None = None,
        mime_type: str | None = None,
        content: bytes | None = None,
        file_size: int | None = None,
    ) -> StoredFile:
        """Create a new file of ``kind`` (photos get two PhotoSizes; a photo pushed without
        content gets a small real JPEG, so that a bot can download and decode it)."""
        if kind == "photo" and content is None and file_size is None:
            content = placeholder_jpeg()
        file_id, unique_id = self.new_ids(kind)
        size = file_size if file_size is not None else (
            len(content) if content is not None else self._rng.randint(10_000, 900_000)
        )
        if mime_type is None and file_name:
            mime_type = mimetypes.guess_type(file_name)[0] or "application/octet-stream"
        ext = (file_name.rsplit(".", 1)[-1] if file_name and "." in file_name else "bin")
        folder = {"photo": "photos", "voice": "voice", "video": "videos"}.get(kind, "documents")
        stored = StoredFile(
            kind=kind,
            file_id=file_id,
            file_unique_id=unique_id,
            file_size=size,
            file_name=file_name,
            mime_type=mime_type,
            content=content if content is not None and len(content) <= self.KEEP_CONTENT_BYTES
            else None,
            file_path=f"{folder}/file_{self._counter}.{'jpg' if kind == 'photo' else ext}",
        )
        if kind == "photo":
            thumb_id, thumb_unique = self.new_ids("photo")
            stored.sizes = [
                {"file_id": thumb_id, "file_unique_id": thumb_unique,
                 "file_size": max(1, size // 20), "width": 90, "height": 67},
                {"file_id": file_id, "file_unique_id": unique_id,
                 "file_size": size, "width": 1280, "height": 960},
            ]
            self._by_id[thumb_id] = stored
        self._by_id[file_id] = stored
        self._by_path[stored.file_path] = stored
        return stored

    def adopt(self, obj: Any, kind: str = "document") -> None:
        """Register every ``file_id`` found in a raw (user-supplied) JSON object."""
        if isinstance(obj, dict):
            fid = obj.get("file_id")
            if isinstance(fid, str) and fid not in self._by_id:
                self._counter += 1
                stored = StoredFile(
                    kind=kind,
                    file_id=fid,
                    file_unique_id=str(obj.get("file_unique_id", UNIQUE_ID_PREFIX + fid[-8:])),
                    file_size=int(obj.get("file_size", 0) or 0),
                    file_name=obj.get("file_name"),
                    mime_type=obj.get("mime_type"),
                    file_path=f"documents/adopted_{self._counter}",
                    adopted=True,
                )
                self._by_id[fid] = stored
                self._by_path[stored.file_path] = stored
            for key, value in obj.items():
                self.adopt(value, key if key in FILE_ID_PREFIX else kind)
        elif isinstance(obj, list):
            for value in obj:
                self.adopt(value, kind)

    # ---- JSON views -------------------------------------------------------

    @staticmethod
    def media_json(stored: StoredFile) -> Any:
        """The Message field value for ``stored`` (a list of PhotoSize for photos)."""
        if stored.kind == "photo":
            if stored.sizes:
                return [dict(s) for s in stored.sizes]
            return [{"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                     "file_size": stored.file_size, "width": 1280, "height": 960}]
        obj: JSON = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.file_size,
        }
        if stored.kind in ("document", "audio", "video", "animation") and stored.file_name:
            obj["file_name"] = stored.file_name
        if stored.kind in ("document", "audio", "video", "animation", "voice") and stored.mime_type:
            obj["mime_type"] = stored.mime_type
        if stored.kind in ("video", "animation"):
            obj.update(width=1280, height=720, duration=12)
        elif stored.kind in ("voice", "audio"):
            obj["duration"] = 7
        elif stored.kind == "video_note":
            obj.update(length=240, duration=9)
        elif stored.kind == "sticker":
            obj.update(type="regular", width=512, height=512, is_animated=False,
                       is_video=False, emoji="👍")
        return obj
