"""The configuration: every key documented, errors that name the key, env overrides."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from bot.config import Config, ConfigError, load_config, parse_config, require_secrets
from tests.conftest import EXAMPLE, example_data


def _model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        key = field.alias or name
        full = f"{prefix}{key}"
        annotation: Any = field.annotation
        inner = getattr(annotation, "__args__", (annotation,))
        models = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
        if models and models[0].__name__ != "LocalizedName":
            keys |= _model_keys(models[0], f"{full}.")
        else:
            keys.add(full)
    return keys


def _documented_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("name", "office"):
            keys |= _documented_keys(value, f"{full}.")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                keys |= _documented_keys(item, f"{full}.")
        else:
            keys.add(full)
    return keys


def test_every_config_key_is_documented_in_the_example() -> None:
    known = _model_keys(Config)
    documented = _documented_keys(example_data())
    # Optional per-rule keys appear on some rules only; all must appear somewhere.
    missing = known - documented
    assert not missing, f"keys missing from config.example.toml: {sorted(missing)}"
    assert documented <= known


def test_every_table_in_the_example_is_explained_by_comments() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not re.match(r"^[a-z_]+ = ", line):
            continue
        j = i
        while j > 0 and not lines[j].startswith("["):
            j -= 1
        if lines[j].startswith("[["):  # repeated tables are explained once, above the first
            j = lines.index(lines[j])
        block = lines[max(0, j - 12) : i]  # the table's own lines and the comment above its header
        assert any(b.startswith("#") for b in block), f"no comment explains line {i + 1}: {line}"


def test_example_loads_and_has_eight_teams() -> None:
    config = load_config(EXAMPLE, env={})
    assert len(config.teams) == 8
    assert {c.key for c in config.categories} >= {"absence", "public-dining", "noon-drinking", "official-car"}


def test_environment_overrides_secrets() -> None:
    env = {"TIPLINE_BOT_TOKEN": "1:abc", "TIPLINE_PEPPER": "p" * 40, "TIPLINE_DATA_KEY": "k",
           "TIPLINE_DATABASE_URL": "sqlite:///x.db"}
    config = parse_config(example_data(), env=env)
    assert config.telegram.token.get_secret_value() == "1:abc"
    assert config.security.pepper.get_secret_value() == "p" * 40
    assert config.database.url == "sqlite:///x.db"


def _broken(mutate: Any) -> str:
    data = example_data()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="config.toml", env={})
    return str(info.value)


def test_rule_naming_a_missing_team_is_refused_by_key() -> None:
    message = _broken(lambda d: d["routing"]["rules"][2].__setitem__("team", 9))
    assert "routing.rules[2].team" in message and "9" in message


def test_rule_naming_a_missing_category_is_refused_by_key() -> None:
    message = _broken(lambda d: d["routing"]["rules"][0].__setitem__("category", "bribery"))
    assert "routing.rules[0].category" in message and "bribery" in message


def test_rule_naming_a_missing_unit_is_refused_by_key() -> None:
    message = _broken(lambda d: d["routing"]["rules"][5].__setitem__("unit", "atlantis"))
    assert "routing.rules[5].unit" in message


def test_missing_fallback_team_is_refused() -> None:
    message = _broken(lambda d: d["routing"].__setitem__("fallback_team", 42))
    assert "routing.fallback_team" in message


def test_unknown_key_is_refused_by_name() -> None:
    message = _broken(lambda d: d["intake"].__setitem__("text_max_char", 10))
    assert "intake.text_max_char" in message and "unknown key" in message


def test_wrong_type_names_the_key() -> None:
    message = _broken(lambda d: d["intake"].__setitem__("max_evidence", "many"))
    assert "intake.max_evidence" in message


def test_duplicate_category_names_the_index() -> None:
    message = _broken(lambda d: d["categories"].append(dict(d["categories"][0])))
    assert "categories[8].key" in message


def test_bad_timezone_is_refused() -> None:
    message = _broken(lambda d: d["campaign"].__setitem__("timezone", "Mars/Olympus"))
    assert "campaign.timezone" in message


def test_min_above_max_is_refused() -> None:
    message = _broken(lambda d: d["intake"].update(text_min_chars=500, text_max_chars=100))
    assert "text_min_chars" in message


def test_not_toml_is_refused_with_the_file_name(tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text("[telegram\ntoken = 1", encoding="utf-8")
    with pytest.raises(ConfigError, match="config.toml: not valid TOML"):
        load_config(bad)


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config.example.toml"):
        load_config(tmp_path / "nope.toml")


def test_secrets_are_required_to_run() -> None:
    config = parse_config(example_data(), env={})
    with pytest.raises(ConfigError, match="telegram.token"):
        require_secrets(config)
    config = parse_config(example_data(), env={"TIPLINE_BOT_TOKEN": "1:a", "TIPLINE_PEPPER": "short"})
    with pytest.raises(ConfigError, match="security.pepper"):
        require_secrets(config)


def test_every_table_key_can_come_from_the_environment() -> None:
    env = {"TIPLINE_TELEGRAM_BASE_URL": "http://127.0.0.1:8081/bot", "TIPLINE_WORKING_HOURS_ENABLED": "true",
           "TIPLINE_DEADLINES_ACK_REMINDER_MINUTES_BEFORE": "[30, 10]", "TIPLINE_HEALTH_PORT": "9999",
           "TIPLINE_TELEGRAM_TOKEN": "1:general-rule", "TIPLINE_CONFIG": "ignored", "TIPLINE_NOT_A_TABLE": "x"}
    config = parse_config(example_data(), env=env)
    assert config.telegram.base_url == "http://127.0.0.1:8081/bot"
    assert config.working_hours.enabled is True  # a table whose name has an underscore
    assert config.deadlines.ack_reminder_minutes_before == [30, 10]
    assert config.health.port == 9999
    assert config.telegram.token.get_secret_value() == "1:general-rule"
    # The short names of the secrets win over the general rule.
    assert parse_config(example_data(), env={**env, "TIPLINE_BOT_TOKEN": "2:short"}).telegram.token.get_secret_value() == "2:short"


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"TIPLINE_TELEGRAM_BASEURL: \[telegram\] has no key 'baseurl'"):
        parse_config(example_data(), env={"TIPLINE_TELEGRAM_BASEURL": "http://x"})
    with pytest.raises(ConfigError, match=r"^TIPLINE_HEALTH_PORT \(health.port\): "):
        parse_config(example_data(), env={"TIPLINE_HEALTH_PORT": "many"})


def test_health_staleness_must_exceed_the_long_poll() -> None:
    with pytest.raises(ConfigError, match=r"health.receive_stale_seconds: must be more than"):
        parse_config(example_data(), env={"TIPLINE_HEALTH_RECEIVE_STALE_SECONDS": "30"})


@pytest.mark.parametrize(("telegram", "env", "message"), [
    ({"mode": "webhook"}, {}, "config: telegram.webhook_url: required in webhook mode"),
    ({"mode": "webhook", "webhook_url": "https://bot.example.org/t"}, {},
     "config: telegram.webhook_secret_token: required in webhook mode"),
    ({"webhook_url": "http://bot.example.org/t"}, {}, "config: telegram.webhook_url: must be the public https://"),
    ({"webhook_secret_token": "has space"}, {}, "config: telegram.webhook_secret_token: Telegram allows 1 to 256"),
    ({}, {"TIPLINE_TELEGRAM_WEBHOOK_SECRET_TOKEN": "x" * 257},
     "TIPLINE_TELEGRAM_WEBHOOK_SECRET_TOKEN (telegram.webhook_secret_token): Telegram allows 1 to 256"),
    ({"mode": "hooks"}, {}, "config: telegram.mode:"),
    ({"webhook_path": "telegram"}, {}, "config: telegram.webhook_path:"),
    ({"webhook_port": 70000}, {}, "config: telegram.webhook_port:"),
])
def test_webhook_keys_are_validated_by_name(telegram: dict[str, Any], env: dict[str, str], message: str) -> None:
    data = example_data()
    data["telegram"].update(telegram)
    with pytest.raises(ConfigError) as caught:
        parse_config(data, env=env)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "x" * 20 not in str(caught.value) and "has space" not in str(caught.value)  # the secret is not shown


def test_webhook_mode_from_the_environment() -> None:
    config = parse_config(example_data(), env={
        "TIPLINE_TELEGRAM_MODE": "webhook", "TIPLINE_TELEGRAM_WEBHOOK_URL": "https://bot.example.org/hook",
        "TIPLINE_TELEGRAM_WEBHOOK_SECRET_TOKEN": "A-b_9" * 51 + "z"})
    assert config.telegram.mode == "webhook" and len(config.telegram.webhook_secret_token.get_secret_value()) == 256
    assert "A-b_9" not in repr(config.telegram)
    assert parse_config(example_data(), env={}).telegram.mode == "polling"  # the default
