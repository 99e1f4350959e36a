"""The playground: the whole campaign in a browser, with no Telegram account.

tipline runs unchanged (its own Bot API client, poller, outbox sender and jobs) against
:mod:`bot.fakeapi`, a local stand-in for the Telegram Bot API over real HTTP on
127.0.0.1. A web page served by the same process shows the campaign's chats side by
side (a citizen, a team's group, its lead, the accountability office, an official); what
people type there is pushed to the stand-in as Telegram would deliver it, and what the
bot sends is shown as the bot sent it. Nothing reaches Telegram.
"""

from bot.playground.core import Playground

__all__ = ["Playground"]
