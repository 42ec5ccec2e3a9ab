"""Rule sets as every process sees them: read, compiled with the settings' checks, published in Redis.

A reload validates the files on disk and publishes their *text* in Redis as a
new version. Every worker and web process, on every machine, compares the
published version before its next event and compiles the same text itself
(with its own environment for `${NAME}`, so no secret is ever written to
Redis). A set with any error is never published, so it never replaces the
running one.

A process boots from the running set, never from whatever the files on disk
say at that moment (SPEC §7): the published set; when Redis cannot say, the
last set this machine ran (`data_dir/rules.last-good.json`); only when neither
exists, the files, and when those are broken too, no rules at all, loudly —
a half-edited file never stops a receiver that must keep answering Hana.
`web` and `worker` publish their files only when nothing is published yet;
`reload` (and `serve` at its start) is the way to change the running set.
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
from engine.runtime import history
from engine.runtime.file_lock import rules_lock
from engine.runtime.history import Source
from engine.runtime.metrics import RELOADS

log = logging.getLogger(__name__)

PUBLISHED_RULES = "hr:rules"  # hash: version, files (JSON {name: text}), published_at
LAST_GOOD_FILE = "rules.last-good.json"


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


class RuleRegistry:
    """The rule set of this process, kept in step with the version published in Redis."""

    def __init__(self, connection: redis.Redis, settings: Settings, rule_set: RuleSet) -> None:
        self.connection = connection
        self.settings = settings
        self.rule_set = rule_set

    @classmethod
    def start(cls, connection: redis.Redis, settings: Settings) -> RuleRegistry:
        """A worker's start: the running set (see `boot`), publishing the files only if none is."""
        return cls.boot(connection, settings, publish_if_none=True)

    @classmethod
    def boot(cls, connection: redis.Redis, settings: Settings, *, publish_if_none: bool = False) -> RuleRegistry:
        """The running set: published, else this machine's last good, else the files, else none (loudly)."""
        texts, read_errors = read_texts(settings.rules_dir)
        try:
            raw = connection.hget(PUBLISHED_RULES, "files")
        except redis.RedisError as exc:
            log.warning("rules: Redis unavailable at start (%s); running this machine's last good set", exc)
            return cls(connection, settings, _last_good(settings) or _from_files(texts, read_errors, settings))
        if raw:
            published = _texts(raw)
            rule_set = _compiled(published, settings, "the published set")
            if rule_set is not None and published is not None:
                if texts != published:
                    log.warning("rules: the files in %s differ from the published set %s, which runs; "
                                "`hana-rules reload` publishes them", settings.rules_dir, rule_set.version)  # fmt: skip
                _remember(settings, rule_set, published)
                return cls(connection, settings, rule_set)
            return cls(connection, settings, _last_good(settings) or _from_files(texts, read_errors, settings))
        registry = cls(connection, settings, _from_files(texts, read_errors, settings))
        if publish_if_none and registry.rule_set.rules and not read_errors:
            registry.publish(texts, registry.rule_set, only_if_none=True, source=Source.BOOT)
        return registry

    def publish_from_disk(self, *, source: Source = Source.API, message: str = "") -> RuleSet:
        """Validate the files on disk and make them the running set everywhere (RuleSetError: nothing changes).

        Under this machine's rules lock, so a save or rollback in between cannot be overtaken."""
        with rules_lock(self.settings.data_dir):
            texts, errors = read_texts(self.settings.rules_dir)
            try:
                rule_set = compile_rules(texts, self.settings, read_errors=errors)
            except RuleSetError:
                RELOADS.labels("refused").inc()
                raise
            self.publish(texts, rule_set, source=source, message=message)
        return rule_set

    def publish(self, texts: dict[str, str], rule_set: RuleSet, *, only_if_none: bool = False,
                source: Source = Source.API, message: str = "") -> bool:  # fmt: skip
        """Make `rule_set` (compiled from `texts`) the running set everywhere and a version in the history
        (`source`, `message`); False when `only_if_none` and another process published first (its set then
        runs here too, from the next event on)."""
        published = history.publish(self.connection, PUBLISHED_RULES, texts, rule_set.version, published_at=now_iso(),
                                    source=source, message=message, rules_dir=self.settings.rules_dir,
                                    only_if_none=only_if_none)  # fmt: skip
        if published:
            RELOADS.labels("published").inc()
            self.rule_set = rule_set
            _remember(self.settings, rule_set, texts)
            log.info("rules: version %s published (%d rules)", rule_set.version, len(rule_set.rules))
        return published

    def current(self) -> RuleSet:
        """The published set, compiled here when it changed since the last call; one GET otherwise."""
        try:
            published = self.connection.hget(PUBLISHED_RULES, "version")
        except redis.RedisError:
            return self.rule_set  # Redis away: keep acting on the set we have
        if published is None or published.decode() == self.rule_set.version:
            return self.rule_set
        texts = _texts(self.connection.hget(PUBLISHED_RULES, "files") or b"{}")
        try:
            if texts is None:
                raise RuleSetError([RuleError("hr:rules", 1, 1, "the published files are not readable JSON")])
            self.rule_set = compile_rules(texts, self.settings)
            _remember(self.settings, self.rule_set, texts)
            log.info("rules: now running version %s (%d rules)", self.rule_set.version, len(self.rule_set.rules))
        except RuleSetError as exc:
            # e.g. a ${NAME} unset on this machine: keep the running set, say why, try again next time
            log.error("rules: version %s cannot be compiled here; keeping %s: %s", published.decode(),
                      self.rule_set.version, exc)  # fmt: skip
        return self.rule_set


def _texts(raw: bytes) -> dict[str, str] | None:
    """The published files, or None when what Redis holds is damaged (cut short, edited by hand)."""
    try:
        texts = json.loads(raw)
    except ValueError:
        return None
    if isinstance(texts, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in texts.items()):
        return texts
    return None


def _compiled(texts: dict[str, str] | None, settings: Settings, what: str) -> RuleSet | None:
    if texts is None:
        log.error("rules: %s is damaged (not a JSON map of file names to texts)", what)
        return None
    try:
        return compile_rules(texts, settings)
    except RuleSetError as exc:
        log.error("rules: %s cannot be compiled here (%d error(s)): %s", what, len(exc.errors), exc)
        return None


def _from_files(texts: dict[str, str], read_errors: list[RuleError], settings: Settings) -> RuleSet:
    """The files on disk when they are valid; else no rules, every error logged (events are still kept)."""
    try:
        return compile_rules(texts, settings, read_errors=read_errors)
    except RuleSetError as exc:
        log.error("rules: the files in %s have %d error(s) and no valid set runs anywhere: running NO rules "
                  "(events are received and kept) until the files are fixed and reloaded:\n%s",
                  settings.rules_dir, len(exc.errors), exc)  # fmt: skip
        return compile_rules({}, settings)


def _last_good(settings: Settings) -> RuleSet | None:
    try:
        texts = json.loads((settings.data_dir / LAST_GOOD_FILE).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return _compiled(texts, settings, "this machine's last good set")


def _remember(settings: Settings, rule_set: RuleSet, texts: dict[str, str]) -> None:
    """Keep the running set's text on this machine, for a start while Redis cannot say which runs."""
    if not rule_set.rules:
        return
    path = settings.data_dir / LAST_GOOD_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"version": rule_set.version, "files": texts}, ensure_ascii=False),
                             encoding="utf-8")  # fmt: skip
        os.replace(temporary, path)
    except OSError as exc:
        log.warning("rules: could not keep the running set in %s (%s)", path, exc)
