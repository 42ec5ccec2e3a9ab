"""Secrets never leave in traces, logs, answers or CLI output: one place redacts them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
#: Keys whose values are credentials wherever they appear (a Slack webhook URL is one).
SECRET_KEYS = frozenset(("authorization", "access_token", "bot_token", "password", "token", "webhook_token",
                         "x-webhook-token", "api_key", "secret", "webhook_url", "admin_token"))  # fmt: skip


def redact(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of `value` with known secret strings masked and secret-named keys hidden."""
    known = sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True)
    return _redact(value, known)


def _redact(value: Any, known: list[str]) -> Any:
    if isinstance(value, str):
        for secret in known:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: MASK if str(k).lower() in SECRET_KEYS and v else _redact(v, known) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v, known) for v in value]
    return value


_DEFAULT = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-[^}]*\}")
_SECRET_LINE = re.compile(r"(?P<key>\b(?:" + "|".join(re.escape(k) for k in sorted(SECRET_KEYS)) +
                          r")\s*:\s*)(?P<value>[^,}\n#]+)", re.IGNORECASE)  # fmt: skip


def redact_rule_text(text: str, secrets: Iterable[str] = ()) -> str:
    """A rule file's text as the console may show it: known secret values masked, the defaults of
    `${NAME:-default}` masked, and the value of every secret-named key (`webhook_url: …`) masked."""
    text = redact(text, secrets)
    text = _DEFAULT.sub(lambda m: f"${{{m.group(1)}:-{MASK}}}", text)
    return _SECRET_LINE.sub(lambda m: m.group("key") + (m.group("value") if m.group("value").strip().startswith(
        ("${", MASK, f'"{MASK}', '"${')) else MASK), text)
