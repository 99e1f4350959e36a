"""tipline's configuration: a TOML file read with tomllib, validated by pydantic.

Every key is documented in ``config.example.toml`` (a test keeps the two in step).
Every key of a table may come from the environment instead, as TIPLINE_<TABLE>_<KEY>
(e.g. TIPLINE_TELEGRAM_BASE_URL, TIPLINE_HEALTH_PORT; arrays in TOML syntax, "[60, 30]");
the environment wins over the file. Secrets also have short names:

    TIPLINE_BOT_TOKEN      telegram.token
    TIPLINE_DATABASE_URL   database.url
    TIPLINE_PEPPER         security.pepper
    TIPLINE_DATA_KEY       security.data_key
    TIPLINE_CONTACT_KEY    security.contact_key

A broken file is refused with a message that names the key, e.g.
``routing.rules[2].team: team 9 is not one of the [[teams]] numbers``.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

LANGUAGES: tuple[str, ...] = ("zh-CN", "en")
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "TIPLINE_BOT_TOKEN": ("telegram", "token"),
    "TIPLINE_DATABASE_URL": ("database", "url"),
    "TIPLINE_PEPPER": ("security", "pepper"),
    "TIPLINE_DATA_KEY": ("security", "data_key"),
    "TIPLINE_CONTACT_KEY": ("security", "contact_key"),
}
KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key at fault."""


class _Model(BaseModel):
    # Unknown keys are typos more often than not: refuse them by name.
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalizedName(_Model):
    zh_CN: str = Field(alias="zh-CN", min_length=1, max_length=64)
    en: str = Field(min_length=1, max_length=64)

    def get(self, lang: str) -> str:
        return self.en if lang == "en" else self.zh_CN


