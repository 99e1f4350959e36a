"""The operator's HTTP endpoint: /healthz and /metrics (off by default; `[health]`).

Bound to 127.0.0.1 unless configured otherwise: it is for the machine's own monitoring
(systemd, a container health check, Prometheus through a local agent or a reverse proxy),
not for the internet.

/healthz answers 200 when every check passes, else 503, with a JSON body naming each
check: updates are being received (the poller's loop is running and fetched recently; in
webhook mode the receiver is listening, with the time since the last request),
the outbox sender is running and went round recently, the database answers, the oldest
unsent message is not older than `health.outbox_stuck_seconds`, and the
scheduler ticked recently (with the time of the last scheduled run). /metrics is
Prometheus' text format (bot/metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text

from bot import liveness, metrics
from bot.deps import Deps

log = logging.getLogger(__name__)

RECEIVER = "receiver"  # the poller taking updates in (webhook mode: the journal's sweep)
WEBHOOK = "webhook"  # the webhook receiver (bot/webhook.py), beating on each authenticated request
SENDER = "sender"  # the outbox sender
SCHEDULER = "scheduler"  # the job ticks (due steps, summaries, bulletins)
DB_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: dict[str, Any]


def _loop_check(name: str, stale_after: float) -> Check:
    s = liveness.status(name)
    running = s.running or not s.watched  # a loop without a task of its own (the JobQueue): its beats say it
    ok = running and s.age is not None and s.age <= stale_after
    return Check(ok, {"running": running, "seconds_since_last_beat": None if s.age is None else round(s.age, 1),
                      "stale_after_seconds": stale_after})


def _database_checks(deps: Deps) -> tuple[Check, Check, Check]:
    """The database answers; the oldest due unsent message; the last scheduled run."""
    from storage.models import OutboxMessage
    from storage.models_officials import ScheduledRun

    cfg = deps.config.health
    now = deps.clock.now()
    with deps.sessions.begin() as session:
        session.execute(text("SELECT 1"))
        oldest = session.scalar(select(func.min(OutboxMessage.created_at))
                                .where(OutboxMessage.status.in_(("pending", "sending"))))
        last_run = session.scalar(select(func.max(ScheduledRun.ran_at)))
    oldest = metrics._aware(oldest)
    late = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    outbox = Check(late <= cfg.outbox_stuck_seconds,
                   {"oldest_unsent_seconds": round(late, 1), "stuck_after_seconds": cfg.outbox_stuck_seconds})
    last_run = metrics._aware(last_run)
    return Check(True, {}), outbox, Check(True, {"last_run": last_run.isoformat() if last_run else None})


def _webhook_check() -> Check:
    """Webhook mode: the receiver listens and journals, and the journal's sweep runs. A quiet
    hour brings no request, so the time of the last one is told, not judged."""
    receiving, sweep = liveness.status(WEBHOOK), liveness.status(RECEIVER)
    ok = receiving.running and sweep.running
    return Check(ok, {"mode": "webhook", "listening": receiving.running, "journal_sweep_running": sweep.running,
                      "seconds_since_last_request": None if receiving.age is None else round(receiving.age, 1)})


async def checks(deps: Deps) -> dict[str, Check]:
    cfg = deps.config.health
    webhook = deps.config.telegram.mode == "webhook"
    result = {
        RECEIVER: _webhook_check() if webhook else _loop_check(RECEIVER, cfg.receive_stale_seconds),
        SENDER: _loop_check(SENDER, cfg.sender_stale_seconds),
    }
    try:
        db, outbox, last_run = await asyncio.wait_for(asyncio.to_thread(_database_checks, deps), DB_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        error = type(exc).__name__ if not isinstance(exc, TimeoutError) else "no answer in time"
        db, outbox, last_run = Check(False, {"error": error}), Check(False, {"error": "database"}), \
            Check(False, {"error": "database"})
    result["database"] = db
    result["outbox"] = outbox
    tick = _loop_check(SCHEDULER, cfg.scheduler_stale_seconds)
    result[SCHEDULER] = Check(tick.ok and last_run.ok, {**tick.detail, **last_run.detail})
    return result


class HealthServer:
    """A small HTTP/1.1 server on asyncio: GET /healthz, GET /metrics."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._server: asyncio.Server | None = None
        self._collector = metrics.DatabaseCollector(deps.sessions, deps.clock)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind now (an `OSError` if the port is taken): before anything else starts."""
        cfg = self.deps.config.health
        self._server = await asyncio.start_server(self._serve, cfg.listen, cfg.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 10)
            while (line := await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass  # headers: not needed
            parts = request.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
            if method not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"method not allowed\n"
            elif path == "/healthz":
                results = await checks(self.deps)
                ok = all(c.ok for c in results.values())
                payload = {"status": "ok" if ok else "unhealthy",
                           "checks": {k: {"ok": c.ok, **c.detail} for k, c in results.items()}}
                status, ctype, body = (200 if ok else 503), "application/json", \
                    (json.dumps(payload, indent=1) + "\n").encode()
            elif path == "/metrics":
                body = await asyncio.to_thread(metrics.exposition, self._collector)
                status, ctype = 200, "text/plain; version=0.0.4; charset=utf-8"
            else:
                status, ctype, body = 404, "text/plain", b"not found: try /healthz or /metrics\n"
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[status]
            head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                    "Cache-Control: no-store\r\nConnection: close\r\n\r\n").encode()
            writer.write(head + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # noqa: BLE001 - a monitoring request must never hurt the bot
            log.exception("health endpoint: request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
