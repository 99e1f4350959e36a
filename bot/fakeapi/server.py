"""A fake Telegram Bot API server for end-to-end tests and benchmarks.

:class:`FakeBotAPI` is an aiohttp server on ``127.0.0.1`` (random free port)
that python-telegram-bot talks to over real HTTP::

    async with FakeBotAPI(token="123:ABC") as server:
        app = ApplicationBuilder().token(server.token).base_url(server.base_url).build()
        ...
        alice = server.user(1001, "Alice")
        server.push_message(alice, "/start")
        [reply] = await server.wait_sent(alice["id"])

What it imitates
    * The wire protocol PTB uses: ``POST /bot<TOKEN>/<method>`` with
      form-urlencoded fields (non-string values JSON-encoded) or multipart when
      files are uploaded (``attach://`` names for media groups), JSON bodies, and
      replies ``{"ok": true, "result": ...}`` / ``{"ok": false, "error_code",
      "description", "parameters"}`` with the matching HTTP status, so PTB raises
      ``RetryAfter`` (429), ``BadRequest`` (400), ``Forbidden`` (403),
      ``InvalidToken`` (401/404), ``Conflict`` (409) and ``NetworkError`` (5xx)
      by itself.  Method names are case-insensitive, as on Telegram.
    * ``getUpdates`` long polling with offset confirmation (confirmed updates are
      gone for good), ``limit``, ``allowed_updates`` (updates of types not
      allowed are dropped; by default ``chat_member``/``message_reaction*`` are
      not delivered, as on Telegram), ``409 Conflict`` for a second concurrent
      poller or while a webhook is set, ``deleteWebhook(drop_pending_updates)``.
    * Webhook delivery (:mod:`bot.fakeapi.webhook`): while a webhook is set, updates are
      POSTed with the secret token header, one chat's in order and one at a time, again
      after a non-2xx answer; ``webhook.backends`` spreads them over several receivers.
    * Messages stored per chat with a per-chat ``message_id`` counter shared by
      user and bot messages; realistic Message JSON (``from``, ``chat``,
      ``date``, visible text + entities parsed from HTML/Markdown, echoed inline
      keyboards, PhotoSize/Document/... objects with unique file ids,
      ``reply_to_message``, ``forward_origin``).
    * Validation: text 1..4096 and caption ..1024 UTF-16 units *after* entity
      parsing, entity parse errors, ``callback_data`` 1..64 bytes, button URLs,
      at most 100 buttons, unknown file ids, missing reply targets, edit of an
      unknown/foreign/unchanged message (editing text without ``reply_markup``
      removes the inline keyboard, as on Telegram), unknown or already answered
      callback queries.
    * Flood limits on message-creating methods (see :class:`FakeBotAPI`).

What it does not imitate
    * Inline mode, payments, games, polls, chat administration, topics, business
      connections; unknown methods answer 404 ``Not Found: method not found``
      (PTB raises ``InvalidToken`` for that) unless registered with
      :meth:`FakeBotAPI.register_method`.
    * Limits on edits/callback answers, upload size limits, Telegram's automatic
      URL/mention/hashtag detection in bot messages.
    * ``/file/bot<TOKEN>/<path>`` downloads return the uploaded (or pushed) bytes
      when they were small, otherwise placeholder bytes (a photo pushed without
      content is a small real JPEG); ``getFile`` refuses files over 20 MB.

Deliberate strictness: HTML text with a bare ``&`` is rejected (real Telegram
keeps it) unless ``strict_html_ampersand=False``; unknown ``file_id`` strings
are rejected unless ``strict_file_ids=False`` (file ids seen in pushed updates,
uploads and URLs are known).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import logging
import random
import re
import threading
import time
import traceback
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from aiohttp import web

from bot.fakeapi.objects import (
    FileRegistry,
    StoredFile,
    command_entities,
    make_chat_for_user,
    make_group,
    make_user,
)
from bot.fakeapi.ratelimit import SlidingWindow, retry_after_seconds
from bot.fakeapi.webhook import WebhookDelivery
from bot.fakeapi.textparse import EntityParseError, parse_formatted, utf16_len

__all__ = [
    "MESSAGE_CREATING_METHODS",
    "ApiError",
    "FakeBotAPI",
    "RateViolation",
    "SentRecord",
    "UploadedFile",
    "button",
]

_LOG = logging.getLogger(__name__)

JSON = dict[str, Any]
ChatKey = int | str

TEXT_LIMIT = 4096
GET_FILE_LIMIT = 20 * 1024 * 1024  # getFile refuses bigger files
CAPTION_LIMIT = 1024
CALLBACK_DATA_LIMIT = 64
MAX_BUTTONS = 100

#: Methods that create messages; only these count toward the flood limits and
#: are subject to ``transient_error_rate``, ``force_retry_after`` and
#: ``fail_next(method=None)``.
MESSAGE_CREATING_METHODS: frozenset[str] = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "sendVideo",
        "sendVoice",
        "sendAudio",
        "sendAnimation",
        "sendSticker",
        "sendVideoNote",
        "sendLocation",
        "sendContact",
        "sendDice",
        "sendMediaGroup",
        "copyMessage",
        "copyMessages",
        "forwardMessage",
        "forwardMessages",
    }
)
_MESSAGE_CREATING_LOWER = frozenset(m.lower() for m in MESSAGE_CREATING_METHODS)

#: Parameters whose form values are plain strings (PTB does not JSON-encode
#: ``str`` values, so ``text="123"`` must not become the integer 123).  Every
#: other field is JSON-decoded when it parses as JSON.
STRING_PARAMS: frozenset[str] = frozenset(
    {
        "text", "caption", "parse_mode", "title", "description", "short_description",
        "name", "url", "callback_query_id", "inline_message_id", "photo", "document",
        "video", "voice", "audio", "animation", "sticker", "video_note", "thumbnail",
        "file_id", "action", "emoji", "business_connection_id", "message_effect_id",
        "first_name", "last_name", "phone_number", "vcard", "address", "question",
        "language_code", "secret_token", "ip_address", "query", "start_parameter",
        "payload", "currency", "custom_title", "invite_link", "error_message",
        "result_id", "foursquare_id", "foursquare_type", "google_place_id",
        "google_place_type", "certificate",
    }
)

_HTTP_PHRASES = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_MEDIA_KINDS = ("photo", "document", "video", "voice", "audio", "animation", "sticker",
                "video_note")
_CAPTIONABLE = ("photo", "document", "video", "voice", "audio", "animation")
_CONTENT_KEYS = ("text", "entities", "caption", "caption_entities", *_MEDIA_KINDS,
                 "location", "contact", "venue", "dice")
_CHAT_ACTIONS = frozenset({
    "typing", "upload_photo", "record_video", "upload_video", "record_voice",
    "upload_voice", "upload_document", "choose_sticker", "find_location",
    "record_video_note", "upload_video_note",
})
_ALL_UPDATE_TYPES = frozenset({
    "message", "edited_message", "channel_post", "edited_channel_post",
    "business_connection", "business_message", "edited_business_message",
    "deleted_business_messages", "message_reaction", "message_reaction_count",
    "inline_query", "chosen_inline_result", "callback_query", "shipping_query",
    "pre_checkout_query", "purchased_paid_media", "poll", "poll_answer",
    "my_chat_member", "chat_member", "chat_join_request", "chat_boost",
    "removed_chat_boost",
})
_DEFAULT_ALLOWED_UPDATES = _ALL_UPDATE_TYPES - {
    "chat_member", "message_reaction", "message_reaction_count",
}
_BUTTON_ACTIONS = ("callback_data", "url", "switch_inline_query",
                   "switch_inline_query_current_chat", "switch_inline_query_chosen_chat",
                   "web_app", "login_url", "callback_game", "pay", "copy_text")
_PATH_RE = re.compile(r"^/bot([^/]+)/([A-Za-z0-9_]+)/?$")
_FILE_PATH_RE = re.compile(r"^/file/bot([^/]+)/(.+)$")
_CALLBACK_INVALID = (
    "Bad Request: query is too old and response timeout expired or query ID is invalid"
)
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply "
    "markup are exactly the same as a current content and reply markup of the message"
)


class ApiError(Exception):
    """An error answer of the Bot API (raised inside method handlers)."""

    def __init__(self, status: int, description: str, parameters: JSON | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def payload(self) -> JSON:
        body: JSON = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request."""

    filename: str | None
    content_type: str | None
    data: bytes


class SentRecord(TypedDict, total=False):
    """One message created by the bot (a snapshot taken at creation time).

    ``text``/``caption`` are the parameters *as sent* (raw HTML included); for
    copies and forwards they are the source's visible text/caption (or the new
    caption).  ``plain_text`` is the visible text or caption after entity
    parsing; ``message`` is the Message JSON returned to the bot.
    """

    method: str
    chat_id: ChatKey
    message_id: int
    text: str | None
    caption: str | None
    plain_text: str | None
    parse_mode: str | None
    entities: list[JSON]
    reply_markup: Any
    protect_content: bool
    disable_notification: bool
    file_id: str | None
    media_type: str | None
    media_group_id: str | None
    reply_to_message_id: int | None
    message_thread_id: int | None
    from_chat_id: ChatKey | None
    source_message_id: int | None
    params: JSON
    time: float
    date: int
    message: JSON


class RateViolation(TypedDict):
    """A request answered 429 (``kind``: "global", "chat", "group" or "forced")."""

    chat_id: ChatKey | None
    kind: str
    kinds: list[str]
    method: str
    retry_after: int
    time: float


@dataclass
class _Fault:
    method: str | None  # None: message-creating methods; "*": any method
    status: int
    remaining: int
    after_commit: bool = False

    def matches(self, method: str) -> bool:
        if self.method == "*":
            return True
        if self.method is None:
            return method.lower() in _MESSAGE_CREATING_LOWER
        return self.method.lower() == method.lower()

    def error(self) -> ApiError:
        if self.status == 429:
            return ApiError(429, "Too Many Requests: retry after 1", {"retry_after": 1})
        if self.status == 400:
            return ApiError(400, "Bad Request: injected failure")
        if self.status == 403:
            return ApiError(403, "Forbidden: injected failure")
        return ApiError(self.status, _HTTP_PHRASES.get(self.status, "Server Error"))