class TelegramConfig(_Model):
    token: SecretStr = SecretStr("")
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    poll_timeout_seconds: int = Field(default=30, ge=0, le=50)
    # Sending limits, applied to every request tipline makes (Telegram's published limits).
    global_per_second: float = Field(default=30.0, gt=0, le=1000)
    per_chat_per_second: float = Field(default=1.0, gt=0, le=100)
    group_per_minute: float = Field(default=20.0, gt=0, le=6000)
    max_send_attempts: int = Field(default=12, ge=1, le=1000)
    send_lease_seconds: float = Field(default=30.0, ge=3, le=600)
    # One process at a time sends (bot/services/sendlead.py): another takes over about this
    # long after it dies or stalls.
    sender_lead_seconds: float = Field(default=5.0, ge=3, le=120)
    # How updates come in: tipline asks for them (getUpdates) or Telegram posts them to a
    # receiver of tipline's own (bot/webhook.py), journaled before the HTTP 200.
    mode: Literal["polling", "webhook"] = "polling"
    webhook_listen: str = Field(default="127.0.0.1", min_length=1)
    webhook_port: int = Field(default=8088, ge=0, le=65535)
    webhook_url: str = ""
    webhook_path: str = Field(default="/telegram", pattern=r"^/[A-Za-z0-9/_.~-]*$", max_length=200)
    webhook_secret_token: SecretStr = SecretStr("")
    webhook_max_connections: int = Field(default=40, ge=1, le=100)

    @field_validator("webhook_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if value and not re.match(r"^https://[^/\s?#]+(/\S*)?$", value):
            raise ValueError("must be the public https:// URL Telegram posts to (Telegram accepts no other)")
        return value

    @field_validator("webhook_secret_token")
    @classmethod
    def _secret_token(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", raw):
            raise ValueError("Telegram allows 1 to 256 characters, only A-Z, a-z, 0-9, _ and -")
        return value


class DatabaseConfig(_Model):
    url: str = "sqlite:///data/tipline.sqlite3"
    echo: bool = False


class SecurityConfig(_Model):
    # Secrets are SecretStr: never shown in a repr, a log line or a test failure
    # (`.get_secret_value()` where they are used).
    pepper: SecretStr = SecretStr("")
    data_key: SecretStr = SecretStr("")
    contact_key: SecretStr = SecretStr("")
    receipt_hash_time_cost: int = Field(default=3, ge=1, le=20)
    receipt_hash_memory_kib: int = Field(default=65536, ge=8, le=4 * 1024 * 1024)
    receipt_hash_parallelism: int = Field(default=1, ge=1, le=16)
    receipt_hash_workers: int = Field(default=0, ge=0, le=64)


class CampaignConfig(_Model):
    name: LocalizedName
    office: LocalizedName
    timezone: str = "Asia/Shanghai"
    default_language: Literal["zh-CN", "en"] = "zh-CN"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class IntakeConfig(_Model):
    text_min_chars: int = Field(default=10, ge=1, le=4000)
    text_max_chars: int = Field(default=3000, ge=1, le=4000)
    place_max_chars: int = Field(default=300, ge=1, le=1000)
    other_unit_max_chars: int = Field(default=60, ge=1, le=200)
    max_evidence: int = Field(default=10, ge=0, le=50)
    draft_ttl_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    units_per_page: int = Field(default=8, ge=2, le=40)
    # Wrong receipt codes: after `receipt_free_attempts` failures a chat waits
    # base * 2**(n - free) seconds (capped) before its next try.
    receipt_free_attempts: int = Field(default=3, ge=1, le=100)
    receipt_backoff_base_seconds: float = Field(default=2.0, ge=0.0, le=3600)
    receipt_backoff_max_seconds: float = Field(default=900.0, ge=0.0, le=86400)
    # Flood control for citizens' chats: messages per minute before tipline stops answering for a while.
    flood_messages_per_minute: int = Field(default=40, ge=5, le=1000)
    # A receipt code that could not be sent is tried again for this long, then given up (the tip
    # is marked and the office told).
    receipt_delivery_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    # Voice messages carry the speaker's voice, which no cleaning removes.
    voice: Literal["refuse", "accept"] = "refuse"

    @model_validator(mode="after")
    def _min_below_max(self) -> IntakeConfig:
        if self.text_min_chars > self.text_max_chars:
            raise ValueError("text_min_chars must not exceed text_max_chars")
        return self


class DeadlineOverride(_Model):
    category: str
    ack_hours: float | None = Field(default=None, gt=0, le=24 * 30)
    outcome_hours: float | None = Field(default=None, gt=0, le=24 * 365)


class DeadlinesConfig(_Model):
    ack_hours: float = Field(default=4.0, gt=0, le=24 * 30)
    ack_reminder_minutes_before: list[int] = Field(default_factory=lambda: [60])
    outcome_hours: float = Field(default=72.0, gt=0, le=24 * 365)
    outcome_reminder_minutes_before: list[int] = Field(default_factory=lambda: [720, 120])
    action_days: float = Field(default=7.0, gt=0, le=365)
    action_reminder_minutes_before: list[int] = Field(default_factory=lambda: [1440])
    sweep_seconds: float = Field(default=30.0, gt=0, le=3600)
    overrides: list[DeadlineOverride] = Field(default_factory=list)

    @field_validator("ack_reminder_minutes_before", "outcome_reminder_minutes_before",
                     "action_reminder_minutes_before")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        if any(v <= 0 for v in values) or len(set(values)) != len(values):
            raise ValueError("reminder minutes must be positive and distinct")
        return values


class WorkingHoursConfig(_Model):
    enabled: bool = False
    weekdays: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    start: str = Field(default="08:30", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    end: str = Field(default="17:30", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    holidays: list[date] = Field(default_factory=list)
    workdays: list[date] = Field(default_factory=list)

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, values: list[int]) -> list[int]:
        if not values or any(not 1 <= v <= 7 for v in values):
            raise ValueError("weekdays are 1 (Monday) to 7 (Sunday), at least one")
        return values

    @model_validator(mode="after")
    def _order(self) -> WorkingHoursConfig:
        if self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class LadderRungConfig(_Model):
    min_count: int = Field(ge=1, le=100)
    person_actions: list[Literal["self_criticism"]] = Field(default_factory=list)
    unit_actions: list[Literal["rectification_report"]] = Field(default_factory=list)
    in_bulletin: bool = True
    refer_to_discipline: bool = False
    hold_leader_accountable: bool = False


def _default_rungs() -> list[LadderRungConfig]:
    return [
        LadderRungConfig(min_count=1, person_actions=["self_criticism"], unit_actions=["rectification_report"]),
        LadderRungConfig(min_count=3, person_actions=["self_criticism"], unit_actions=["rectification_report"],
                         refer_to_discipline=True, hold_leader_accountable=True),
    ]


class LadderConfig(_Model):
    period_start: date = date(2026, 1, 1)
    period_end: date | None = None
    rungs: list[LadderRungConfig] = Field(default_factory=_default_rungs)

    @model_validator(mode="after")
    def _rungs(self) -> LadderConfig:
        counts = [r.min_count for r in self.rungs]
        if not counts or counts[0] != 1 or counts != sorted(set(counts)):
            raise ValueError("rungs: min_count must start at 1 and increase")
        if self.period_end is not None and self.period_end < self.period_start:
            raise ValueError("period_end is before period_start")
        return self


class CategoryConfig(_Model):
    key: Annotated[str, Field(pattern=KEY_PATTERN)]
    name: LocalizedName


class UnitConfig(_Model):
    key: Annotated[str, Field(pattern=KEY_PATTERN)]
    kind: Literal["township", "department"]
    name: LocalizedName


class TeamConfig(_Model):
    number: int = Field(ge=1, le=99)
    name: LocalizedName
    # "group": cards go to the team's bound Telegram group; "leads": to each lead's private chat.
    delivery: Literal["group", "leads"] = "group"


class RuleConfig(_Model):
    id: Annotated[str, Field(pattern=KEY_PATTERN)]
    team: int
    category: str | None = None
    unit: str | None = None
    unit_kind: Literal["township", "department"] | None = None


class RoutingConfig(_Model):
    fallback_team: int
    rules: list[RuleConfig] = Field(default_factory=list)


_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class SchedulerConfig(_Model):
    # Scheduled work (daily summary, bulletins): PTB's JobQueue fires at the configured
    # times in the campaign's time zone and ticks every `tick_seconds`; each run is keyed
    # (job, period) in the database, so it happens once.
    enabled: bool = True
    tick_seconds: float = Field(default=30.0, gt=0, le=3600)
    misfire_grace_seconds: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    catch_up_hours: float = Field(default=24.0, ge=0, le=24 * 14)
    summary_at: str = Field(default="18:00", pattern=_HHMM)
    bulletin_at: str = Field(default="09:00", pattern=_HHMM)
    bulletin_every_days: int = Field(default=2, ge=1, le=60)
    bulletin_first_day: date | None = None


class OfficialsConfig(_Model):
    # New officials receive these until they change them with /settings.
    default_summary: bool = True
    default_bulletins: bool = True
    default_escalations: bool = False
    bulletin_auto_publish: bool = False
    bulletin_empty_notice: bool = False
    chart_days: int = Field(default=14, ge=2, le=60)
    progress_seconds: float = Field(default=10.0, gt=0, le=3600)
    note_prompt_minutes: int = Field(default=30, ge=1, le=24 * 60)


class JournalConfig(_Model):
    key_dir: str = "journal-keys"
    key_rotate_minutes: int = Field(default=60, ge=1, le=24 * 60)
    keep_ids_hours: int = Field(default=48, ge=1, le=24 * 30)
    lease_seconds: float = Field(default=30.0, ge=1, le=3600)
    max_attempts: int = Field(default=3, ge=1, le=100)
    retry_seconds: float = Field(default=5.0, gt=0, le=3600)
    concurrency: int = Field(default=64, ge=1, le=1024)
    maintenance_seconds: float = Field(default=60.0, gt=0, le=3600)


class HealthConfig(_Model):
    # The operator's HTTP endpoint: /healthz and /metrics (bot/health.py). Off by default.
    enabled: bool = False
    listen: str = "127.0.0.1"
    port: int = Field(default=9387, ge=0, le=65535)
    receive_stale_seconds: float = Field(default=120.0, gt=0, le=86400)
    sender_stale_seconds: float = Field(default=60.0, gt=0, le=86400)
    outbox_stuck_seconds: float = Field(default=900.0, gt=0, le=7 * 86400)
    scheduler_stale_seconds: float = Field(default=600.0, gt=0, le=7 * 86400)


class LoggingConfig(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class PlaygroundConfig(_Model):
    port: int = Field(default=8080, ge=0, le=65535)
    data_dir: str = "data/playground"
    language: Literal["zh-CN", "en"] = "zh-CN"


class Config(_Model):
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    campaign: CampaignConfig
    intake: IntakeConfig = Field(default_factory=IntakeConfig)
    deadlines: DeadlinesConfig = Field(default_factory=DeadlinesConfig)
    working_hours: WorkingHoursConfig = Field(default_factory=WorkingHoursConfig)
    ladder: LadderConfig = Field(default_factory=LadderConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    officials: OfficialsConfig = Field(default_factory=OfficialsConfig)
    journal: JournalConfig = Field(default_factory=JournalConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    playground: PlaygroundConfig = Field(default_factory=PlaygroundConfig)
    categories: list[CategoryConfig] = Field(min_length=1)
    units: list[UnitConfig] = Field(min_length=1)
    teams: list[TeamConfig] = Field(min_length=1)
    routing: RoutingConfig

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        _unique("categories", [c.key for c in self.categories])
        _unique("units", [u.key for u in self.units])
        _unique("teams", [t.number for t in self.teams], field="number")
        _unique("routing.rules", [r.id for r in self.routing.rules], field="id")
        if "other" in {u.key for u in self.units}:
            raise ValueError("units: the key 'other' is reserved for a unit the tipster types")
        teams = {t.number for t in self.teams}
        categories = {c.key for c in self.categories}
        units = {u.key for u in self.units}
        if self.routing.fallback_team not in teams:
            raise _KeyedError(
                "routing.fallback_team",
                f"team {self.routing.fallback_team} is not one of the [[teams]] numbers",
            )
        for i, rule in enumerate(self.routing.rules):
            where = f"routing.rules[{i}]"
            if rule.team not in teams:
                raise _KeyedError(f"{where}.team", f"team {rule.team} is not one of the [[teams]] numbers")
            if rule.category is not None and rule.category not in categories:
                raise _KeyedError(f"{where}.category", f"category {rule.category!r} is not in [[categories]]")
            if rule.unit is not None and rule.unit not in units:
                raise _KeyedError(f"{where}.unit", f"unit {rule.unit!r} is not in [[units]]")
            if rule.category is None and rule.unit is None and rule.unit_kind is None:
                raise _KeyedError(where, "a rule needs at least one of category, unit, unit_kind")
        if self.health.receive_stale_seconds <= self.telegram.poll_timeout_seconds:
            raise _KeyedError("health.receive_stale_seconds",
                              f"must be more than telegram.poll_timeout_seconds ({self.telegram.poll_timeout_seconds}): "
                              "a quiet long poll is not a stalled one")
        _webhook_complete(self.telegram)
        for i, override in enumerate(self.deadlines.overrides):
            if override.category not in categories:
                raise _KeyedError(f"deadlines.overrides[{i}].category",
                                  f"category {override.category!r} is not in [[categories]]")
        return self

    # Look-ups used across the application.
    def category(self, key: str) -> CategoryConfig:
        return next(c for c in self.categories if c.key == key)

    def unit(self, key: str) -> UnitConfig | None:
        return next((u for u in self.units if u.key == key), None)

    def team(self, number: int) -> TeamConfig | None:
        return next((t for t in self.teams if t.number == number), None)


class _KeyedError(ValueError):
    """A cross-reference error that knows the full key it is about."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def _webhook_complete(tg: TelegramConfig) -> None:
    if tg.mode != "webhook":
        return
    if not tg.webhook_url:
        raise _KeyedError("telegram.webhook_url", "required in webhook mode: the public https:// URL "
                                                  "Telegram posts to (or TIPLINE_TELEGRAM_WEBHOOK_URL)")
    if not tg.webhook_secret_token.get_secret_value():
        raise _KeyedError("telegram.webhook_secret_token",
                          "required in webhook mode (or TIPLINE_TELEGRAM_WEBHOOK_SECRET_TOKEN): 1 to 256 "
                          "characters A-Z a-z 0-9 _ -, e.g. from `openssl rand -hex 32`")


def _unique(section: str, values: list[Any], field: str = "key") -> None:
    seen: set[Any] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise _KeyedError(f"{section}[{i}].{field}", f"{value!r} appears more than once")
        seen.add(value)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _format_validation_error(source: str, exc: ValidationError, from_env: dict[str, str] | None = None) -> str:
    lines = []
    from_env = from_env or {}
    for err in exc.errors():
        msg = str(err["msg"])
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        key = _format_loc(tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not documented in config.example.toml)"
        var = next((v for k, v in from_env.items() if key == k or key.startswith(k + "[")), None)
        if var is not None:  # the value came from the environment: say which variable
            lines.append(f"{var} ({key}): {msg}")
            continue
        lines.append(f"{source}: {key}: {msg}" if key else f"{source}: {msg}")
    return "\n".join(lines)


ENV_PREFIX = "TIPLINE_"
ENV_RESERVED = frozenset({"TIPLINE_CONFIG", "TIPLINE_TEST_DATABASE_URL"})


def _table_sections() -> dict[str, type[BaseModel]]:
    """The configuration's tables ([telegram], [database], ...) and their models."""
    out: dict[str, type[BaseModel]] = {}
    for name, info in Config.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out[name] = annotation
    return out


def _env_value(raw: str) -> Any:
    """A variable's value: an array or inline table in TOML syntax (`[60, 30]`), else the text
    (pydantic turns "30", "2.5", "true" into the key's type)."""
    text = raw.strip()
    if text[:1] in ("[", "{"):
        try:
            return tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            return raw
    return raw


def env_overrides(env: dict[str, str], source: str = "environment") -> dict[tuple[str, str], tuple[str, Any]]:
    """(section, key) -> (variable, value) for every TIPLINE_<SECTION>_<KEY> set in `env`.

    The named secrets (TIPLINE_BOT_TOKEN, ...) come first; then the general rule: the
    variable's name in lower case is a table's name, an underscore, and one of its keys
    (TIPLINE_TELEGRAM_BASE_URL is telegram.base_url, TIPLINE_WORKING_HOURS_ENABLED is
    working_hours.enabled). A variable that names a table but none of its keys is an error
    that names the variable; one that names no table is not tipline's (left alone).
    """
    sections = _table_sections()
    found: dict[tuple[str, str], tuple[str, Any]] = {}
    for var in sorted(env):
        value = env[var]
        if not var.startswith(ENV_PREFIX) or var in ENV_RESERVED or var in ENV_OVERRIDES or value == "":
            continue
        rest = var[len(ENV_PREFIX):].lower()
        section = max((name for name in sections if rest.startswith(name + "_")), key=len, default=None)
        if section is None:
            continue
        key = rest[len(section) + 1:]
        if key not in sections[section].model_fields:
            raise ConfigError(f"{source}: {var}: [{section}] has no key {key!r} "
                              f"(keys: {', '.join(sections[section].model_fields)})")
        found[(section, key)] = (var, _env_value(value))
    for var, (section, key) in ENV_OVERRIDES.items():
        value = env.get(var)
        if value:
            found[(section, key)] = (var, value)
    return found


def parse_config(data: dict[str, Any], source: str = "config", env: dict[str, str] | None = None) -> Config:
    """Validate a parsed TOML document, applying environment overrides (which win)."""
    env = dict(os.environ) if env is None else env
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    from_env: dict[str, str] = {}
    for (section, key), (var, value) in env_overrides(env, source).items():
        merged.setdefault(section, {})
        if not isinstance(merged[section], dict):
            raise ConfigError(f"{source}: {section}: must be a table")
        merged[section][key] = value
        from_env[f"{section}.{key}"] = var
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc, from_env)) from None


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (copy config.example.toml to start)") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, source=str(path.name), env=env)


def require_secrets(config: Config) -> None:
    """Checks made before the bot runs (the CLI's offline commands need fewer secrets)."""
    if not config.telegram.token.get_secret_value():
        raise ConfigError("telegram.token: empty; set it in the file or in TIPLINE_BOT_TOKEN")
    require_storage_secrets(config)


def require_storage_secrets(config: Config) -> None:
    if len(config.security.pepper.get_secret_value()) < 32:
        raise ConfigError(
            "security.pepper: needs at least 32 characters; set it in the file or in TIPLINE_PEPPER "
            "(generate one with `tipline keygen`)"
        )
    if not config.security.data_key.get_secret_value():
        raise ConfigError(
            "security.data_key: empty; set a Fernet key in the file or in TIPLINE_DATA_KEY "
            "(generate one with `tipline keygen`)"
        )

