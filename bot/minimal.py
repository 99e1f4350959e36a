"""The least of an update that tipline's handlers need to replay it.

The update journal keeps an update only until it is handled, sealed under a key that is
destroyed soon after; still, it keeps no more than the handlers read. Kept: ids (update,
message, chat, sender: to answer and to look staff up), the chat's type (and a group's
title, which binding a team's group records), the text and its command entities, the file
ids of media (with their type, size and file name extension: evidence is judged by
them), a callback query's id, data and message (with the bot's own buttons), and a
bot's membership changes. Dropped: names, usernames, phone numbers, locations, forwards,
replies, captions' formatting and everything else. A sender's language becomes the one
tipline would pick from it ("en" or "zh"), and a name is kept only on a private `/join`
whose code is of the form tipline makes (staff joining are named to their team; they are
not anonymous): a citizen's mistyped /join, or one in a group, leaves no name behind.
"""

from __future__ import annotations

from typing import Any

from bot.domain.invite import could_be_invite

MEDIA = ("photo", "video", "voice", "audio", "document")
# Kinds the citizens' handlers refuse by name: kept as an empty shell of the same kind.
SHELLS = ("sticker", "location", "venue", "contact", "poll", "dice", "game", "video_note", "animation", "story")
FILE_FIELDS = ("file_id", "file_unique_id", "width", "height", "duration", "length", "mime_type", "file_size")


def _language(code: object) -> str | None:
    text = str(code or "")
    if text.startswith("en"):
        return "en"
    if text.startswith("zh"):
        return "zh"
    return None


def _user(data: dict[str, Any] | None, *, named: bool = False) -> dict[str, Any] | None:
    if data is None:
        return None
    user: dict[str, Any] = {"id": data["id"], "is_bot": bool(data.get("is_bot")), "first_name": ""}
    if named:
        user["first_name"] = data.get("first_name") or ""
        if data.get("last_name"):
            user["last_name"] = data["last_name"]
    lang = _language(data.get("language_code"))
    if lang is not None:
        user["language_code"] = lang
    return user


def _chat(data: dict[str, Any]) -> dict[str, Any]:
    chat = {"id": data["id"], "type": data["type"]}
    if data["type"] != "private" and data.get("title"):
        chat["title"] = data["title"]  # a group's name, recorded when a team binds it
    return chat


def _file(data: dict[str, Any]) -> dict[str, Any]:
    kept = {k: data[k] for k in FILE_FIELDS if k in data}
    name = data.get("file_name")
    if isinstance(name, str):  # the kind of file is judged by its extension; the name is not kept
        ext = name.rsplit(".", 1)[-1] if "." in name else ""
        kept["file_name"] = f"file.{ext}" if ext.isalnum() and len(ext) <= 10 else "file"
    return kept


def _shell(value: Any) -> Any:
    """The same structure with every string emptied and every number zeroed."""
    if isinstance(value, dict):
        return {k: _shell(v) for k, v in value.items()}
    if isinstance(value, list):
        return []
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return 0
    return ""


def _minute(timestamp: object) -> int:
    value = int(timestamp or 0)
    return value - value % 60


def _joins(data: dict[str, Any]) -> bool:
    """A /join that can make its sender staff: only then is their name read (and stored)."""
    text = data.get("text")
    if not isinstance(text, str) or data["chat"].get("type") != "private":
        return False  # a group's /join binds the group: nobody's name is taken
    words = text.split()  # as the command handler splits it: the command, then the code's parts
    return bool(words) and (words[0] == "/join" or words[0].startswith("/join@")) and could_be_invite(
        "".join(words[1:]))


def _message(data: dict[str, Any], *, keep_markup: bool = False) -> dict[str, Any]:
    text = data.get("text")
    named = _joins(data)
    message: dict[str, Any] = {
        "message_id": data["message_id"],
        "date": _minute(data.get("date")),
        "chat": _chat(data["chat"]),
    }
    if "from" in data:
        message["from"] = _user(data["from"], named=named)
    if isinstance(text, str):
        message["text"] = text
        commands = [{k: e[k] for k in ("type", "offset", "length")}
                    for e in data.get("entities") or [] if e.get("type") == "bot_command"]
        if commands:
            message["entities"] = commands
    if data.get("caption") is not None:
        message["caption"] = data["caption"]
    if data.get("photo"):
        message["photo"] = [_file(data["photo"][-1])]
    for kind in MEDIA[1:]:
        if data.get(kind):
            message[kind] = _file(data[kind])
    for kind in SHELLS:
        if data.get(kind):
            message[kind] = _shell(data[kind])
    if keep_markup and data.get("reply_markup"):
        message["reply_markup"] = {"inline_keyboard": [
            [{"text": b.get("text", ""), "callback_data": b["callback_data"]} for b in row if "callback_data" in b]
            for row in data["reply_markup"].get("inline_keyboard", [])
        ]}
    return message


def _member(data: dict[str, Any]) -> dict[str, Any]:
    member = {k: v for k, v in data.items() if k != "user"}
    member["user"] = _user(data["user"])
    return member


def minimal_update(data: dict[str, Any]) -> dict[str, Any]:
    """A Bot API update (as a dict) reduced to what tipline's handlers read."""
    out: dict[str, Any] = {"update_id": data["update_id"]}
    if "message" in data:
        out["message"] = _message(data["message"])
    elif "edited_message" in data:
        out["edited_message"] = _message(data["edited_message"])
    elif "callback_query" in data:
        query = data["callback_query"]
        kept: dict[str, Any] = {
            "id": query["id"],
            "from": _user(query["from"]),
            "chat_instance": query.get("chat_instance", ""),
        }
        for field in ("data", "inline_message_id"):
            if query.get(field) is not None:
                kept[field] = query[field]
        if query.get("message"):
            kept["message"] = _message(query["message"], keep_markup=True)
        out["callback_query"] = kept
    elif "my_chat_member" in data:
        change = data["my_chat_member"]
        out["my_chat_member"] = {
            "chat": _chat(change["chat"]),
            "from": _user(change["from"]),
            "date": _minute(change.get("date")),
            "old_chat_member": _member(change["old_chat_member"]),
            "new_chat_member": _member(change["new_chat_member"]),
        }
    return out


def chat_of(data: dict[str, Any]) -> tuple[str, int]:
    """Whose update it is (in memory only: it keeps one chat's updates in order)."""
    for kind in ("message", "edited_message", "my_chat_member"):
        if kind in data:
            return ("chat", int(data[kind]["chat"]["id"]))
    query = data.get("callback_query")
    if query is not None:
        message = query.get("message")
        return ("chat", int(message["chat"]["id"])) if message else ("user", int(query["from"]["id"]))
    return ("update", int(data.get("update_id") or 0))
