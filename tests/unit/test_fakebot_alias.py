"""tests.fakebot stays importable as the very same modules as bot.fakeapi."""

import importlib

import bot.fakeapi
import bot.fakeapi.server


def test_old_import_path_is_the_same_module():
    import tests.fakebot

    for name in ("objects", "ratelimit", "server", "textparse"):
        old = importlib.import_module(f"tests.fakebot.{name}")
        assert old is importlib.import_module(f"bot.fakeapi.{name}")
    assert tests.fakebot.FakeBotAPI is bot.fakeapi.FakeBotAPI
    from tests.fakebot.server import button

    assert button is bot.fakeapi.server.button
    assert set(tests.fakebot.__all__) == set(bot.fakeapi.__all__)
