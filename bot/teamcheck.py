"""`tipline teams`: who else can read a team's cards. A bound group shows every card to
every member, staff or not; Telegram tells how many members a group has
(getChatMemberCount) and whether a given person is one (getChatMember), but not who the
others are. So tipline counts the members, checks which registered staff are among them,
and warns when the rest (besides the bot) is not zero."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from telegram import Bot
from telegram.error import TelegramError

PRESENT = ("creator", "administrator", "member", "restricted")


@dataclass(frozen=True, slots=True)
class GroupCheck:
    chat_id: int
    members: int | None  # None: Telegram did not answer
    staff_present: int
    error: str | None = None

    @property
    def strangers(self) -> int:
        """Members who are neither registered staff nor the bot."""
        return max(0, (self.members or 0) - 1 - self.staff_present)


async def check_groups(token: str, base_url: str, groups: dict[int, list[int]]) -> dict[int, GroupCheck]:
    """For each group chat id, the registered staff ids expected in it."""
    out: dict[int, GroupCheck] = {}
    async with Bot(token, base_url=base_url) as bot:
        for chat_id, staff_ids in groups.items():
            try:
                members = await bot.get_chat_member_count(chat_id)
                present = 0
                for user_id in staff_ids:
                    try:
                        member = await bot.get_chat_member(chat_id, user_id)
                    except TelegramError:
                        continue
                    if member.status in PRESENT:
                        present += 1
                out[chat_id] = GroupCheck(chat_id, members, present)
            except TelegramError as exc:
                out[chat_id] = GroupCheck(chat_id, None, 0, f"{type(exc).__name__}: {exc}")
    return out


def run_checks(token: str, base_url: str, groups: dict[int, list[int]]) -> dict[int, GroupCheck]:
    return asyncio.run(check_groups(token, base_url, groups))