@dataclass
class _Pending:
    update: JSON
    redeliver: bool = False
    not_before: float = 0.0  # webhook delivery: not again before (monotonic)

    @property
    def update_id(self) -> int:
        return int(self.update["update_id"])


@dataclass
class _Chat:
    info: JSON
    next_message_id: int = 1
    messages: dict[int, JSON] = field(default_factory=dict)


#: ``handler(params, files) -> result``; plain functions run under the state
#: lock, coroutine functions (getUpdates) take it themselves.
MethodHandler = Callable[[JSON, dict[str, UploadedFile]], Any]


def _kind_of_update(update: JSON) -> str | None:
    return next((k for k in update if k != "update_id"), None)


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ApiError(400, f"Bad Request: invalid {name} specified")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"Bad Request: invalid {name} specified") from None


def _markup_of(message: Any) -> Any:
    """The reply_markup of a sent record / Message JSON / PTB object / markup dict."""
    if message is None:
        return None
    if hasattr(message, "to_dict") and not isinstance(message, dict):
        message = message.to_dict()
    if isinstance(message, dict):
        if "inline_keyboard" in message or "keyboard" in message:
            return message
        return message.get("reply_markup")
    raise TypeError(f"can't find a reply_markup in {type(message).__name__}")


def button(message: Any, text_contains: str) -> JSON:
    """The first inline/reply keyboard button of ``message`` whose text contains
    ``text_contains``.

    ``message`` may be a sent record, Message JSON, a PTB ``Message`` or a
    markup dict.  Raises :class:`AssertionError` listing the buttons if none
    matches.
    """
    markup = _markup_of(message)
    rows = []
    if isinstance(markup, dict):
        rows = markup.get("inline_keyboard") or markup.get("keyboard") or []
    texts: list[str] = []
    for row in rows:
        for btn in row:
            btn_text = btn if isinstance(btn, str) else btn.get("text", "")
            texts.append(btn_text)
            if text_contains in btn_text:
                return {"text": btn} if isinstance(btn, str) else btn
    raise AssertionError(f"no button containing {text_contains!r}; buttons: {texts!r}")


