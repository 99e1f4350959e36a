"""The playground's page on 127.0.0.1: plain HTML/CSS/JS from bot/playground/static, the
state as JSON, live updates as server-sent events, and the people's actions as POSTs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from bot.config import LANGUAGES

if TYPE_CHECKING:
    from bot.playground.core import Playground

STATIC = Path(__file__).resolve().parent / "static"
_ENV = Environment(loader=FileSystemLoader(str(STATIC)), autoescape=select_autoescape(default=True),
                   undefined=StrictUndefined)
_CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def strings(playground: Playground, lang: str) -> dict[str, str]:
    """Every pg_* text of templates/<lang>/messages_playground.html; arguments stay as {name}
    placeholders for the script to fill in."""
    assert playground.runtime is not None
    texts = playground.runtime.deps.texts
    module = texts.env.get_template(f"{lang}/messages_playground.html").make_module({"lang": lang})
    out = {}
    for name in dir(module):
        if name.startswith("pg_"):
            macro = getattr(module, name)
            args = {a: "{" + a + "}" for a in macro.arguments}
            out[name] = str(Markup(str(macro(**args)).strip()).unescape())
    return out


def _lang(request: web.Request, playground: Playground) -> str:
    lang = request.query.get("lang") or playground.language
    return lang if lang in LANGUAGES else LANGUAGES[0]


_CSP = ("default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


async def start_web(playground: Playground, port: int) -> tuple[web.AppRunner, int]:
    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        # Only this machine's browser: other sites can neither post here (a custom header
        # forces a CORS preflight, which is never granted) nor reach it by DNS rebinding.
        host = (request.host or "").rsplit(":", 1)[0]
        if host not in ("127.0.0.1", "localhost"):
            raise web.HTTPForbidden()
        if request.method == "POST" and request.headers.get("X-Playground") != "1":
            raise web.HTTPForbidden()
        response = await handler(request)
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    app = web.Application(client_max_size=12 * 1024 * 1024, middlewares=[guard])
    routes = web.RouteTableDef()

    @routes.get("/")
    async def page(request: web.Request) -> web.Response:
        lang = _lang(request, playground)
        t = strings(playground, lang)
        html = _ENV.get_template("page.html").render(lang=lang, t=t, strings_json=Markup(
            json.dumps(t, ensure_ascii=False).replace("<", "\\u003c")), other="en" if lang != "en" else "zh-CN")
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})

    @routes.get("/static/{name}")
    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        path = STATIC / name
        if name == "page.html" or "/" in name or not path.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=path.read_bytes(), content_type=_CONTENT_TYPES.get(path.suffix, "text/plain"),
                            charset="utf-8")

    @routes.get("/api/state")
    async def state(request: web.Request) -> web.Response:
        return web.json_response(playground.snapshot())

    @routes.get("/api/events")
    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        seen = -1
        try:
            while True:
                if playground.seq == seen and playground.changed is not None:
                    try:
                        await asyncio.wait_for(playground.changed.wait(), 15)
                    except TimeoutError:
                        await response.write(b": keep-alive\n\n")
                        continue
                seen = playground.seq
                snap = json.dumps(playground.snapshot(), ensure_ascii=False)
                await response.write(f"data: {snap}\n\n".encode())
        except (ConnectionError, asyncio.CancelledError):
            return response

    async def act(request: web.Request, action: Any) -> web.Response:
        try:
            result = action()
            if asyncio.iscoroutine(result):
                result = await result
        except (KeyError, ValueError, TypeError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response({"ok": True, "result": result})

    @routes.post("/api/send")
    async def send(request: web.Request) -> web.Response:
        body = await request.json()
        return await act(request, lambda: playground.send_text(
            str(body["pane"]), str(body["text"]), _int_or_none(body.get("user"))))

    @routes.post("/api/upload")
    async def upload(request: web.Request) -> web.Response:
        form = await request.post()
        file = form.get("file")
        if not isinstance(file, web.FileField):
            return web.json_response({"ok": False, "error": "no file"}, status=400)
        data = file.file.read()
        return await act(request, lambda: playground.send_file(
            str(form.get("pane")), file.filename or "file", data, file.content_type,
            _int_or_none(form.get("user")), str(form.get("caption") or "")))

    @routes.post("/api/press")
    async def press(request: web.Request) -> web.Response:
        body = await request.json()
        return await act(request, lambda: playground.press(
            str(body["pane"]), int(body["message"]), str(body["data"]), _int_or_none(body.get("user"))))

    @routes.post("/api/clock")
    async def clock(request: web.Request) -> web.Response:
        body = await request.json()

        async def jump() -> int:
            return int((await playground.jump(str(body["jump"]))).total_seconds() // 60)

        return await act(request, jump)

    @routes.post("/api/add")
    async def add(request: web.Request) -> web.Response:
        body = await request.json()

        def do() -> str | None:
            pane = playground.add_citizen() if body.get("what") == "citizen" else playground.add_team()
            return pane.key if pane else None

        return await act(request, do)

    @routes.get("/file/{file_id}")
    async def file(request: web.Request) -> web.Response:
        found = playground.file(request.match_info["file_id"])
        if found is None:
            raise web.HTTPNotFound()
        data, mime, name = found
        headers = {"Content-Disposition": "inline" + (f"; filename*=UTF-8''{_quote(name)}" if name else ""),
                   "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self'"}
        if mime in ("text/html", "image/svg+xml", "application/xhtml+xml"):
            mime = "application/octet-stream"
        return web.Response(body=data, content_type=mime, headers=headers)

    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    server = getattr(site, "_server", None)
    actual = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port
    return runner, int(actual)


def _int_or_none(value: Any) -> int | None:
    if value in (None, ""):
        return None
    return int(value)


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
