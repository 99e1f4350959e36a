"""Assembly: build the PTB Application with tipline's handlers, limiter and jobs, and run it.

tipline does its own polling (bot/polling.py: journaled, so nothing is lost on a crash),
or in webhook mode its own receiver (bot/webhook.py: journaled before the HTTP 200), and
its own outbox delivery (bot/sender.py); PTB's Updater is not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from datetime import time, timedelta
from typing import Any

from sqlalchemy import Engine
from telegram import BotCommand, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackContext,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    ContextTypes,
    Defaults,
    MessageHandler,
    filters,
)

from bot import liveness, logs
from bot.clock import Clock, SystemClock
from bot.config import LANGUAGES, Config, require_secrets
from bot.deps import Deps, make_ephemeral_keys, make_keyring, make_router
from bot.drafts import SessionStore
from bot.http import AiohttpRequest
from bot.polling import ALLOWED_UPDATES, DurablePoller
from bot.ratelimit import PacingRateLimiter, retry_after_seconds
from bot.sender import OutboxSender
from bot.supervise import Backoff, LoopGaveUp, ThrottledLog
from bot.texts import Texts
from bot.webhook import WebhookReceiver
from bot import jobs
from bot.services import broadcast, schedule
from handlers import citizen, entry, errors, officials, staff, staff_admin, workflow
from handlers import intake as intake_flow
from handlers.common import BotData, Context, person_lang, reply
from storage.db import make_engine, make_sessions, upgrade

log = logging.getLogger(__name__)


def build_deps(config: Config, clock: Clock | None = None, engine: Engine | None = None) -> tuple[Deps, Engine]:
    engine = engine or make_engine(config.database.url, echo=config.database.echo)
    deps = Deps(
        config=config,
        sessions=make_sessions(engine),
        keyring=make_keyring(config),
        texts=Texts(config),
        clock=clock or SystemClock(),
        router=make_router(config),
        chats=SessionStore(timedelta(minutes=config.intake.draft_ttl_minutes)),
        ephemeral=make_ephemeral_keys(config),
    )
    return deps, engine


class TiplineApplication(Application):  # type: ignore[type-arg]
    """PTB's Application, with each update's conversations brought in from the database
    before its handlers run (the first time after a start, or changed by another process) and
    saved after (bot/conversations.py)."""

    async def process_update(self, update: object) -> None:
        deps: Deps = self.bot_data["deps"]
        store = deps.conversations
        if store is None or not isinstance(update, Update):
            await super().process_update(update)
            return
        slots = store.slots(update)
        if await store.load(self.bot_data, slots, update.update_id):
            store.skipped += 1  # handled and saved already (before the process died): not twice
            log.info("update %s was handled already: not handled again", update.update_id)
            return
        try:
            await super().process_update(update)
        finally:
            poller = self.bot_data.get("poller")
            failed = poller is not None and update.update_id in poller.failed_updates  # set by the error handler
            await store.flush(self.bot_data, slots, update.update_id, applied=not failed)


def build_application(deps: Deps) -> Application[Any, Any, Any, Any, Any, Any]:
    cfg = deps.config
    tg = cfg.telegram
    app = (
        ApplicationBuilder()
        .application_class(TiplineApplication)
        .token(tg.token.get_secret_value())
        .base_url(tg.base_url)
        .base_file_url(tg.base_file_url)
        .updater(None)
        .defaults(Defaults(parse_mode=ParseMode.HTML, tzinfo=cfg.campaign.tz))
        .context_types(ContextTypes(context=CallbackContext, bot_data=BotData))
        .rate_limiter(
            PacingRateLimiter(
                global_per_second=tg.global_per_second,
                per_chat_per_second=tg.per_chat_per_second,
                group_per_minute=tg.group_per_minute,
            )
        )
        # aiohttp, not httpx: a third less CPU per update (bot/http.py).
        .request(AiohttpRequest(64, pool_timeout=30.0))
        .get_updates_request(AiohttpRequest(1))
        .build()
    )
    app.bot_data["deps"] = deps
    register_handlers(app)
    app.job_queue.run_repeating(_sweep_sessions, interval=60, first=60, name="sweep-sessions",
                                job_kwargs={"misfire_grace_time": 60, "coalesce": True})
    # Due reminders and escalations live in the database; the first tick after a start
    # catches up on whatever fell due while the bot was down.
    sweep = deps.config.deadlines.sweep_seconds
    app.job_queue.run_repeating(jobs.tick, interval=sweep, first=0.5, name="due-steps",
                                job_kwargs={"misfire_grace_time": max(60, int(sweep * 4)), "coalesce": True})
    # Receipt codes whose message failed are sent again until delivered (or given up).
    app.job_queue.run_repeating(intake_flow.redeliver_receipts, interval=2, first=1, name="receipts",
                                job_kwargs={"misfire_grace_time": 60, "coalesce": True})
    register_schedule(app, deps)
    return app


def register_schedule(app: Application[Any, Any, Any, Any, Any, Any], deps: Deps) -> None:
    """The officials' timers, on PTB's JobQueue in the campaign's time zone.

    The daily summary and the bulletin have a timer each at their configured times;
    a frequent tick checks the clock against the due periods as well. The tick is the
    catch-up after downtime (its first run is right after start: APScheduler's jobs are
    not persisted) and lets tests move time with the injected clock. Whichever fires,
    `schedule.run_due` runs a (job, period) once: the database records it.
    """
    cfg = deps.config
    sch = cfg.scheduler
    app.bot_data["schedule_lock"] = asyncio.Lock()
    jk = {"misfire_grace_time": sch.misfire_grace_seconds, "coalesce": True}
    if sch.enabled:
        hh, mm = map(int, sch.summary_at.split(":"))
        app.job_queue.run_repeating(_scheduler_tick, interval=sch.tick_seconds, first=0.5, name="scheduler-tick",
                                    job_kwargs=jk)
        app.job_queue.run_daily(_scheduler_tick, time=time(hh, mm, tzinfo=cfg.campaign.tz), name="daily-summary",
                                job_kwargs=jk)
        app.job_queue.run_repeating(_scheduler_tick, interval=timedelta(days=sch.bulletin_every_days),
                                    first=schedule.next_bulletin_run(cfg, deps.clock.now()), name="bulletin",
                                    job_kwargs=jk)
    app.job_queue.run_repeating(_report_progress, interval=cfg.officials.progress_seconds,
                                first=cfg.officials.progress_seconds, name="broadcast-progress",
                                job_kwargs={"misfire_grace_time": 60, "coalesce": True})


def register_handlers(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    # Negative groups look at an update before the citizens' handlers (group 0). In a
    # group only the first matching handler runs, so each interceptor has a group of its
    # own and passes on (returns) when the update is not its business.
    # -3: a staff member in the middle of a guided flow (ask, reassign, outcome, extend).
    app.add_handler(CommandHandler("cancel", workflow.cancel_command), group=-3)
    app.add_handler(MessageHandler(filters.ChatType.PRIVATE & filters.TEXT & ~filters.COMMAND,
                                   workflow.on_private_text), group=-3)
    app.add_handler(MessageHandler(filters.ChatType.PRIVATE & ~filters.TEXT & ~filters.COMMAND,
                                   workflow.on_private_media), group=-3)
    # -2: the office typing a note for a bulletin draft.
    app.add_handler(MessageHandler(filters.TEXT, officials.on_note_text), group=-2)
    # -1 and 0: office staff entering phone and mail tips, before the citizens' handlers.
    entry.register(app)
    app.add_handler(CommandHandler("join", staff.join))
    app.add_handler(CommandHandler("language", staff.language_command))
    app.add_handler(CallbackQueryHandler(staff.on_language_button, pattern=r"^sl:"))
    app.add_handler(CommandHandler("staff", staff_admin.staff_command))
    app.add_handler(CallbackQueryHandler(staff_admin.on_staff_button, pattern=r"^sf:"))
    app.add_handler(CommandHandler("settings", officials.settings))
    app.add_handler(CommandHandler("unsubscribe", officials.unsubscribe))
    app.add_handler(CommandHandler("bulletins", officials.list_bulletins))
    app.add_handler(CallbackQueryHandler(officials.on_official_button, pattern=r"^of:"))
    app.add_handler(CallbackQueryHandler(officials.on_bulletin_button, pattern=r"^bl:"))
    app.add_handler(CommandHandler("start", citizen.start))
    app.add_handler(CommandHandler("help", citizen.help_command))
    app.add_handler(CommandHandler("cancel", citizen.cancel))
    app.add_handler(CallbackQueryHandler(staff.on_ack, pattern=r"^ack:"))
    app.add_handler(CallbackQueryHandler(workflow.on_case_button, pattern=r"^(ask|rea|out|ext|rcv):"))
    app.add_handler(CallbackQueryHandler(workflow.on_flow_button, pattern=r"^wf:"))
    app.add_handler(CallbackQueryHandler(citizen.on_button))
    app.add_handler(MessageHandler(filters.ChatType.PRIVATE & ~filters.COMMAND, citizen.on_message))
    app.add_handler(MessageHandler(filters.ChatType.PRIVATE & filters.COMMAND, _unknown_command))
    app.add_handler(ChatMemberHandler(staff.chat_member, ChatMemberHandler.MY_CHAT_MEMBER))
    app.add_error_handler(errors.on_error)


async def _unknown_command(update: Update, context: Context) -> None:
    deps = context.bot_data["deps"]
    await reply(update, context, deps.texts.msg(person_lang(update, context), "unknown_command"))


async def _sweep_sessions(context: Context) -> None:
    """Forget idle sessions in memory; delete expired conversations from the database and
    re-seal the live ones under the current key (so the journal's upkeep can destroy the old)."""
    deps: Deps = context.bot_data["deps"]
    deps.chats.sweep(deps.clock.now())
    store = deps.conversations
    if store is not None:
        await jobs.guard(context, "conversations").run(lambda: asyncio.to_thread(store.maintain, context.bot_data))


async def _scheduler_tick(context: Context) -> None:
    """Run the due summary and bulletin if they have not run (off the event loop: a
    broadcast to thousands of officials takes a moment to queue)."""
    deps: Deps = context.bot_data["deps"]
    lock: asyncio.Lock = context.bot_data["schedule_lock"]
    if lock.locked():
        return
    failures = context.bot_data.setdefault("schedule_failures", {})
    async with lock:
        done = await jobs.guard(context, "scheduler").run(
            lambda: asyncio.to_thread(schedule.run_due, deps, deps.clock.now(), failures))
    if done:
        deps.nudge_sender()


_upkeep_log = ThrottledLog(log)


async def _journal_upkeep(context: Context) -> None:
    poller: DurablePoller = context.bot_data["poller"]
    try:
        await asyncio.to_thread(poller.maintain)
    except Exception as exc:  # noqa: BLE001 - the next run tries again
        _upkeep_log("upkeep", logging.WARNING, "update journal upkeep failed (%s): will try again",
                    type(exc).__name__)


async def _report_progress(context: Context) -> None:
    deps: Deps = context.bot_data["deps"]

    def work() -> int:
        with deps.sessions.begin() as session:
            return broadcast.report_progress(session, deps, deps.clock.now())

    if await jobs.guard(context, "broadcast progress").run(lambda: asyncio.to_thread(work)):
        deps.nudge_sender()


async def register_webhook(app: Application[Any, Any, Any, Any, Any, Any], config: Config,
                           stopping: Callable[[], bool] = lambda: False) -> None:
    """Tell Telegram where to post updates (retried while Telegram cannot be reached; a refusal
    raises BadRequest). Pending updates are kept, never dropped, and the webhook is not
    deleted at shutdown: Telegram holds updates until a process is back."""
    tg = config.telegram
    backoff = Backoff(base=1.0, cap=30.0)
    while True:
        try:
            await app.bot.set_webhook(url=tg.webhook_url, secret_token=tg.webhook_secret_token.get_secret_value(),
                                      allowed_updates=ALLOWED_UPDATES, drop_pending_updates=False,
                                      max_connections=tg.webhook_max_connections)
            break
        except RetryAfter as exc:
            delay = retry_after_seconds(exc)
        except (TimedOut, NetworkError) as exc:
            if isinstance(exc, BadRequest):
                raise
            _webhook_log("set", logging.WARNING, "setWebhook failed (%s): retrying", type(exc).__name__)
            delay = backoff.next_delay()
        if stopping():
            return
        await asyncio.sleep(delay)
    log.info("webhook set: Telegram posts updates to telegram.webhook_url")


_webhook_log = ThrottledLog(log)


COMMANDS = ("start", "cancel", "help")  # the menu every chat sees; descriptions come from buttons.txt


class Runtime:
    """tipline running: the PTB application, the durable poller and the outbox sender."""

    def __init__(self, config: Config, clock: Clock | None = None, engine: Engine | None = None,
                 migrate: bool = True) -> None:
        self.config = config
        logs.quiet_libraries()  # whatever the host's logging set-up: no library logs an update
        self.deps, self.engine = build_deps(config, clock, engine)
        if migrate:
            upgrade(self.engine, keyring=self.deps.keyring)
        self.app = build_application(self.deps)
        self.sender = OutboxSender(self.app.bot, self.deps, on_give_up=self.give_up)
        self.failure: BaseException | None = None
        self.poller = DurablePoller(self.app, self.deps, timeout=config.telegram.poll_timeout_seconds,
                                    engine=self.engine)
        self.app.bot_data["poller"] = self.poller
        # The journal's upkeep: handled ids pruned, unneeded keys destroyed, SQLite's WAL truncated.
        every = config.journal.maintenance_seconds
        self.app.job_queue.run_repeating(_journal_upkeep, interval=every, first=every, name="journal-upkeep",
                                         job_kwargs={"misfire_grace_time": max(60, int(every * 4)),
                                                     "coalesce": True})
        self._poll_task: asyncio.Task[None] | None = None
        self.webhook: WebhookReceiver | None = None
        if config.telegram.mode == "webhook":
            self.webhook = WebhookReceiver(self.poller, config)

    async def start(self) -> None:
        await self.app.initialize()
        await self.app.start()
        texts = self.deps.texts
        with contextlib.suppress(TelegramError):  # a menu is a nicety: never a reason not to start
            for lang in LANGUAGES:
                commands = [BotCommand(c, texts.button(lang, f"command_{c}")) for c in COMMANDS]
                code = None if lang == self.config.campaign.default_language else lang.split("-")[0]
                await self.app.bot.set_my_commands(commands, language_code=code)
        self.sender.start()
        if self.webhook is not None:
            await self.webhook.start()  # bound already when `serve` checked the port
            await register_webhook(self.app, self.config, self.poller._stopping.is_set)
        self._poll_task = asyncio.create_task(self.poller.run(fetch=self.webhook is None), name="tipline-poller")
        liveness.watch("receiver", self._poll_task)
        liveness.watch("sender", self.sender._task)

    async def stop(self) -> None:
        """A graceful stop: finish the update at hand, let in-flight messages land."""
        if self.webhook is not None:  # the webhook stays set: Telegram keeps updates until a process is back
            await self.webhook.stop()
        self.poller.stop()
        if self._poll_task is not None:
            with contextlib.suppress(asyncio.CancelledError, LoopGaveUp):
                await self._poll_task
        await self.sender.stop()
        await self.app.stop()
        await self.app.shutdown()
        self.poller.drop_owner_lock(unlink=True)
        if self.deps.hashes is not None:
            self.deps.hashes.close()

    async def crash(self) -> None:
        """Die abruptly (tests): tasks cancelled mid-flight, nothing finished or recorded; the
        process's lock on its claims goes, as the operating system drops it on a kill."""
        self.poller.drop_owner_lock()
        if self.webhook is not None:
            await self.webhook.stop()
        self.sender.kill()
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poll_task
        with contextlib.suppress(Exception):
            await self.app.stop()
            await self.app.shutdown()
        self.engine.dispose()

    def give_up(self, exc: BaseException) -> None:
        """A supervised loop kept dying: stop, so that the process exits non-zero and its
        supervisor (systemd, the container runtime) starts it again."""
        self.failure = exc
        self.poller.stop()

    async def wait(self) -> None:
        if self._poll_task is not None:
            await self._poll_task


async def serve(config: Config) -> None:
    """Run until SIGINT/SIGTERM. Raises StartupError (bot/startup.py) when it cannot start."""
    from bot import startup
    from bot.health import HealthServer

    require_secrets(config)
    engine = startup.open_database(config)
    stopping = asyncio.Event()
    runtime: Runtime | None = None

    def stop() -> None:
        stopping.set()
        if runtime is not None:
            runtime.poller.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop)
    health: HealthServer | None = None
    started = False
    try:
        runtime = Runtime(config, engine=engine, migrate=False)
        if config.health.enabled:
            health = HealthServer(runtime.deps)
            try:
                await health.start()
            except OSError as exc:
                raise startup.port_error(config, exc) from None
            log.info("health endpoint on http://%s:%s/healthz and /metrics", config.health.listen, health.port)
        if runtime.webhook is not None:
            try:
                await runtime.webhook.start()
            except OSError as exc:
                raise startup.webhook_port_error(config, exc) from None
            log.info("webhook receiver on http://%s:%s%s", config.telegram.webhook_listen, runtime.webhook.port,
                     config.telegram.webhook_path)
        if not await startup.connect_telegram(runtime.app, stopping):
            return  # stopped before Telegram could be reached
        try:
            await runtime.start()
        except BadRequest as exc:  # setWebhook refused: the URL needs a person
            await runtime.stop()
            raise startup.webhook_refused(exc) from None
        started = True
        log.info("tipline is running as %s", runtime.app.bot.name)  # the bot's own @name, not a user's
        if stopping.is_set():
            runtime.poller.stop()
        await runtime.wait()
    finally:
        if runtime is not None and started:
            await runtime.stop()
            log.info("tipline stopped")
        elif runtime is not None and runtime.webhook is not None:
            await runtime.webhook.stop()
        if health is not None:
            await health.stop()
        engine.dispose()
    if runtime is not None and runtime.failure is not None:
        raise SystemExit(1)  # a loop kept dying: the supervisor starts tipline again
