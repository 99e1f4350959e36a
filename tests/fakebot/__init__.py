"""The fake Bot API now lives in the product as :mod:`bot.fakeapi`.

This package stays importable for tests and benchmarks written against the old
path: ``tests.fakebot`` and its submodules (``server``, ``objects``,
``ratelimit``, ``textparse``) are the very same module objects as
``bot.fakeapi``'s, so monkeypatching either name patches both.
"""

import sys

from bot.fakeapi import *  # noqa: F403
from bot.fakeapi import __all__  # noqa: F401
from bot.fakeapi import objects, ratelimit, server, textparse

for _module in (objects, ratelimit, server, textparse):
    sys.modules[f"{__name__}.{_module.__name__.rsplit('.', 1)[1]}"] = _module
del _module
