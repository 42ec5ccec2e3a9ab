"""The settings file's JSON Schema, and the one clear error a mistake in it gets.

Errors name the file and the key and say what to do; they never show a value,
which may have come from the environment.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from engine.errors import ConfigError

_DURATION = {"type": ["string", "number"]}
_COUNT = {"type": ["integer", "string"]}
_TEXT = {"type": "string"}

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "rules_dir": _TEXT,
        "data_dir": _TEXT,
        "redis_url": {"type": ["string", "null"]},
        "redis_fsync": {"enum": ["always", "everysec"]},
        "redis_sentinel": {
            "type": "object",
            "additionalProperties": False,
            "required": ["master", "nodes"],
            "properties": {
                "master": _TEXT,
                "nodes": {"type": "array", "minItems": 1, "items": _TEXT},
                "password": _TEXT,
                "sentinel_password": _TEXT,
                "tls": {"type": "boolean"},
            },
        },
        "admin_token": {"type": ["string", "null"]},
        "host": _TEXT,
        "port": _COUNT,
        "workers": _COUNT,
        "web_workers": _COUNT,
        "web_threads": _COUNT,
        "log_format": {"enum": ["text", "json"]},
        "retention": _DURATION,
        "max_events": _COUNT,
        "applications": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "webhook_token"],
                "properties": {
                    "id": _TEXT,
                    "name": _TEXT,
                    "webhook_token": _TEXT,
                    "hana_update_url": _TEXT,
                    "access_token": _TEXT,
                },
            },
        },
        "outbound": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "allow_hosts": {"type": "array", "items": _TEXT},
                "timeout": _DURATION,
                "telegram_api": _TEXT,
            },
        },
        "smtp": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "host": _TEXT,
                "port": _COUNT,
                "username": _TEXT,
                "password": _TEXT,
                "from": _TEXT,
                "starttls": {"type": "boolean"},
            },
        },
        "delivery": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"max_attempts": _COUNT, "backoff": _DURATION, "max_backoff": _DURATION},
        },
        "loop_guard": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"limit": _COUNT, "per": _DURATION, "hold": _DURATION},
        },
        "console": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"secret_key": {"type": "string", "minLength": 16}, "read_only": {"type": "boolean"},
                           "trusted_proxies": {"type": "integer", "minimum": 0, "maximum": 5},
                           "timezone": {"type": "string", "minLength": 1, "maxLength": 64}},
        },
    },
}


def join_key(prefix: str, name: object) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def validate(raw: dict[str, Any], label: str) -> None:
    errors = sorted(Draft202012Validator(CONFIG_SCHEMA).iter_errors(raw), key=lambda e: list(e.path))
    if not errors:
        return
    error = errors[0]
    key = ""
    for part in error.absolute_path:
        key = f"{key}[{part}]" if isinstance(part, int) else join_key(key, part)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        raise ConfigError(
            f"unknown key {unknown[0]!r}; known keys here: {', '.join(allowed)}",
            file=label,
            key=join_key(key, unknown[0]) if key else unknown[0],
        )
    if error.validator == "required":
        missing = error.message.split("'")[1]
        raise ConfigError(f"{missing} is required", file=label, key=join_key(key, missing))
    if error.validator == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        # The value itself is not shown: it may have come from the environment.
        message = f"expected {' or '.join(wanted)}, got {type(error.instance).__name__}"
    elif error.validator == "enum":
        message = f"expected one of {', '.join(map(str, error.validator_value))}"
    else:
        message = error.message
    raise ConfigError(message, file=label, key=key or None)


