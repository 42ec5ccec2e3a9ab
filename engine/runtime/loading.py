"""Rule sets as every process sees them: read, compiled with the settings' checks, published in Redis.

A reload validates the files on disk and publishes their *text* in Redis as a
new version. Every worker and web process, on every machine, compares the
published version before its next event and compiles the same text itself
(with its own environment for `${NAME}`, so no secret is ever written to
Redis). A set with any error is never published, so it never replaces the
running one.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import redis

from engine.actions.checks import outbound_errors
from engine.config import Settings
from engine.hana import now_iso
from engine.rules.compiler import compile_files
from engine.rules.errors import RuleError, RuleSetError
from engine.rules.loader import load_texts, read_texts
from engine.rules.ruleset import RuleSet
from engine.runtime.metrics import RELOADS

log = logging.getLogger(__name__)

PUBLISHED_RULES = "hr:rules"  # hash: version, files (JSON {name: text}), published_at


def compile_rules(texts: dict[str, str], settings: Settings, *, read_errors: list[RuleError] | None = None) -> RuleSet:
    """The rule set, or RuleSetError listing every mistake (never a partial set)."""
    loaded = load_texts(texts, os.environ)
    if read_errors:
        raise RuleSetError([*read_errors, *loaded.errors])
    rule_set = compile_files(loaded)
    errors = outbound_errors(rule_set, settings)
    if errors:
        raise RuleSetError(errors)
    return rule_set


def load_rules(settings: Settings, rules_dir: Path | None = None) -> RuleSet:
    texts, errors = read_texts(rules_dir or settings.rules_dir)
    return compile_rules(texts, settings, read_errors=errors)


def published_rules(connection: redis.Redis, settings: Settings) -> RuleSet | None:
    """The set published in Redis, compiled here; None when nothing was published yet."""
    files = connection.hget(PUBLISHED_RULES, "files")
    return compile_rules(json.loads(files), settings) if files else None


class RuleRegistry:
    """The rule set of this process, kept in step with the version published in Redis."""

    def __init__(self, connection: redis.Redis, settings: Settings, rule_set: RuleSet) -> None:
        self.connection = connection
        self.settings = settings
        self.rule_set = rule_set

    @classmethod
    def start(cls, connection: redis.Redis, settings: Settings) -> RuleRegistry:
        """A worker's start: the published set (the files on disk may be mid-edit), else the files."""
        return cls(connection, settings, published_rules(connection, settings) or load_rules(settings))

    def publish_from_disk(self) -> RuleSet:
        """Validate the files on disk and make them the running set everywhere (RuleSetError: nothing changes)."""
        texts, errors = read_texts(self.settings.rules_dir)
        try:
            rule_set = compile_rules(texts, self.settings, read_errors=errors)
        except RuleSetError:
            RELOADS.labels("refused").inc()
            raise
        RELOADS.labels("published").inc()
        self.connection.hset(PUBLISHED_RULES, mapping={
            "version": rule_set.version, "files": json.dumps(texts, ensure_ascii=False), "published_at": now_iso(),
        })  # fmt: skip
        self.rule_set = rule_set
        log.info("rules: version %s published (%d rules)", rule_set.version, len(rule_set.rules))
        return rule_set

    def current(self) -> RuleSet:
        """The published set, compiled here when it changed since the last call; one GET otherwise."""
        try:
            published = self.connection.hget(PUBLISHED_RULES, "version")
        except redis.RedisError:
            return self.rule_set  # Redis away: keep acting on the set we have
        if published is None or published.decode() == self.rule_set.version:
            return self.rule_set
        texts = json.loads(self.connection.hget(PUBLISHED_RULES, "files") or b"{}")
        try:
            self.rule_set = compile_rules(texts, self.settings)
            log.info("rules: now running version %s (%d rules)", self.rule_set.version, len(self.rule_set.rules))
        except RuleSetError as exc:
            # e.g. a ${NAME} unset on this machine: keep the running set, say why, try again next time
            log.error("rules: version %s cannot be compiled here; keeping %s: %s", published.decode(),
                      self.rule_set.version, exc)  # fmt: skip
        return self.rule_set
