"""What the journal keeps of a /join: the sender's name only where it can make them staff."""

from __future__ import annotations

from typing import Any

import pytest

from bot.domain.invite import could_be_invite, new_invite_code, normalize_invite
from bot.minimal import minimal_update

FIRST, LAST = "Ximena", "Quillfeather"


def message(text: str, chat_type: str = "private") -> dict[str, Any]:
    chat = {"id": -1001 if chat_type != "private" else 42, "type": chat_type, "title": "team 1"}
    return {"update_id": 1, "message": {"message_id": 9, "date": 1772415037, "chat": chat, "text": text,
                                        "from": {"id": 42, "is_bot": False, "first_name": FIRST, "last_name": LAST}}}


def kept_name(text: str, chat_type: str = "private") -> tuple[str, str | None]:
    user = minimal_update(message(text, chat_type))["message"]["from"]
    return user["first_name"], user.get("last_name")


@pytest.mark.parametrize("text", ["/join ABCD-EFGH-JKMN", "/join abcd efgh jkmn", "/join@tipline_bot ABCDEFGHJKMN",
                                  "/join  ABCD-EFGH-JKMN\n"])
def test_a_join_with_a_code_of_tiplines_form_keeps_the_name(text: str) -> None:
    assert kept_name(text) == (FIRST, LAST)


@pytest.mark.parametrize(("text", "chat_type"), [
    ("/join WRONG", "private"), ("/join", "private"), ("/join ABCD-EFGH-JKM", "private"),
    ("/join ABCD-EFGH-JKMN-P", "private"), ("/join ABCD-EFGH-JKM0", "private"), ("/join ＡＢＣＤ-EFGH-JKMN", "private"),
    ("/joinABCD-EFGH-JKMN", "private"), ("hello /join ABCD-EFGH-JKMN", "private"), ("ABCD-EFGH-JKMN", "private"),
    ("/join ABCD-EFGH-JKMN", "group"), ("/join ABCD-EFGH-JKMN", "supergroup")])
def test_any_other_message_leaves_no_name(text: str, chat_type: str) -> None:
    assert kept_name(text, chat_type) == ("", None)


def test_every_code_tipline_makes_is_of_its_form() -> None:
    for _ in range(200):
        code = new_invite_code()
        assert could_be_invite(code) and could_be_invite(code.lower()) and len(normalize_invite(code)) == 12
