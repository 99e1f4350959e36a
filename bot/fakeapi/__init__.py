"""Fake Telegram Bot API server for end-to-end tests and benchmarks.

See :mod:`bot.fakeapi.server` for what is imitated and what is not.
"""

from bot.fakeapi.server import (
    MESSAGE_CREATING_METHODS,
    ApiError,
    FakeBotAPI,
    RateViolation,
    SentRecord,
    UploadedFile,
    button,
)
from bot.fakeapi.textparse import EntityParseError, parse_formatted, utf16_len

__all__ = [
    "MESSAGE_CREATING_METHODS",
    "ApiError",
    "EntityParseError",
    "FakeBotAPI",
    "RateViolation",
    "SentRecord",
    "UploadedFile",
    "button",
    "parse_formatted",
    "utf16_len",
]
