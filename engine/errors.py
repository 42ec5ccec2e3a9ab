"""One error hierarchy, so every layer can catch what it knows how to show."""

from __future__ import annotations


class HanaRulesError(Exception):
    """Base of every error hana-rules raises on purpose."""


class ConfigError(HanaRulesError):
    """The configuration cannot be used; the message names the file and the key."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        where = ": ".join(part for part in (file, key) if part)
        super().__init__(f"{where}: {message}" if where else message)
