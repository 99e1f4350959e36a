"""python-telegram-bot's requests over aiohttp instead of httpx.

Why: with many connections open, httpx's pool (httpcore) looks at every connection on each
request (is it idle, has it expired: a getpeername system call each) and that took about
a third of an intake update's CPU; aiohttp's connector takes an idle connection from a
queue. The rest is PTB's own: `BaseRequest` parses the answer and turns Telegram's errors
(RetryAfter, BadRequest, Forbidden, ...) into its exceptions; here only the transport's
errors are mapped, as PTB's HTTPXRequest maps them (a timeout is `TimedOut`, the rest
`NetworkError`).

Timeouts: `pool` is the wait for a free connection, `connect` for the TCP connection,
`read` for each read of the answer; aiohttp has no separate write timeout, so the write
counts in `read` (sock_read starts when the request is sent) and a file upload is given its
`write_timeout` on top.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


class AiohttpRequest(BaseRequest):
    __slots__ = ("_connect_timeout", "_pool_size", "_pool_timeout", "_read_timeout", "_session",
                 "_write_timeout", "_media_write_timeout")

    def __init__(self, connection_pool_size: int = 64, *, read_timeout: float | None = 5.0,
                 write_timeout: float | None = 5.0, connect_timeout: float | None = 5.0,
                 pool_timeout: float | None = 1.0, media_write_timeout: float | None = 20.0) -> None:
        self._pool_size = connection_pool_size
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._media_write_timeout = media_write_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            # No proxy or netrc from the environment (trust_env), as tipline configures the
            # Bot API's address itself.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=self._pool_size),
                headers={"User-Agent": self.USER_AGENT},
            )

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self._session is None or self._session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        files = request_data.multipart_data if request_data is not None and request_data.contains_files else None
        read = self._read_timeout if isinstance(read_timeout, DefaultValue) else read_timeout
        write = (self._media_write_timeout if files else self._write_timeout) \
            if isinstance(write_timeout, DefaultValue) else write_timeout
        connect = self._connect_timeout if isinstance(connect_timeout, DefaultValue) else connect_timeout
        pool = self._pool_timeout if isinstance(pool_timeout, DefaultValue) else pool_timeout
        sock_read = None if read is None else read + ((write or 0.0) if files else 0.0)
        timeout = aiohttp.ClientTimeout(
            total=None,
            # aiohttp's `connect` covers the wait for a pooled connection and the connect.
            connect=None if pool is None or connect is None else pool + connect,
            sock_connect=connect,
            sock_read=sock_read,
        )
        data: Any = None
        headers: dict[str, str] | None = None
        if files:
            form = aiohttp.FormData(quote_fields=False)
            for name, value in request_data.json_parameters.items():  # type: ignore[union-attr]
                form.add_field(name, value)
            for name, (filename, content, mimetype) in files.items():
                if not isinstance(content, (bytes, bytearray)):
                    content = content.read() if isinstance(content, io.IOBase) else content
                form.add_field(name, content, filename=filename or name, content_type=mimetype)
            data = form
        elif request_data is not None:
            # Form-encoded, as PTB's HTTPXRequest sends it; encoded here, not by aiohttp: given a
            # dict, aiohttp builds a FormData with a multipart writer and a fresh uuid4 boundary
            # for every request, which it then never uses (a tenth of the loop's HTTP cost).
            data = request_data.url_encoded_parameters().encode()
            headers = FORM_HEADERS
        try:
            async with self._session.request(method, url, data=data, headers=headers, timeout=timeout) as response:
                return response.status, await response.read()
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as err:
            raise TimedOut from err
        except aiohttp.ClientError as err:
            raise NetworkError(f"aiohttp.{err.__class__.__name__}: {err}") from err