class FakeBotAPI:
    """Fake Telegram Bot API server (see the module docstring).

    Flood limits (``None`` disables one), counted on
    :data:`MESSAGE_CREATING_METHODS` only, with sliding windows over real
    monotonic time:

    * ``global_per_second`` -- all chats together, per 1 s;
    * ``per_chat_per_second`` -- each private chat (positive chat id), per 1 s;
    * ``group_per_minute`` -- each group/channel (negative or ``@username`` chat
      id), per 60 s.

    One *request* counts as one message: ``sendMediaGroup``, ``copyMessages`` and
    ``forwardMessages`` count 1 regardless of how many messages they create (so
    a 10-photo album is admissible under 1 msg/s).  Requests rejected with
    400/403/429/5xx are not counted.  A violation answers 429 with
    ``retry_after`` = seconds until the window admits the request, rounded up,
    at least 1, and appends a :class:`RateViolation` to :attr:`rate_violations`.
    ``burst_tolerance`` (seconds) shortens every window by that much to forgive
    arrival jitter of a sender pacing exactly at the limit; see
    :mod:`bot.fakeapi.ratelimit`.

    Order of checks for a request: token (401) -> unknown method (404) ->
    ``delay`` -> injected faults (``fail_next``, ``transient_error_rate``:
    5xx; ``force_retry_after``: 429) -> validation (400) -> blocked chat (403)
    -> flood limits (429) -> the message is created.

    Constructor arguments besides the limits: ``transient_error_rate`` and
    ``seed`` (random 5xx, reproducible via :attr:`rng`), ``delay`` (seconds
    before every answer; a request whose client gave up meanwhile is dropped
    unanswered), ``bot_username``/``bot_first_name`` (getMe; the bot id is the
    token's number), ``strict_file_ids``, ``strict_html_ampersand``,
    ``max_poll_timeout`` (cap for getUpdates' ``timeout``; None honours it),
    ``first_update_id``, ``host``/``port`` (0 = a free port) and ``clock`` (the
    monotonic clock used by the limits and timestamps).

    Thread safety: the server's state is guarded by a lock so test helpers may
    be called from a thread other than the one running the server
    (:meth:`start_in_thread`).  The properties return snapshot lists.
    """

    def __init__(
        self,
        token: str = "123:ABC",
        *,
        global_per_second: int | None = 30,
        per_chat_per_second: int | None = 1,
        group_per_minute: int | None = 20,
        burst_tolerance: float = 0.0,
        transient_error_rate: float = 0.0,
        seed: int = 0,
        delay: float = 0.0,
        arrival_jitter: float = 0.0,
        bot_username: str = "tipline_test_bot",
        bot_first_name: str = "Tipline Test Bot",
        strict_file_ids: bool = True,
        strict_html_ampersand: bool = True,
        max_poll_timeout: float | None = None,
        first_update_id: int = 100_000,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        bot_id_part = token.split(":", 1)[0]
        if not bot_id_part.isdigit() or ":" not in token:
            raise ValueError("token must look like '<digits>:<secret>'")
        self._token = token
        self._bot_user = make_user(
            int(bot_id_part), bot_first_name, username=bot_username, language_code=None,
            is_bot=True,
        )
        self.global_per_second = global_per_second
        self.per_chat_per_second = per_chat_per_second
        self.group_per_minute = group_per_minute
        self.burst_tolerance = burst_tolerance
        #: probability of a random 5xx (message not created) per message-creating call
        self.transient_error_rate = transient_error_rate
        #: seconds to sleep before answering any request
        self.delay = delay
        #: up to this many seconds (uniformly at random) before a request is looked at,
        #: as a network path of varying latency holds it: arrivals jitter against departures
        self.arrival_jitter = arrival_jitter
        self._jitter_rng = random.Random(seed + 2)  # apart from `rng`: 5xx stay as seeded
        self.strict_file_ids = strict_file_ids
        self.strict_html_ampersand = strict_html_ampersand
        self.max_poll_timeout = max_poll_timeout
        self.rng = random.Random(seed)
        self._host = host
        self._port = port
        self._clock = clock

        self._lock = threading.RLock()
        self._files = FileRegistry(random.Random(seed + 1))
        # recorded state
        self._calls: list[JSON] = []
        self._calls_by_method: dict[str, list[JSON]] = defaultdict(list)
        self._sent: list[SentRecord] = []
        self._sent_by_chat: dict[ChatKey, list[SentRecord]] = defaultdict(list)
        self._edits: list[JSON] = []
        self._deleted: list[JSON] = []
        self._callback_answers: list[JSON] = []
        self._rate_violations: list[RateViolation] = []
        self.internal_errors: list[str] = []
        self.count_429 = 0
        self.count_5xx = 0
        # chats, users, updates
        self._users: dict[int, JSON] = {}
        self._chats: dict[ChatKey, _Chat] = {}
        self._usernames: dict[str, int] = {}
        self._blocked: set[ChatKey] = set()
        self._pending: list[_Pending] = []
        self._all_updates: dict[int, JSON] = {}
        self._next_update_id = first_update_id
        self.confirmed_offset: int | None = None
        self._allowed_updates: frozenset[str] = _DEFAULT_ALLOWED_UPDATES
        self._poll_generation = 0
        self._updates_event = asyncio.Event()
        self._callbacks: dict[str, JSON] = {}
        self._callback_counter = 0
        self._media_group_counter = 0
        # limits and faults
        self._global_window: SlidingWindow | None = None
        self._chat_windows: dict[ChatKey, SlidingWindow] = {}
        self._group_windows: dict[ChatKey, SlidingWindow] = {}
        self._faults: list[_Fault] = []
        self._forced_retries: list[list[Any]] = []  # [method | None, seconds, remaining]
        # bot settings
        self._commands: dict[str, list[JSON]] = {}
        self._menu_buttons: dict[str, JSON] = {}
        self._webhook: JSON = {"url": ""}
        #: webhook delivery; ``webhook.backends`` stands for a reverse proxy's upstreams
        self.webhook = WebhookDelivery(self)
        self._extra_methods: dict[str, MethodHandler] = {}
        self._methods = self._build_method_table()
        # server
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._closing = False
        self._actual_port: int | None = None
        self._thread: threading.Thread | None = None

    # ================================================================ lifecycle

    async def start(self) -> FakeBotAPI:
        """Start serving on the running event loop; returns ``self``."""
        if self._runner is not None:
            raise RuntimeError("FakeBotAPI is already running")
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._updates_event = asyncio.Event()
        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        self._actual_port = int(runner.addresses[0][1])
        if self._webhook.get("url"):
            self.webhook.ensure_running()
        _LOG.debug("FakeBotAPI listening on %s", self.base_url)
        return self

    async def stop(self) -> None:
        """Stop serving (pending long polls return an empty result first)."""
        runner = self._runner
        if runner is None:
            return
        self._closing = True
        self._notify_updates()
        await asyncio.sleep(0)
        await self.webhook.stop()
        await runner.cleanup()
        self._runner = None
        self._loop = None
        self._loop_thread = None

    async def __aenter__(self) -> FakeBotAPI:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self, timeout: float = 10.0) -> str:
        """Run the server in a daemon thread with its own event loop.

        Returns :attr:`base_url`.  Stop it with :meth:`stop_thread`.
        """
        if self._thread is not None:
            raise RuntimeError("already running in a thread")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # noqa: BLE001 - reported to the caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="FakeBotAPI", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("FakeBotAPI thread did not start in time")
        if failure:
            self._thread = None
            raise failure[0]
        return self.base_url

    def stop_thread(self, timeout: float = 10.0) -> None:
        """Stop a server started with :meth:`start_in_thread`."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None

    # ================================================================ properties

    @property
    def port(self) -> int:
        if self._actual_port is None:
            raise RuntimeError("FakeBotAPI is not started")
        return self._actual_port

    @property
    def base_url(self) -> str:
        """Value for ``ApplicationBuilder().base_url()`` / ``Bot(base_url=...)``."""
        return f"http://{self._host}:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        """Value for ``ApplicationBuilder().base_file_url()``."""
        return f"http://{self._host}:{self.port}/file/bot"

    @property
    def token(self) -> str:
        return self._token

    @property
    def bot_user(self) -> JSON:
        """The bot's ``User`` JSON (``id``, ``is_bot``, ``first_name``, ``username``)."""
        return dict(self._bot_user)

    @property
    def calls(self) -> list[JSON]:
        """Every request: ``method``, ``params`` (decoded), ``files``, ``time``
        (monotonic), ``wall_time``, ``status``, ``error`` (description or None)."""
        with self._lock:
            return list(self._calls)

    def calls_for(self, method: str) -> list[JSON]:
        """The recorded calls of one method (case-insensitive)."""
        with self._lock:
            return list(self._calls_by_method.get(method.lower(), ()))

    @property
    def sent(self) -> list[SentRecord]:
        """Every message the bot created, in order (see :class:`SentRecord`)."""
        with self._lock:
            return list(self._sent)

    def sent_to(self, chat_id: ChatKey) -> list[SentRecord]:
        """Messages the bot created in ``chat_id``, in order."""
        with self._lock:
            return list(self._sent_by_chat.get(self._lookup_key(chat_id), ()))

    def messages_in(self, chat_id: ChatKey, *, from_bot: bool | None = None) -> list[JSON]:
        """Current Message JSON of the chat's messages (edits applied, deleted
        ones gone), oldest first.  ``from_bot``: True = only the bot's, False =
        only users', None = all."""
        bot_id = self._bot_user["id"]
        with self._lock:
            chat = self._chats.get(self._lookup_key(chat_id))
            if chat is None:
                return []
            result = []
            for msg in chat.messages.values():
                is_bot = msg.get("from", {}).get("id") == bot_id
                if from_bot is None or from_bot == is_bot:
                    result.append(copy.deepcopy(msg))
            return result

    def message(self, chat_id: ChatKey, message_id: int) -> JSON | None:
        """Current Message JSON of one message, or None if unknown/deleted."""
        with self._lock:
            msg = self._find_message(self._lookup_key(chat_id), int(message_id))
            return copy.deepcopy(msg) if msg is not None else None

    def file_content(self, file_id: str) -> bytes | None:
        """The bytes of a file (uploaded by the bot or pushed with ``content``), by any
        of its file ids; None if not kept."""
        with self._lock:
            stored = self._files.get(file_id)
            return stored.content if stored is not None else None

    def file_info(self, file_id: str) -> JSON | None:
        """What the server knows of a file: kind, file_name, mime_type, file_size."""
        with self._lock:
            stored = self._files.get(file_id)
            if stored is None:
                return None
            return {"kind": stored.kind, "file_name": stored.file_name, "mime_type": stored.mime_type,
                    "file_size": stored.file_size}

    @property
    def edits(self) -> list[JSON]:
        """Successful edits: ``method``, ``chat_id``, ``message_id``, ``text``,
        ``caption``, ``parse_mode``, ``reply_markup``, ``params``, ``time``."""
        with self._lock:
            return list(self._edits)

    @property
    def deleted(self) -> list[JSON]:
        """Deleted messages: ``chat_id``, ``message_id``, ``time``."""
        with self._lock:
            return list(self._deleted)

    @property
    def callback_answers(self) -> list[JSON]:
        """answerCallbackQuery calls that succeeded: ``callback_query_id``,
        ``text``, ``show_alert``, ``url``, ``cache_time``, ``time``."""
        with self._lock:
            return list(self._callback_answers)

    @property
    def rate_violations(self) -> list[RateViolation]:
        with self._lock:
            return list(self._rate_violations)

    @property
    def pending_updates(self) -> list[JSON]:
        """Updates not yet confirmed (in delivery order)."""
        with self._lock:
            return [p.update for p in sorted(self._pending, key=lambda p: p.update_id)]

    @property
    def blocked_chats(self) -> set[ChatKey]:
        with self._lock:
            return set(self._blocked)

    def commands(self, scope: JSON | None = None, language_code: str = "") -> list[JSON]:
        """Commands stored by setMyCommands for a scope/language."""
        with self._lock:
            return list(self._commands.get(self._commands_key(scope, language_code), []))

    @property
    def webhook_url(self) -> str:
        return str(self._webhook.get("url", ""))

    # ================================================================ accounting

    def delivered_counts(
        self, key: Callable[[SentRecord], Hashable] | None = None
    ) -> Counter[tuple[ChatKey, Hashable]]:
        """Counter of ``(chat_id, key(record))`` over every created message.

        The default key is the record's ``text`` if not None, else its
        ``caption`` (the raw parameter for sends, the source's visible
        text/caption for copies and forwards; None for media without caption).
        Count > 1 means a duplicate, a missing expected key means a loss.
        """
        key_fn = key or (lambda rec: rec.get("text") if rec.get("text") is not None
                         else rec.get("caption"))
        with self._lock:
            return Counter((rec["chat_id"], key_fn(rec)) for rec in self._sent)

    def duplicates(
        self, key: Callable[[SentRecord], Hashable] | None = None
    ) -> dict[tuple[ChatKey, Hashable], int]:
        """The entries of :meth:`delivered_counts` delivered more than once."""
        return {k: n for k, n in self.delivered_counts(key).items() if n > 1}

    def reset_records(self) -> None:
        """Forget recorded calls/sent/edits/answers/violations and counters
        (chats, messages, updates and limits are kept)."""
        with self._lock:
            self._calls.clear()
            self._calls_by_method.clear()
            self._sent.clear()
            self._sent_by_chat.clear()
            self._edits.clear()
            self._deleted.clear()
            self._callback_answers.clear()
            self._rate_violations.clear()
            self.internal_errors.clear()
            self.count_429 = 0
            self.count_5xx = 0

    def reset_limits(self) -> None:
        """Empty all flood-limit windows (e.g. after provoking a 429)."""
        with self._lock:
            self._global_window = None
            self._chat_windows.clear()
            self._group_windows.clear()

    # ================================================================ faults

    def block_chat(self, chat_id: ChatKey) -> None:
        """Sends/edits/chat actions to ``chat_id`` answer 403 from now on."""
        with self._lock:
            self._blocked.add(self._chat_key(chat_id))

    def unblock_chat(self, chat_id: ChatKey) -> None:
        with self._lock:
            self._blocked.discard(self._chat_key(chat_id))

    def fail_next(
        self,
        method: str | None = None,
        status: int = 502,
        count: int = 1,
        *,
        after_commit: bool = False,
    ) -> None:
        """Answer the next ``count`` matching calls with HTTP ``status``.

        ``method``: a method name (any method, e.g. ``"getUpdates"``), ``None``
        for any message-creating method, ``"*"`` for any method at all.
        ``after_commit=True`` creates the message first and then fails (a lost
        response: a client that retries produces a duplicate).
        """
        if count < 1:
            return
        with self._lock:
            self._faults.append(_Fault(method, status, count, after_commit))

    def force_retry_after(self, seconds: int, count: int = 1, method: str | None = None) -> None:
        """Answer the next ``count`` message-creating calls (or calls of
        ``method``) with 429 and ``retry_after=seconds``."""
        if count < 1:
            return
        with self._lock:
            self._forced_retries.append([method, max(1, int(seconds)), count])

    def register_method(self, name: str, handler: MethodHandler) -> None:
        """Add/override a Bot API method: ``handler(params, files)`` returns the
        ``result`` or raises :class:`ApiError`.  Runs under the state lock."""
        with self._lock:
            self._methods[name.lower()] = (name, handler)

    # ================================================================ users, chats

    def user(
        self,
        user_id: int,
        first_name: str | None = None,
        username: str | None = None,
        last_name: str | None = None,
        language_code: str | None = "zh-hans",
    ) -> JSON:
        """Register a user and return its ``User`` JSON."""
        user = make_user(user_id, first_name or f"User{user_id}", username, last_name,
                         language_code)
        with self._lock:
            self._users[user["id"]] = user
            chat = self._chats.get(user["id"])
            if chat is not None:
                chat.info = make_chat_for_user(user)
            if username:
                self._usernames[f"@{username.lower()}"] = user["id"]
        return dict(user)

    def group(self, chat_id: int, title: str = "Test group", chat_type: str | None = None
              ) -> JSON:
        """Register a group and return its ``Chat`` JSON (ids starting with -100
        are supergroups, other negative ids basic groups)."""
        info = make_group(chat_id, title, chat_type)
        with self._lock:
            chat = self._chats.get(info["id"])
            if chat is None:
                self._chats[info["id"]] = _Chat(info=info)
            else:
                chat.info = info
        return dict(info)

    # ================================================================ update injection

    def push_raw(self, update: JSON) -> JSON:
        """Queue an arbitrary update dict (``update_id`` assigned if missing).

        File ids inside it become known, a callback query id becomes
        answerable and an embedded ``message`` is stored in its chat.
        """
        update = copy.deepcopy(update)
        with self._lock:
            self._files.adopt(update)
            cq = update.get("callback_query")
            if isinstance(cq, dict) and "id" in cq:
                self._callbacks.setdefault(str(cq["id"]), {"answered": False})
            msg = update.get("message")
            if isinstance(msg, dict) and isinstance(msg.get("chat"), dict) and "message_id" in msg:
                chat = self._chat(msg["chat"]["id"], info=msg["chat"])
                chat.messages[int(msg["message_id"])] = copy.deepcopy(msg)
                chat.next_message_id = max(chat.next_message_id, int(msg["message_id"]) + 1)
            return self._enqueue(update)

    def push_message(
        self,
        user: JSON | int,
        text: str | None = None,
        chat: JSON | int | None = None,
        *,
        photo: bool = False,
        document: str | bool | None = None,
        video: bool = False,
        voice: bool = False,
        sticker: bool = False,
        location: bool | tuple[float, float] = False,
        contact: bool | JSON = False,
        caption: str | None = None,
        entities: list[JSON] | None = None,
        reply_to: Any = None,
        media_group_id: str | None = None,
        date: int | None = None,
        audio: bool = False,
        content: bytes | None = None,
        mime_type: str | None = None,
        file_size: int | None = None,
    ) -> JSON:
        """Queue a ``message`` update sent by ``user`` (a ``User`` dict or an id).

        ``chat`` defaults to the user's private chat; pass a group dict/id for a
        group.  ``/commands`` get ``bot_command`` entities automatically.
        ``document`` is a file name (True: ``"document.pdf"``); ``location`` may
        be ``(latitude, longitude)``; ``contact`` may be a Contact dict (True:
        the user's own).  ``reply_to`` is a message (record/JSON/PTB) in the same
        chat.  ``content``/``mime_type``/``file_size`` describe the attached file
        (downloadable with getFile; a file over 20 MB cannot be downloaded).  Returns
        the update (``update["message"]`` is the message).
        """
        file_kw: JSON = {"content": content, "mime_type": mime_type, "file_size": file_size}
        with self._lock:
            sender = self._resolve_user(user)
            chat_obj = self._resolve_chat_arg(chat, sender)
            content: JSON = {}
            has_media = False
            if photo:
                content["photo"] = FileRegistry.media_json(self._files.register(
                    "photo", content=file_kw["content"], file_size=file_kw["file_size"]))
                has_media = True
            if document:
                name = document if isinstance(document, str) else "document.pdf"
                content["document"] = FileRegistry.media_json(
                    self._files.register("document", file_name=name, **file_kw))
                has_media = True
            for kind, wanted in (("video", video), ("voice", voice), ("audio", audio), ("sticker", sticker)):
                if wanted:
                    mime = file_kw["mime_type"] or {"video": "video/mp4", "voice": "audio/ogg",
                                                    "audio": "audio/mpeg"}.get(kind)
                    name = {"video": "video.mp4", "audio": "audio.mp3"}.get(kind)
                    content[kind] = FileRegistry.media_json(self._files.register(
                        kind, file_name=name, mime_type=mime, content=file_kw["content"],
                        file_size=file_kw["file_size"]))
                    has_media = True
            if location:
                lat, lon = location if isinstance(location, tuple) else (31.2304, 121.4737)
                content["location"] = {"latitude": float(lat), "longitude": float(lon)}
                has_media = True
            if contact:
                content["contact"] = dict(contact) if isinstance(contact, dict) else {
                    "phone_number": "+8613800138000",
                    "first_name": sender["first_name"],
                    "user_id": sender["id"],
                }
                has_media = True
            if text is not None:
                if has_media:
                    raise ValueError("a message with media has a caption, not a text")
                content["text"] = text
                ents = entities if entities is not None else command_entities(text)
                if ents:
                    content["entities"] = ents
            elif not has_media:
                raise ValueError("push_message needs text or media")
            if caption is not None:
                if not any(k in content for k in _CAPTIONABLE):
                    raise ValueError("caption needs photo/document/video/voice")
                content["caption"] = caption
                cents = command_entities(caption)
                if cents:
                    content["caption_entities"] = cents
            if media_group_id is not None:
                content["media_group_id"] = media_group_id
            chat_state = self._chat(chat_obj["id"], info=chat_obj)
            if reply_to is not None:
                target = self._resolve_message_arg(reply_to)
                content["reply_to_message"] = self._reply_copy(target)
            msg = self._store_message(chat_state, sender, content, date=date)
            return self._enqueue({"message": copy.deepcopy(msg)})

    def push_edited(self, message: Any, text: str | None = None,
                    caption: str | None = None) -> JSON:
        """Edit a message a user sent earlier and queue an ``edited_message`` update."""
        with self._lock:
            msg = self._resolve_message_arg(message)
            if text is not None:
                msg["text"] = text
                ents = command_entities(text)
                if ents:
                    msg["entities"] = ents
                else:
                    msg.pop("entities", None)
            if caption is not None:
                msg["caption"] = caption
            msg["edit_date"] = int(time.time())
            return self._enqueue({"edited_message": copy.deepcopy(msg)})

    def push_callback(self, user: JSON | int, message: Any, data: str) -> JSON:
        """Queue a ``callback_query`` update: ``user`` pressed a button with
        ``data`` under ``message`` (a sent record, Message JSON or PTB Message of
        a message stored in the fake; its current state is embedded)."""
        with self._lock:
            sender = self._resolve_user(user)
            msg = self._resolve_message_arg(message)
            self._callback_counter += 1
            query_id = str(4_000_000_000_000_000 + self._callback_counter * 7919
                           + self.rng.randrange(7919))
            self._callbacks[query_id] = {"answered": False}
            query = {
                "id": query_id,
                "from": sender,
                "message": copy.deepcopy(msg),
                "chat_instance": self._chat_instance(msg["chat"]["id"]),
                "data": data,
            }
            return self._enqueue({"callback_query": query})

    def press(self, user: JSON | int, message: Any, text_contains: str) -> JSON:
        """Press the inline button whose text contains ``text_contains``
        (:func:`button` + :meth:`push_callback`)."""
        with self._lock:
            current = self._resolve_message_arg(message)
            btn = button(current, text_contains)
        if "callback_data" not in btn:
            raise AssertionError(f"button {btn!r} has no callback_data")
        return self.push_callback(user, current, btn["callback_data"])

    def push_duplicate(self, update: JSON | int) -> JSON:
        """Deliver an already queued update (same ``update_id``) once more, even
        if it was confirmed (as Telegram does after a crash before confirming)."""
        update_id = update if isinstance(update, int) else int(update["update_id"])
        with self._lock:
            original = self._all_updates.get(update_id)
            if original is None:
                raise KeyError(f"unknown update_id {update_id}")
            self._pending.append(_Pending(copy.deepcopy(original), redeliver=True))
        self._notify_updates()
        return copy.deepcopy(original)

    # ================================================================ waiting

    async def wait_for(
        self,
        predicate: Callable[..., Any],
        timeout: float = 5.0,
        *,
        interval: float = 0.01,
        message: str | None = None,
    ) -> Any:
        """Poll ``predicate()`` (or ``predicate(server)``) until it returns a
        truthy value, which is returned.  ``LookupError`` raised by the predicate
        counts as "not yet".  On timeout raises :class:`AssertionError`
        describing the recent traffic."""
        deadline = time.monotonic() + timeout
        last_exc: BaseException | None = None
        call = self._predicate_caller(predicate)  # once: inspecting it each poll cost more than the bot
        while True:
            try:
                value = call()
            except LookupError as exc:
                value, last_exc = None, exc
            if value:
                return value
            if time.monotonic() >= deadline:
                head = message or f"condition {getattr(predicate, '__name__', predicate)!s}"
                extra = f" (last error: {last_exc!r})" if last_exc else ""
                raise AssertionError(
                    f"timed out after {timeout:g}s waiting for {head}{extra}\n" + self.describe()
                )
            await asyncio.sleep(interval)

    def wait_for_sync(self, predicate: Callable[..., Any], timeout: float = 5.0,
                      interval: float = 0.01) -> Any:
        """Blocking variant of :meth:`wait_for` (for scripts using
        :meth:`start_in_thread`)."""
        deadline = time.monotonic() + timeout
        call = self._predicate_caller(predicate)
        while True:
            try:
                value = call()
            except LookupError:
                value = None
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:g}s\n" + self.describe())
            time.sleep(interval)

    async def wait_sent(self, chat_id: ChatKey, count: int = 1, timeout: float = 5.0, *,
                        after: int = 0) -> list[SentRecord]:
        """Wait until the bot created at least ``after + count`` messages in
        ``chat_id``; returns the records after the first ``after``."""
        key = self._lookup_key(chat_id)

        def enough() -> list[SentRecord] | None:
            records = self.sent_to(key)
            return records[after:] if len(records) >= after + count else None

        return await self.wait_for(
            enough, timeout, message=f"{count} message(s) to chat {key} after {after}")

    def describe(self, last: int = 10) -> str:
        """Human-readable summary of recent traffic (used in timeout errors)."""
        with self._lock:
            lines = [f"--- fakebot: {len(self._sent)} sent, {len(self._calls)} calls, "
                     f"{len(self._pending)} pending updates, {self.count_429}x429, "
                     f"{self.count_5xx}x5xx"]
            for rec in self._sent[-last:]:
                body = rec.get("text") if rec.get("text") is not None else rec.get("caption")
                lines.append(f"  sent {rec['method']} chat={rec['chat_id']} "
                             f"id={rec['message_id']}: {str(body)[:120]!r}")
            errors = [c for c in self._calls if c.get("error")][-last:]
            for call in errors:
                lines.append(f"  error {call['method']} {call['status']}: {call['error']}")
            for err in self.internal_errors[-3:]:
                lines.append(f"  INTERNAL ERROR: {err.splitlines()[-1]}")
        return "\n".join(lines)

    # ================================================================ HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        file_match = _FILE_PATH_RE.match(path)
        if file_match:
            return self._handle_file(file_match.group(1), file_match.group(2))
        match = _PATH_RE.match(path)
        if match is None:
            return web.json_response(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        token, method_name = match.groups()
        try:
            params, files = await self._read_params(request)
        except ApiError as exc:
            return web.json_response(exc.payload(), status=exc.status)
        entry = self._methods.get(method_name.lower())
        canonical = entry[0] if entry else method_name
        record: JSON = {
            "method": canonical,
            "params": params,
            "files": {name: {"filename": f.filename, "size": len(f.data),
                             "content_type": f.content_type} for name, f in files.items()},
            "time": self._clock(),
            "wall_time": time.time(),
            "status": None,
            "error": None,
        }
        with self._lock:
            self._calls.append(record)
            self._calls_by_method[canonical.lower()].append(record)
        try:
            if token != self._token:
                raise ApiError(401, "Unauthorized")
            if entry is None:
                raise ApiError(404, "Not Found: method not found")
            if self.arrival_jitter > 0:
                await asyncio.sleep(self._jitter_rng.uniform(0.0, self.arrival_jitter))
            if self.delay > 0:
                await asyncio.sleep(self.delay)
                if request.transport is None or request.transport.is_closing():
                    # A stalled server whose client gave up does not act on the request.
                    with self._lock:
                        record["status"] = 499
                        record["error"] = "client gave up during the stall"
                    return web.Response(status=499)
            result = await self._dispatch(canonical, entry[1], params, files)
            status, payload = 200, {"ok": True, "result": result}
        except ApiError as exc:
            status, payload = exc.status, exc.payload()
        except Exception:  # a bug in the fake: make it visible
            trace = traceback.format_exc()
            _LOG.error("fakebot internal error in %s:\n%s", canonical, trace)
            with self._lock:
                self.internal_errors.append(trace)
            status, payload = 500, {"ok": False, "error_code": 500,
                                    "description": "Internal Server Error (fakebot bug)"}
        with self._lock:
            record["status"] = status
            if status != 200:
                record["error"] = payload.get("description")
            if status == 429:
                self.count_429 += 1
            elif status >= 500:
                self.count_5xx += 1
        return web.json_response(payload, status=status)

    async def _dispatch(self, method: str, handler: MethodHandler, params: JSON,
                        files: dict[str, UploadedFile]) -> Any:
        with self._lock:
            fault = self._take_fault(method)
            if fault is not None and not fault.after_commit:
                raise fault.error()
            self._take_forced_retry(method, params)
        if inspect.iscoroutinefunction(handler):  # long-running (getUpdates): locks itself
            result = await handler(params, files)
        else:
            with self._lock:
                result = handler(params, files)
        if fault is not None:
            raise fault.error()
        return result

    async def _read_params(self, request: web.Request) -> tuple[JSON, dict[str, UploadedFile]]:
        raw: dict[str, Any] = dict(request.query)
        files: dict[str, UploadedFile] = {}
        decoded: JSON = {}
        if request.can_read_body:
            ctype = request.content_type
            if ctype == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    raise ApiError(400, "Bad Request: can't parse JSON request body") from None
                if not isinstance(body, dict):
                    raise ApiError(400, "Bad Request: request body must be a JSON object")
                decoded.update(body)
            elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                for name, value in form.items():
                    if isinstance(value, web.FileField):
                        files[name] = UploadedFile(value.filename, value.content_type,
                                                   value.file.read())
                    elif isinstance(value, (bytes, bytearray)):
                        raw[name] = bytes(value).decode("utf-8", "replace")
                    else:
                        raw[name] = value
        for name, value in raw.items():
            decoded.setdefault(name, self._decode_value(name, value))
        return decoded, files

    @staticmethod
    def _decode_value(name: str, value: str) -> Any:
        if name in STRING_PARAMS:
            return value
        try:
            return json.loads(value)
        except ValueError:
            return value

    def _handle_file(self, token: str, file_path: str) -> web.StreamResponse:
        if token != self._token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        with self._lock:
            stored = self._files.by_path(file_path)
        if stored is None:
            return web.json_response(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        body = stored.content if stored.content is not None else (
            f"fakebot placeholder for {stored.file_id}".encode())
        return web.Response(body=body, content_type=stored.mime_type or "application/octet-stream")

    # ================================================================ faults/limits

    def _take_fault(self, method: str) -> _Fault | None:
        for fault in self._faults:
            if fault.matches(method):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        if (self.transient_error_rate > 0 and method.lower() in _MESSAGE_CREATING_LOWER
                and self.rng.random() < self.transient_error_rate):
            return _Fault(method, self.rng.choice((500, 502, 502, 503)), 1)
        return None

    def _take_forced_retry(self, method: str, params: JSON) -> None:
        for forced in self._forced_retries:
            wanted, seconds, _ = forced
            if (method.lower() == wanted.lower()) if wanted else (
                    method.lower() in _MESSAGE_CREATING_LOWER):
                forced[2] -= 1
                if forced[2] <= 0:
                    self._forced_retries.remove(forced)
                chat = params.get("chat_id")
                self._rate_violations.append(RateViolation(
                    chat_id=chat if isinstance(chat, (int, str)) else None, kind="forced",
                    kinds=["forced"], method=method, retry_after=seconds, time=self._clock()))
                raise ApiError(429, f"Too Many Requests: retry after {seconds}",
                               {"retry_after": seconds})

    def _window(self, table: dict[ChatKey, SlidingWindow], key: ChatKey, limit: int,
                span: float) -> SlidingWindow:
        window = table.get(key)
        if window is None or window.limit != limit or window.tolerance != self.burst_tolerance:
            window = SlidingWindow(limit, span, self.burst_tolerance)
            table[key] = window
        return window

    def _check_rate(self, method: str, chat_key: ChatKey) -> None:
        now = self._clock()
        windows: list[tuple[str, SlidingWindow]] = []
        if isinstance(chat_key, int) and chat_key > 0:
            if self.per_chat_per_second is not None:
                windows.append(("chat", self._window(
                    self._chat_windows, chat_key, self.per_chat_per_second, 1.0)))
        elif self.group_per_minute is not None:
            windows.append(("group", self._window(
                self._group_windows, chat_key, self.group_per_minute, 60.0)))
        if self.global_per_second is not None:
            glob = self._global_window
            if (glob is None or glob.limit != self.global_per_second
                    or glob.tolerance != self.burst_tolerance):
                glob = self._global_window = SlidingWindow(
                    self.global_per_second, 1.0, self.burst_tolerance)
            windows.append(("global", glob))
        failing = [(kind, wait) for kind, win in windows if (wait := win.wait_time(now)) > 0]
        if failing:
            retry = retry_after_seconds(max(wait for _, wait in failing))
            self._rate_violations.append(RateViolation(
                chat_id=chat_key, kind=failing[0][0], kinds=[k for k, _ in failing],
                method=method, retry_after=retry, time=now))
            raise ApiError(429, f"Too Many Requests: retry after {retry}",
                           {"retry_after": retry})
        for _, win in windows:
            win.add(now)
        for table in (self._chat_windows, self._group_windows):
            if len(table) > 10_000:  # keep memory bounded in long benchmarks
                for key in [k for k, w in table.items() if w.is_idle(now)]:
                    del table[key]

    def _check_blocked(self, chat_key: ChatKey) -> None:
        if chat_key in self._blocked:
            chat_type = self._chats[chat_key].info.get("type") if chat_key in self._chats else None
            if chat_type == "supergroup":
                raise ApiError(403, "Forbidden: bot was kicked from the supergroup chat")
            if chat_type in ("group", "channel") or (isinstance(chat_key, int) and chat_key < 0):
                raise ApiError(403, "Forbidden: bot was kicked from the group chat")
            raise ApiError(403, "Forbidden: bot was blocked by the user")

    # ================================================================ state helpers

    def _chat_key(self, value: Any) -> ChatKey:
        """Normalise a chat id (int, numeric string or @username)."""
        if isinstance(value, bool) or value is None or value == "":
            raise ApiError(400, "Bad Request: chat_id is empty")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            text = value.strip()
            if re.fullmatch(r"-?\d+", text):
                return int(text)
            if text.startswith("@") and len(text) > 1:
                return self._usernames.get(text.lower(), text.lower())
        raise ApiError(400, "Bad Request: chat not found")

    def _lookup_key(self, value: Any) -> ChatKey:
        try:
            return self._chat_key(value)
        except ApiError:
            return value  # type: ignore[no-any-return]

    def _require_chat(self, params: JSON, name: str = "chat_id") -> ChatKey:
        if name not in params:
            raise ApiError(400, "Bad Request: chat_id is empty")
        return self._chat_key(params[name])

    def _chat(self, chat_key: ChatKey, info: JSON | None = None) -> _Chat:
        chat = self._chats.get(chat_key)
        if chat is None:
            if info is None:
                info = self._default_chat_info(chat_key)
            chat = self._chats[chat_key] = _Chat(info=dict(info))
        return chat

    def _default_chat_info(self, chat_key: ChatKey) -> JSON:
        if isinstance(chat_key, str):
            return {"id": -1_009_000_000_000 - zlib.crc32(chat_key.encode()) % 10**9,
                    "type": "channel", "title": chat_key[1:], "username": chat_key[1:]}
        if chat_key > 0:
            user = self._users.get(chat_key) or make_user(chat_key, f"User{chat_key}")
            return make_chat_for_user(user)
        return make_group(chat_key, f"Group {chat_key}")

    def _find_message(self, chat_key: ChatKey, message_id: int) -> JSON | None:
        chat = self._chats.get(chat_key)
        return chat.messages.get(message_id) if chat is not None else None

    def _store_message(self, chat: _Chat, sender: JSON, content: JSON, *,
                       date: int | None = None) -> JSON:
        message_id = chat.next_message_id
        chat.next_message_id += 1
        msg: JSON = {
            "message_id": message_id,
            "from": dict(sender),
            "chat": dict(chat.info),
            "date": date if date is not None else int(time.time()),
        }
        msg.update(content)
        chat.messages[message_id] = msg
        return msg

    def _resolve_user(self, user: JSON | int) -> JSON:
        if isinstance(user, int):
            known = self._users.get(user)
            if known is None:
                known = self._users[user] = make_user(user, f"User{user}")
            return dict(known)
        if isinstance(user, dict) and "id" in user:
            self._users.setdefault(int(user["id"]), dict(user))
            return dict(user)
        raise TypeError(f"expected a User dict or an id, got {user!r}")

    def _resolve_chat_arg(self, chat: JSON | int | None, sender: JSON) -> JSON:
        if chat is None:
            existing = self._chats.get(sender["id"])
            return dict(existing.info) if existing else make_chat_for_user(sender)
        if isinstance(chat, int):
            existing = self._chats.get(chat)
            if existing is not None:
                return dict(existing.info)
            return make_group(chat, f"Group {chat}") if chat < 0 else make_chat_for_user(
                self._users.get(chat) or make_user(chat, f"User{chat}"))
        if isinstance(chat, dict) and "id" in chat:
            return dict(chat)
        raise TypeError(f"expected a Chat dict or an id, got {chat!r}")

    def _resolve_message_arg(self, message: Any) -> JSON:
        """The stored (live) Message JSON for a record/JSON/PTB message."""
        if hasattr(message, "to_dict") and not isinstance(message, dict):
            message = message.to_dict()
        if not isinstance(message, dict) or "message_id" not in message:
            raise TypeError(f"expected a message record or Message JSON, got {message!r}")
        if "chat_id" in message:
            chat_key = self._lookup_key(message["chat_id"])
        elif isinstance(message.get("chat"), dict):
            chat_key = self._lookup_key(message["chat"]["id"])
        else:
            raise TypeError("message has neither chat_id nor chat")
        stored = self._find_message(chat_key, int(message["message_id"]))
        if stored is None:
            raise KeyError(f"message {message['message_id']} in chat {chat_key} is not stored "
                           "(never sent or deleted)")
        return stored

    @staticmethod
    def _reply_copy(msg: JSON) -> JSON:
        reply = copy.deepcopy(msg)
        reply.pop("reply_to_message", None)
        return reply

    def _chat_instance(self, chat_id: Any) -> str:
        seed = zlib.crc32(f"{self._token}:{chat_id}".encode())
        return str((seed * 0x9E3779B97F4A7C15) % (2**63) - 2**62)

    def _enqueue(self, update: JSON) -> JSON:
        with self._lock:
            if "update_id" not in update:
                update["update_id"] = self._next_update_id
            update_id = int(update["update_id"])
            self._next_update_id = max(self._next_update_id, update_id + 1)
            self._all_updates[update_id] = update
            self._pending.append(_Pending(update))
        self._notify_updates()
        return copy.deepcopy(update)

    def _notify_updates(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._fire_updates_event()
        else:
            loop.call_soon_threadsafe(self._fire_updates_event)

    def _fire_updates_event(self) -> None:
        event, self._updates_event = self._updates_event, asyncio.Event()
        event.set()

    @staticmethod
    def _commands_key(scope: Any, language_code: Any) -> str:
        scope_obj = scope if isinstance(scope, dict) else {"type": "default"}
        return json.dumps([scope_obj, language_code or ""], sort_keys=True)

    def _predicate_caller(self, predicate: Callable[..., Any]) -> Callable[[], Any]:
        """``predicate``, or ``predicate(self)`` if it takes an argument, as a call without one."""
        try:
            params = inspect.signature(predicate).parameters.values()
        except (TypeError, ValueError):
            return predicate
        wants_arg = any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY,
                                                            p.POSITIONAL_OR_KEYWORD)
                        for p in params)
        return (lambda: predicate(self)) if wants_arg else predicate

    # ================================================================ getUpdates

    def _confirm(self, offset: int) -> None:
        if offset < 0:
            keep = sorted(self._pending, key=lambda p: p.update_id)[offset:]
            self._pending = keep
            return
        self._pending = [p for p in self._pending if p.update_id >= offset or p.redeliver]
        if self.confirmed_offset is None or offset > self.confirmed_offset:
            self.confirmed_offset = offset

    def _select_updates(self, limit: int) -> list[JSON]:
        allowed = self._allowed_updates
        kept: list[_Pending] = []
        for pending in self._pending:
            if _kind_of_update(pending.update) in allowed:
                kept.append(pending)
        self._pending = kept  # updates of types not allowed are dropped
        batch = sorted(kept, key=lambda p: p.update_id)[:limit]
        for pending in batch:
            pending.redeliver = False
        return [copy.deepcopy(p.update) for p in batch]

    async def _get_updates(self, params: JSON, files: dict[str, UploadedFile]) -> list[JSON]:
        with self._lock:
            if self._webhook.get("url"):
                raise ApiError(409, "Conflict: can't use getUpdates method while webhook is "
                                    "active; use deleteWebhook to delete the webhook first")
            offset = params.get("offset")
            limit = min(max(_as_int(params.get("limit", 100), "limit"), 1), 100)
            timeout = max(float(params.get("timeout", 0) or 0), 0.0)
            if self.max_poll_timeout is not None:
                timeout = min(timeout, self.max_poll_timeout)
            allowed = params.get("allowed_updates")
            if isinstance(allowed, list):
                self._allowed_updates = (frozenset(allowed) & _ALL_UPDATE_TYPES) or (
                    _DEFAULT_ALLOWED_UPDATES)
            if offset is not None:
                self._confirm(_as_int(offset, "offset"))
            self._poll_generation += 1
            generation = self._poll_generation
        self._notify_updates()  # wakes an older poller, which then answers 409
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if generation != self._poll_generation:
                    raise ApiError(409, "Conflict: terminated by other getUpdates request; "
                                        "make sure that only one bot instance is running")
                batch = self._select_updates(limit)
                event = self._updates_event
            remaining = deadline - time.monotonic()
            if batch or self._closing or remaining <= 0:
                return batch
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                pass

    # ================================================================ validation

    def _format(self, text: Any, parse_mode: Any, entities: Any, *, caption: bool
                ) -> tuple[str, list[JSON]]:
        """Parse text/caption; returns (visible text, entities) or raises 400."""
        text = "" if text is None else str(text)
        try:
            plain, parsed = parse_formatted(
                text, parse_mode if isinstance(parse_mode, str) else None,
                strict_ampersand=self.strict_html_ampersand)
        except EntityParseError as exc:
            raise ApiError(400, f"Bad Request: can't parse entities: {exc}") from None
        except ValueError:
            raise ApiError(400, f"Bad Request: unsupported parse_mode {parse_mode!r}") from None
        if not parse_mode and entities:
            if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
                raise ApiError(400, "Bad Request: can't parse entities JSON object")
            parsed = [dict(e) for e in entities]
        size = utf16_len(plain)
        for ent in parsed:
            if ent.get("offset", 0) + ent.get("length", 0) > size:
                raise ApiError(400, "Bad Request: entity beyond the end of the text")
        if caption:
            if size > CAPTION_LIMIT:
                raise ApiError(400, "Bad Request: message caption is too long")
        else:
            if not plain.strip():
                raise ApiError(400, "Bad Request: message text is empty")
            if size > TEXT_LIMIT:
                raise ApiError(400, "Bad Request: message is too long")
        return plain, parsed

    @staticmethod
    def _validate_markup(markup: Any, *, inline_only: bool = False) -> Any:
        if markup is None:
            return None
        if isinstance(markup, str):
            try:
                markup = json.loads(markup)
            except ValueError:
                raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON "
                                    "object") from None
        if not isinstance(markup, dict):
            raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
        if "inline_keyboard" in markup:
            rows = markup["inline_keyboard"]
            if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
                raise ApiError(400, 'Bad Request: field "inline_keyboard" of the '
                                    "InlineKeyboardMarkup should be an Array of Arrays")
            if sum(len(r) for r in rows) > MAX_BUTTONS:
                raise ApiError(400, "Bad Request: reply markup is too long")
            for row in rows:
                for btn in row:
                    FakeBotAPI._validate_inline_button(btn)
        elif inline_only:
            raise ApiError(400, "Bad Request: inline keyboard expected")
        elif "keyboard" in markup:
            rows = markup["keyboard"]
            if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
                raise ApiError(400, 'Bad Request: field "keyboard" of the ReplyKeyboardMarkup '
                                    "should be an Array of Arrays")
        elif not ({"remove_keyboard", "force_reply"} & markup.keys()):
            raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
        return markup

    @staticmethod
    def _validate_inline_button(btn: Any) -> None:
        if not isinstance(btn, dict) or not isinstance(btn.get("text"), str):
            raise ApiError(400, "Bad Request: can't parse inline keyboard button: "
                                "Field \"text\" must be of type String")
        if not any(k in btn for k in _BUTTON_ACTIONS):
            raise ApiError(400, "Bad Request: can't parse inline keyboard button: "
                                "Text buttons are unallowed in the inline keyboard")
        if "callback_data" in btn:
            data = btn["callback_data"]
            if not isinstance(data, str) or not 1 <= len(data.encode("utf-8")) <= (
                    CALLBACK_DATA_LIMIT):
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        if "url" in btn:
            url = btn["url"]
            if not isinstance(url, str) or not re.match(r"^(https?|tg)://\S+$", url):
                raise ApiError(400, f"Bad Request: inline keyboard button URL '{url}' is "
                                    "invalid: Wrong HTTP URL")

    def _input_file(self, kind: str, value: Any, files: dict[str, UploadedFile], *,
                    field_name: str) -> StoredFile:
        upload = files.get(field_name)
        if upload is None and isinstance(value, str) and value.startswith("attach://"):
            upload = files.get(value[len("attach://"):])
            if upload is None:
                raise ApiError(400, f"Bad Request: file {value} not found in the request")
        if upload is not None:
            if not upload.data:
                raise ApiError(400, "Bad Request: file must be non-empty")
            mime = upload.content_type
            if mime in (None, "application/octet-stream"):
                mime = None
            return self._files.register(kind, file_name=upload.filename, mime_type=mime,
                                        content=upload.data)
        if value is None or value == "":
            raise ApiError(400, f"Bad Request: there is no {field_name} in the request")
        if not isinstance(value, str):
            raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
        if value.startswith(("http://", "https://")):
            name = value.rstrip("/").rsplit("/", 1)[-1] or None
            return self._files.register(kind, file_name=name)
        stored = self._files.get(value)
        if stored is None:
            if self.strict_file_ids:
                raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
            self._files.adopt({"file_id": value}, kind)
            stored = self._files.get(value)
            assert stored is not None
        if not stored.adopted and stored.kind != kind:
            raise ApiError(400, f"Bad Request: can't use file of type {stored.kind.title()} "
                                f"as {kind.title()}")
        return stored

    def _resolve_reply(self, chat_key: ChatKey, params: JSON) -> JSON | None:
        reply_params = params.get("reply_parameters")
        allow = bool(params.get("allow_sending_without_reply"))
        target_chat: Any = chat_key
        message_id = params.get("reply_to_message_id")
        if isinstance(reply_params, dict):
            message_id = reply_params.get("message_id")
            allow = allow or bool(reply_params.get("allow_sending_without_reply"))
            target_chat = reply_params.get("chat_id", chat_key)
        if message_id is None:
            return None
        target = self._find_message(self._lookup_key(target_chat), _as_int(message_id,
                                                                          "message_id"))
        if target is None:
            if allow:
                return None
            raise ApiError(400, "Bad Request: message to be replied not found")
        return self._reply_copy(target)

    # ================================================================ message creation

    def _commit(
        self,
        method: str,
        chat_key: ChatKey,
        params: JSON,
        items: list[tuple[JSON, JSON]],
        *,
        markup: Any = None,
        reply: JSON | None = None,
        media_group_id: str | None = None,
    ) -> list[JSON]:
        """Blocked/rate checks, then store the messages and record them.

        ``items``: (message content, extra record fields) per message.
        """
        self._check_blocked(chat_key)
        self._check_rate(method, chat_key)
        chat = self._chat(chat_key)
        now = self._clock()
        created: list[JSON] = []
        for content, extra in items:
            content = dict(content)
            if isinstance(markup, dict) and "inline_keyboard" in markup:
                content["reply_markup"] = markup
            if params.get("protect_content"):
                content["has_protected_content"] = True
            if reply is not None:
                content["reply_to_message"] = reply
            if media_group_id is not None:
                content["media_group_id"] = media_group_id
            if params.get("message_thread_id") is not None:
                content["message_thread_id"] = params["message_thread_id"]
            msg = self._store_message(chat, self._bot_user, content)
            snapshot = copy.deepcopy(msg)
            record: SentRecord = {
                "method": method,
                "chat_id": chat_key,
                "message_id": msg["message_id"],
                "text": None,
                "caption": None,
                "plain_text": msg.get("text", msg.get("caption")),
                "parse_mode": params.get("parse_mode"),
                "entities": msg.get("entities", msg.get("caption_entities", [])),
                "reply_markup": markup,
                "protect_content": bool(params.get("protect_content")),
                "disable_notification": bool(params.get("disable_notification")),
                "file_id": self._main_file_id(msg),
                "media_type": next((k for k in _MEDIA_KINDS if k in msg), None),
                "media_group_id": media_group_id,
                "reply_to_message_id": reply["message_id"] if reply else None,
                "message_thread_id": params.get("message_thread_id"),
                "from_chat_id": None,
                "source_message_id": None,
                "params": params,
                "time": now,
                "date": msg["date"],
                "message": snapshot,
            }
            record.update(extra)  # type: ignore[typeddict-item]
            self._sent.append(record)
            self._sent_by_chat[chat_key].append(record)
            created.append(snapshot)
        return created

    @staticmethod
    def _main_file_id(msg: JSON) -> str | None:
        for kind in _MEDIA_KINDS:
            if kind in msg:
                obj = msg[kind]
                return str(obj[-1]["file_id"]) if isinstance(obj, list) else str(obj["file_id"])
        return None

    def _caption_content(self, params: JSON, content: JSON) -> JSON:
        caption = params.get("caption")
        if caption is not None and caption != "":
            plain, ents = self._format(caption, params.get("parse_mode"),
                                       params.get("caption_entities"), caption=True)
            if plain:
                content["caption"] = plain
            if ents:
                content["caption_entities"] = ents
        return content

    # ---- handlers: sending --------------------------------------------------------

    def _send_message(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        chat_key = self._require_chat(params)
        text = params.get("text")
        if text is None or text == "":
            raise ApiError(400, "Bad Request: message text is empty")
        plain, ents = self._format(text, params.get("parse_mode"), params.get("entities"),
                                   caption=False)
        content: JSON = {"text": plain}
        if ents:
            content["entities"] = ents
        if isinstance(params.get("link_preview_options"), dict):
            content["link_preview_options"] = params["link_preview_options"]
        markup = self._validate_markup(params.get("reply_markup"))
        reply = self._resolve_reply(chat_key, params)
        [msg] = self._commit("sendMessage", chat_key, params, [(content, {"text": str(text)})],
                             markup=markup, reply=reply)
        return msg

    def _make_media_sender(self, kind: str) -> MethodHandler:
        method = "send" + "".join(part.title() for part in kind.split("_"))

        def handler(params: JSON, files: dict[str, UploadedFile]) -> JSON:
            chat_key = self._require_chat(params)
            stored = self._input_file(kind, params.get(kind), files, field_name=kind)
            content: JSON = {kind: FileRegistry.media_json(stored)}
            if kind in _CAPTIONABLE:
                self._caption_content(params, content)
            markup = self._validate_markup(params.get("reply_markup"))
            reply = self._resolve_reply(chat_key, params)
            caption = params.get("caption")
            [msg] = self._commit(method, chat_key, params, [
                (content, {"caption": caption if caption not in (None, "") else None})],
                markup=markup, reply=reply)
            return msg

        handler.__name__ = f"_{method}"
        return handler

    def _send_simple(self, method: str, build: Callable[[JSON], JSON]) -> MethodHandler:
        def handler(params: JSON, files: dict[str, UploadedFile]) -> JSON:
            chat_key = self._require_chat(params)
            content = build(params)
            markup = self._validate_markup(params.get("reply_markup"))
            reply = self._resolve_reply(chat_key, params)
            [msg] = self._commit(method, chat_key, params, [(content, {})], markup=markup,
                                 reply=reply)
            return msg

        return handler

    @staticmethod
    def _location_content(params: JSON) -> JSON:
        try:
            lat, lon = float(params["latitude"]), float(params["longitude"])
        except (KeyError, TypeError, ValueError):
            raise ApiError(400, "Bad Request: wrong latitude or longitude") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ApiError(400, "Bad Request: wrong latitude or longitude")
        return {"location": {"latitude": lat, "longitude": lon}}

    @staticmethod
    def _contact_content(params: JSON) -> JSON:
        if not params.get("phone_number") or not params.get("first_name"):
            raise ApiError(400, "Bad Request: phone number and first name must be non-empty")
        contact = {"phone_number": str(params["phone_number"]),
                   "first_name": str(params["first_name"])}
        if params.get("last_name"):
            contact["last_name"] = str(params["last_name"])
        return {"contact": contact}

    def _dice_content(self, params: JSON) -> JSON:
        emoji = params.get("emoji") or "🎲"
        top = {"🎲": 6, "🎯": 6, "🎳": 6, "🏀": 5, "⚽": 5, "🎰": 64}.get(emoji)
        if top is None:
            raise ApiError(400, "Bad Request: DICE_EMOJI_INVALID")
        return {"dice": {"emoji": emoji, "value": self.rng.randint(1, top)}}

    def _send_media_group(self, params: JSON, files: dict[str, UploadedFile]) -> list[JSON]:
        chat_key = self._require_chat(params)
        media = params.get("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise ApiError(400, "Bad Request: wrong number of media in the group "
                                "(must be 2-10)")
        items: list[tuple[JSON, JSON]] = []
        for item in media:
            if not isinstance(item, dict) or item.get("type") not in (
                    "photo", "video", "document", "audio"):
                raise ApiError(400, "Bad Request: wrong media type in the group")
            kind = str(item["type"])
            stored = self._input_file(kind, item.get("media"), files, field_name="media")
            content: JSON = {kind: FileRegistry.media_json(stored)}
            self._caption_content(item, content)
            caption = item.get("caption")
            items.append((content, {"caption": caption if caption not in (None, "") else None,
                                    "parse_mode": item.get("parse_mode")}))
        reply = self._resolve_reply(chat_key, params)
        self._media_group_counter += 1
        group_id = str(13_800_000_000_000_000 + self._media_group_counter)
        return self._commit("sendMediaGroup", chat_key, params, items, reply=reply,
                            media_group_id=group_id)

    # ---- handlers: copies and forwards -----------------------------------------------

    def _source_message(self, params: JSON, message_id: Any, action: str) -> tuple[ChatKey, JSON]:
        from_chat = self._require_chat(params, "from_chat_id")
        msg = self._find_message(from_chat, _as_int(message_id, "message_id"))
        if msg is None:
            raise ApiError(400, f"Bad Request: message to {action} not found")
        if msg.get("has_protected_content"):
            raise ApiError(400, f"Bad Request: message can't be {action}ed"
                           if action == "forward" else "Bad Request: message can't be copied")
        if not any(k in msg for k in _CONTENT_KEYS):
            raise ApiError(400, f"Bad Request: message can't be {action}ed"
                           if action == "forward" else "Bad Request: message can't be copied")
        return from_chat, msg

    def _copy_content(self, msg: JSON, params: JSON | None) -> tuple[JSON, JSON]:
        content = {k: copy.deepcopy(msg[k]) for k in _CONTENT_KEYS if k in msg}
        if params is not None and "caption" in params and any(k in msg for k in _CAPTIONABLE):
            content.pop("caption", None)
            content.pop("caption_entities", None)
            self._caption_content(params, content)
        extra = {"text": content.get("text"), "caption": content.get("caption")}
        return content, extra

    def _copy_message(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        chat_key = self._require_chat(params)
        from_chat, msg = self._source_message(params, params.get("message_id"), "copy")
        content, extra = self._copy_content(msg, params)
        extra.update(from_chat_id=from_chat, source_message_id=msg["message_id"])
        markup = self._validate_markup(params.get("reply_markup"))
        reply = self._resolve_reply(chat_key, params)
        [created] = self._commit("copyMessage", chat_key, params, [(content, extra)],
                                 markup=markup, reply=reply)
        return {"message_id": created["message_id"]}

    def _forward_origin(self, msg: JSON) -> JSON:
        chat = msg.get("chat", {})
        if chat.get("type") == "channel":
            return {"type": "channel", "chat": chat, "message_id": msg["message_id"],
                    "date": msg["date"]}
        return {"type": "user", "sender_user": msg.get("from", self._bot_user),
                "date": msg.get("forward_origin", {}).get("date", msg["date"])}

    def _forward_content(self, msg: JSON) -> tuple[JSON, JSON]:
        content, extra = self._copy_content(msg, None)
        content["forward_origin"] = msg.get("forward_origin") or self._forward_origin(msg)
        return content, extra

    def _forward_message(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        chat_key = self._require_chat(params)
        from_chat, msg = self._source_message(params, params.get("message_id"), "forward")
        content, extra = self._forward_content(msg)
        extra.update(from_chat_id=from_chat, source_message_id=msg["message_id"])
        [created] = self._commit("forwardMessage", chat_key, params, [(content, extra)])
        return created

    def _copy_or_forward_many(self, method: str, forward: bool) -> MethodHandler:
        def handler(params: JSON, files: dict[str, UploadedFile]) -> list[JSON]:
            chat_key = self._require_chat(params)
            ids = params.get("message_ids")
            if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
                raise ApiError(400, "Bad Request: message_ids must be a list of 1-100 ids")
            items: list[tuple[JSON, JSON]] = []
            for message_id in sorted(_as_int(i, "message_id") for i in ids):
                try:
                    from_chat, msg = self._source_message(
                        params, message_id, "forward" if forward else "copy")
                except ApiError:
                    continue  # Telegram skips messages that can't be copied/forwarded
                content, extra = (self._forward_content(msg) if forward
                                  else self._copy_content(msg, None))
                extra.update(from_chat_id=from_chat, source_message_id=message_id)
                items.append((content, extra))
            if not items:
                raise ApiError(400, f"Bad Request: there are no messages to "
                                    f"{'forward' if forward else 'copy'}")
            created = self._commit(method, chat_key, params, items)
            return [{"message_id": m["message_id"]} for m in created]

        return handler

    # ---- handlers: edits and deletion -------------------------------------------------

    def _edit_target(self, params: JSON) -> JSON | None:
        if params.get("inline_message_id"):
            return None
        chat_key = self._require_chat(params)
        if params.get("message_id") is None:
            raise ApiError(400, "Bad Request: message identifier is not specified")
        msg = self._find_message(chat_key, _as_int(params["message_id"], "message_id"))
        if msg is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        if msg.get("from", {}).get("id") != self._bot_user["id"]:
            raise ApiError(400, "Bad Request: message can't be edited")
        self._check_blocked(chat_key)
        return msg

    def _apply_edit(self, method: str, msg: JSON | None, params: JSON, new: JSON,
                    markup: Any) -> JSON | bool:
        """Replace the fields in ``new`` (None = remove) and the inline keyboard."""
        record = {"method": method, "chat_id": None, "message_id": None,
                  "text": params.get("text"), "caption": params.get("caption"),
                  "parse_mode": params.get("parse_mode"), "reply_markup": markup,
                  "inline_message_id": params.get("inline_message_id"), "params": params,
                  "time": self._clock()}
        if msg is None:  # inline message: nothing stored to compare with
            self._edits.append(record)
            return True
        inline = markup if isinstance(markup, dict) and "inline_keyboard" in markup else None
        before = {k: msg.get(k) for k in (*new, "reply_markup")}
        after = dict(new, reply_markup=inline)
        if before == after:
            raise ApiError(400, _NOT_MODIFIED)
        for key, value in after.items():
            if value is None:
                msg.pop(key, None)
            else:
                msg[key] = value
        msg["edit_date"] = int(time.time())
        record.update(chat_id=self._lookup_key(msg["chat"]["id"]), message_id=msg["message_id"])
        self._edits.append(record)
        return copy.deepcopy(msg)

    def _edit_message_text(self, params: JSON, files: dict[str, UploadedFile]) -> JSON | bool:
        msg = self._edit_target(params)
        if msg is not None and "text" not in msg:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        text = params.get("text")
        if text is None or text == "":
            raise ApiError(400, "Bad Request: message text is empty")
        plain, ents = self._format(text, params.get("parse_mode"), params.get("entities"),
                                   caption=False)
        markup = self._validate_markup(params.get("reply_markup"), inline_only=True)
        return self._apply_edit("editMessageText", msg, params,
                                {"text": plain, "entities": ents or None}, markup)

    def _edit_message_caption(self, params: JSON, files: dict[str, UploadedFile]
                              ) -> JSON | bool:
        msg = self._edit_target(params)
        if msg is not None and not any(k in msg for k in _CAPTIONABLE):
            raise ApiError(400, "Bad Request: there is no caption in the message to edit")
        content = self._caption_content(params, {})
        markup = self._validate_markup(params.get("reply_markup"), inline_only=True)
        return self._apply_edit("editMessageCaption", msg, params, {
            "caption": content.get("caption"),
            "caption_entities": content.get("caption_entities")}, markup)

    def _edit_message_reply_markup(self, params: JSON, files: dict[str, UploadedFile]
                                   ) -> JSON | bool:
        msg = self._edit_target(params)
        markup = self._validate_markup(params.get("reply_markup"), inline_only=True)
        return self._apply_edit("editMessageReplyMarkup", msg, params, {}, markup)

    def _delete_message(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        chat_key = self._require_chat(params)
        message_id = _as_int(params.get("message_id"), "message_id")
        chat = self._chats.get(chat_key)
        if chat is None or chat.messages.pop(message_id, None) is None:
            raise ApiError(400, "Bad Request: message to delete not found")
        self._deleted.append({"chat_id": chat_key, "message_id": message_id,
                              "time": self._clock()})
        return True

    def _delete_messages(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        chat_key = self._require_chat(params)
        ids = params.get("message_ids")
        if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
            raise ApiError(400, "Bad Request: message_ids must be a list of 1-100 ids")
        chat = self._chats.get(chat_key)
        for raw_id in ids:
            message_id = _as_int(raw_id, "message_id")
            if chat is not None and chat.messages.pop(message_id, None) is not None:
                self._deleted.append({"chat_id": chat_key, "message_id": message_id,
                                      "time": self._clock()})
        return True

    # ---- handlers: callbacks, actions ------------------------------------------------

    def _answer_callback_query(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        query_id = str(params.get("callback_query_id", ""))
        state = self._callbacks.get(query_id)
        if state is None or state["answered"]:
            raise ApiError(400, _CALLBACK_INVALID)
        state["answered"] = True
        self._callback_answers.append({
            "callback_query_id": query_id,
            "text": params.get("text"),
            "show_alert": bool(params.get("show_alert", False)),
            "url": params.get("url"),
            "cache_time": params.get("cache_time"),
            "time": self._clock(),
        })
        return True

    def _send_chat_action(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        chat_key = self._require_chat(params)
        if params.get("action") not in _CHAT_ACTIONS:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        self._check_blocked(chat_key)
        return True

    # ---- handlers: bot/chat info ------------------------------------------------------

    def _get_me(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        return dict(self._bot_user, can_join_groups=True, can_read_all_group_messages=False,
                    supports_inline_queries=False, can_connect_to_business=False,
                    has_main_web_app=False)

    def _get_chat(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        chat_key = self._require_chat(params)
        if isinstance(chat_key, str):
            raise ApiError(400, "Bad Request: chat not found")
        info = dict(self._chat(chat_key).info)
        info.update(accent_color_id=0, max_reaction_count=11, accepted_gift_types={
            "unlimited_gifts": True, "limited_gifts": True, "unique_gifts": True,
            "premium_subscription": True, "gifts_from_channels": True})
        return info

    def _get_chat_member(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        self._require_chat(params)
        user_id = _as_int(params.get("user_id"), "user_id")
        user = self._bot_user if user_id == self._bot_user["id"] else (
            self._users.get(user_id) or make_user(user_id, f"User{user_id}"))
        return {"status": "member", "user": dict(user)}

    def _get_file(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        stored = self._files.get(str(params.get("file_id", "")))
        if stored is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        file_id = str(params["file_id"])
        if stored.file_size > GET_FILE_LIMIT:
            raise ApiError(400, "Bad Request: file is too big")
        unique = stored.file_unique_id
        for size in stored.sizes:
            if size["file_id"] == file_id:
                unique = size["file_unique_id"]
        return {"file_id": file_id, "file_unique_id": unique, "file_size": stored.file_size,
                "file_path": stored.file_path}

    def _set_my_commands(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise ApiError(400, "Bad Request: commands must be a list of at most 100")
        for cmd in commands:
            if not isinstance(cmd, dict) or not re.fullmatch(r"[a-z0-9_]{1,32}",
                                                            str(cmd.get("command", ""))):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(cmd.get("description", ""))) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        key = self._commands_key(params.get("scope"), params.get("language_code"))
        self._commands[key] = [{"command": c["command"], "description": c["description"]}
                               for c in commands]
        return True

    def _get_my_commands(self, params: JSON, files: dict[str, UploadedFile]) -> list[JSON]:
        key = self._commands_key(params.get("scope"), params.get("language_code"))
        return [dict(c) for c in self._commands.get(key, [])]

    def _delete_my_commands(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        self._commands.pop(self._commands_key(params.get("scope"),
                                              params.get("language_code")), None)
        return True

    def _set_chat_menu_button(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        key = str(params.get("chat_id", ""))
        self._menu_buttons[key] = params.get("menu_button") or {"type": "default"}
        return True

    def _get_chat_menu_button(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        key = str(params.get("chat_id", ""))
        return dict(self._menu_buttons.get(key) or self._menu_buttons.get("")
                    or {"type": "commands"})

    def _set_webhook(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        url = str(params.get("url") or "")
        if url and not url.startswith("https://"):
            raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for "
                                "webhook")
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        self._webhook = {"url": url, "allowed_updates": params.get("allowed_updates"),
                         "secret_token": secret, "max_connections": params.get("max_connections") or 40}
        if params.get("drop_pending_updates"):
            self._pending.clear()
        if url:
            self._poll_generation += 1  # a long poll in progress ends (409 from then on)
            self.webhook.ensure_running()
        return True

    def _delete_webhook(self, params: JSON, files: dict[str, UploadedFile]) -> bool:
        self._webhook = {"url": ""}
        if params.get("drop_pending_updates"):
            self._pending.clear()
        self._notify_updates()  # the delivery loop sees the webhook gone and ends
        return True

    def _get_webhook_info(self, params: JSON, files: dict[str, UploadedFile]) -> JSON:
        info: JSON = {"url": self._webhook.get("url", ""), "has_custom_certificate": False,
                      "pending_update_count": len(self._pending)}
        if info["url"]:
            info["max_connections"] = self._webhook.get("max_connections")
            if self._webhook.get("allowed_updates"):
                info["allowed_updates"] = list(self._webhook["allowed_updates"])
        if self.webhook.last_error is not None:
            info["last_error_date"], info["last_error_message"] = self.webhook.last_error
        return info

    @staticmethod
    def _returns_true(params: JSON, files: dict[str, UploadedFile]) -> bool:
        return True

    def _build_method_table(self) -> dict[str, tuple[str, MethodHandler]]:
        handlers: dict[str, MethodHandler] = {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "deleteWebhook": self._delete_webhook,
            "setWebhook": self._set_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "setChatMenuButton": self._set_chat_menu_button,
            "getChatMenuButton": self._get_chat_menu_button,
            "sendMessage": self._send_message,
            "sendMediaGroup": self._send_media_group,
            "sendLocation": self._send_simple("sendLocation", self._location_content),
            "sendContact": self._send_simple("sendContact", self._contact_content),
            "sendDice": self._send_simple("sendDice", self._dice_content),
            "copyMessage": self._copy_message,
            "copyMessages": self._copy_or_forward_many("copyMessages", forward=False),
            "forwardMessage": self._forward_message,
            "forwardMessages": self._copy_or_forward_many("forwardMessages", forward=True),
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "deleteMessages": self._delete_messages,
            "answerCallbackQuery": self._answer_callback_query,
            "sendChatAction": self._send_chat_action,
            "getChat": self._get_chat,
            "getChatMember": self._get_chat_member,
            "getFile": self._get_file,
        }
        for kind in _MEDIA_KINDS:
            handler = self._make_media_sender(kind)
            handlers["send" + "".join(p.title() for p in kind.split("_"))] = handler
        for name in ("close", "logOut", "pinChatMessage", "unpinChatMessage",
                     "unpinAllChatMessages", "setMessageReaction", "leaveChat",
                     "setMyDescription", "setMyShortDescription", "setMyName"):
            handlers[name] = self._returns_true
        return {name.lower(): (name, handler) for name, handler in handlers.items()}
