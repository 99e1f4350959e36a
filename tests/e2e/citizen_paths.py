"""Every path a citizen can take through tipline, for the anonymity tests.

`setup_staff` registers a team lead with a bound group, an office member and an official
(so that staff look-ups really happen); `other_paths` walks one citizen through every
path besides reporting a tip: commands meant for staff and officials, a wrong and a
right receipt code, an addition, forged and stale buttons, a handler that fails, and
blocking the bot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from tests.e2e.conftest import Harness

LEAD = 7_300_001
OFFICE = 7_300_002
OFFICIAL = 7_300_003
GROUP = -1_001_300_000_001
STAFF_CHATS = {LEAD, OFFICE, OFFICIAL, GROUP}


async def setup_staff(h: Harness) -> dict[str, dict[str, Any]]:
    srv = h.server
    lead = srv.user(LEAD, "Lead")
    office = srv.user(OFFICE, "Office")
    official = srv.user(OFFICIAL, "Official")
    h.add_staff(lead, "lead", 1)
    h.add_staff(office, "office", None)
    group = srv.group(GROUP, "第一督查组")
    srv.push_message(lead, f"/join {h.invite(group=True, team=1)}", chat=group)
    await h.expect(GROUP, "已绑定")
    await h.say(official, f"/join {h.invite(role='official')}", expect="")
    return {"lead": lead, "office": office, "official": official}


async def said(h: Harness, user: dict[str, Any], text: str, replies: int = 1, timeout: float = 10.0) -> None:
    """Send `text` and wait for at least `replies` more messages in the chat."""
    before = h.mark(user["id"])
    h.server.push_message(user, text)
    await h.server.wait_for(lambda: h.mark(user["id"]) >= before + replies, timeout,
                            message=f"{replies} replies to {text!r}")


async def pressed(h: Harness, user: dict[str, Any], message: Any, data: str) -> None:
    """A button press with the given data (forged or stale); waits for its answer."""
    before = len(h.server.callback_answers)
    h.server.push_callback(user, message, data)
    await h.server.wait_for(lambda: len(h.server.callback_answers) > before, 10.0, message=f"an answer to {data!r}")


async def other_paths(h: Harness, user: dict[str, Any], code: str, *, fail_once: bool = False,
                      block: bool = True) -> None:
    """One citizen, after reporting (receipt `code`), through every other path."""
    srv, k = h.server, h.deps.keyring
    for command in ("/help", "/settings", "/bulletins", "/unsubscribe", "/enter", "/staff", "/join WRONG-CODE-1234",
                    "/cancel", "/nonsense"):
        await said(h, user, command)
    await said(h, user, "/join")  # no code: the usage
    await said(h, user, "1234 5678 9012 3456")  # a wrong receipt code
    timeline = await h.say(user, code, expect="举报 #")
    await h.press(user, timeline, "补充", expect="请发送补充")
    await h.say(user, "补充：那天还有另一位工作人员也不在岗。", expect="文字 1 条")
    await h.press(user, await h.expect_button(user["id"], "发送给督查组"), "发送给督查组", expect="已送达")
    # Buttons meant for staff and officials, signed (as if copied) and forged, and garbage.
    menu = await h.say(user, "/start", expect="查询码")
    for payload in ("ack:1", "ask:1", "rea:1", "out:1", "ext:1", "rcv:1", "of:t:bulletins", "of:o:1",
                    "bl:pub:1", "bl:note:1", "wf:x:1", "sf:v:1", "sf:d:1", "c:rcpt"):
        await pressed(h, user, menu, k.sign(payload))
    for data in ("ack:1~forged", "of:t:bulletins~AAAAAAAAAA", "garbage"):
        await pressed(h, user, menu, data)
    if fail_once:  # a handler that fails: Telegram refuses the reply once
        srv.fail_next("sendMessage", status=400)
        before = h.mark(user["id"])
        srv.push_message(user, "/help")
        await srv.wait_for(lambda: h.mark(user["id"]) > before, 10.0, message="the error handler's answer")
    if block:  # the citizen blocks the bot
        srv.push_raw({"my_chat_member": {
            "chat": {"id": user["id"], "type": "private", "first_name": user["first_name"]},
            "from": user, "date": 1_790_000_000,
            "old_chat_member": {"status": "member", "user": srv.bot_user},
            "new_chat_member": {"status": "kicked", "user": srv.bot_user, "until_date": 0}}})
        await asyncio.sleep(0)


def flatten(value: Any) -> Iterator[Any]:
    """Every scalar inside a statement's parameters (dicts, tuples, executemany lists)."""
    if isinstance(value, dict):
        for v in value.values():
            yield from flatten(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from flatten(v)
    else:
        yield value
