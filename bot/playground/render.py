"""A Bot API Message as the page shows it: its text with the entities as HTML, its media,
its inline keyboard, whether it was edited or is protected."""

from __future__ import annotations

from collections import defaultdict
from html import escape
from typing import Any

_TAGS = {"bold": "b", "italic": "i", "underline": "u", "strikethrough": "s", "code": "code", "pre": "pre",
         "blockquote": "blockquote", "expandable_blockquote": "blockquote", "spoiler": "span"}
_MEDIA = ("photo", "document", "video", "voice", "audio", "animation", "sticker", "video_note", "location",
          "contact")


def _open(entity: dict[str, Any], text: str) -> str:
    kind = entity.get("type")
    if kind == "text_link":
        url = str(entity.get("url", ""))
        if url.startswith(("http://", "https://", "tg://")):
            return f'<a href="{escape(url)}" rel="noopener noreferrer" target="_blank">'
        return "<span>"
    if kind == "url":
        return f'<a href="{escape(text)}" rel="noopener noreferrer" target="_blank">' if text.startswith(
            ("http://", "https://")) else "<span>"
    if kind == "spoiler":
        return '<span class="spoiler">'
    tag = _TAGS.get(str(kind))
    return f"<{tag}>" if tag else "<span>"


def _close(entity: dict[str, Any], text: str) -> str:
    kind = entity.get("type")
    if kind in ("text_link", "url"):
        return "</a>" if _open(entity, text).startswith("<a") else "</span>"
    tag = _TAGS.get(str(kind))
    return f"</{tag}>" if tag and kind != "spoiler" else "</span>"


def entities_html(text: str, entities: list[dict[str, Any]] | None) -> str:
    """Escaped text with Telegram's entities (UTF-16 offsets) as nested HTML tags."""
    data = text.encode("utf-16-le")
    size = len(data) // 2

    def part(a: int, b: int) -> str:
        return data[a * 2:b * 2].decode("utf-16-le", errors="replace")

    opens: dict[int, list[dict[str, Any]]] = defaultdict(list)
    closes: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in entities or []:
        start = max(0, int(e.get("offset", 0)))
        end = min(size, start + int(e.get("length", 0)))
        if end > start:
            opens[start].append(e)
            closes[end].append(e)
    out: list[str] = []
    pos = 0
    for b in sorted({0, size, *opens, *closes}):
        if b > pos:
            out.append(escape(part(pos, b)))
            pos = b
        for e in sorted(closes.get(b, []), key=lambda e: (-int(e["offset"]), int(e["length"]))):
            s = int(e["offset"])
            out.append(_close(e, part(s, s + int(e["length"]))))
        for e in sorted(opens.get(b, []), key=lambda e: -int(e["length"])):
            out.append(_open(e, part(b, b + int(e["length"]))))
    return "".join(out)


def message_view(msg: dict[str, Any], bot_id: int) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": int(msg["message_id"]),
        "from_bot": (msg.get("from") or {}).get("id") == bot_id,
        "sender": (msg.get("from") or {}).get("first_name", ""),
        "sender_id": (msg.get("from") or {}).get("id"),
        "edited": "edit_date" in msg,
        "protected": bool(msg.get("has_protected_content")),
        "html": "",
        "buttons": [],
    }
    if "text" in msg:
        view["html"] = entities_html(msg["text"], msg.get("entities"))
    elif "caption" in msg:
        view["html"] = entities_html(msg["caption"], msg.get("caption_entities"))
    for kind in _MEDIA:
        if kind in msg:
            obj = msg[kind]
            if kind == "photo":
                view["photo"] = obj[-1]["file_id"]
            elif isinstance(obj, dict) and "file_id" in obj:
                view["file"] = {"kind": kind, "id": obj["file_id"], "name": obj.get("file_name") or kind,
                                "size": obj.get("file_size")}
            else:
                view["file"] = {"kind": kind, "id": None, "name": kind, "size": None}
            break
    reply = msg.get("reply_to_message")
    if isinstance(reply, dict):
        view["reply_to"] = (reply.get("text") or reply.get("caption") or "")[:80]
    for row in (msg.get("reply_markup") or {}).get("inline_keyboard") or []:
        view["buttons"].append([{"text": b.get("text", ""), "data": b.get("callback_data"), "url": b.get("url")}
                                for b in row])
    return view
