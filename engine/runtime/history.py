"""Every published rule set is a version: when, from where, a message, the files' text.

Kept in Redis, beside the published set, so every machine sees the same history
and any machine can roll back to any version. Publishing and recording are one
Lua script: two machines publishing at once can never leave a history whose
newest entry is not the set that runs. The history is bounded (`LIMIT` entries,
trimmed in the same script) and a version's texts are kept once however many
entries name it (a rollback to X names X again).

Keys: `hr:history` is a list of JSON entries, newest first
(`{version, published_at, source, message, paths}`); `hr:history:files` maps a
version to its files as published (`{name: text}`, the names as in errors).
`paths` maps those names to paths inside rules_dir, so a rollback on a machine
whose working directory differs still writes each file where it belongs.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import redis

from engine.rules.diffs import FileDiff, diff_files

log = logging.getLogger(__name__)

HISTORY = "hr:history"
HISTORY_FILES = "hr:history:files"
LIMIT = 100
MAX_MESSAGE = 500


class Source(StrEnum):
    """Where a publish came from, as the history shows it."""

    CONSOLE = "console"
    CLI = "cli"
    API = "api"
    FILE_WATCH = "file-watch"  # `serve --watch`
    SIGNAL = "signal"  # SIGHUP to `serve`
    BOOT = "boot"  # the first publish of a process, or `serve` publishing its files at start
    ROLLBACK = "rollback"


#: Publish (unless only_if_none and a set is published) and record the version unless it is the newest
#: entry already; the set that ran before history was kept gets an entry first, so it can be rolled back to.
_PUBLISH = """
local function version_of(raw)
  local ok, entry = pcall(cjson.decode, raw)
  if ok and type(entry) == 'table' and type(entry.version) == 'string' then return entry.version end
  return nil
end
local before = redis.call('HMGET', KEYS[1], 'version', 'files', 'published_at')
if ARGV[4] == '1' and before[2] then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'files', ARGV[2], 'published_at', ARGV[3])
if redis.call('LLEN', KEYS[2]) == 0 and before[1] and before[2] and before[1] ~= ARGV[1] then
  redis.call('HSET', KEYS[3], before[1], before[2])
  redis.call('LPUSH', KEYS[2], cjson.encode({version = before[1], published_at = before[3] or '', source = 'boot',
                                             message = 'published before history was kept'}))
end
local head = redis.call('LINDEX', KEYS[2], 0)
if head and version_of(head) == ARGV[1] then return 1 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('LPUSH', KEYS[2], ARGV[5])
local limit = tonumber(ARGV[6])
local dropped = redis.call('LRANGE', KEYS[2], limit, -1)
if #dropped > 0 then
  redis.call('LTRIM', KEYS[2], 0, limit - 1)
  local kept = {}
  for _, raw in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    local version = version_of(raw)
    if version then kept[version] = true end
  end
  for _, raw in ipairs(dropped) do
    local version = version_of(raw)
    if version and not kept[version] then redis.call('HDEL', KEYS[3], version) end
  end
end
return 1
"""


def publish(connection: redis.Redis, published_key: str, texts: dict[str, str], version: str, *, published_at: str,
            source: Source, message: str, rules_dir: Path, only_if_none: bool = False) -> bool:  # fmt: skip
    """Make `texts` the published set under `published_key` and record it; False when `only_if_none` and
    a set was published already (nothing changes then)."""
    entry = {
        "version": version, "published_at": published_at, "source": Source(source).value,
        # A message from a terminal may hold bytes that are not UTF-8 (a lone surrogate here): shown as "?".
        "message": " ".join(message.encode("utf-8", "replace").decode("utf-8").split())[:MAX_MESSAGE],
        "paths": {name: path for name in texts if (path := path_in(rules_dir, name)) is not None},
    }  # fmt: skip
    files = json.dumps(texts, ensure_ascii=False)
    arguments = (version, files, published_at, "1" if only_if_none else "0", json.dumps(entry, ensure_ascii=False),
                 LIMIT)  # fmt: skip
    return bool(connection.eval(_PUBLISH, 3, published_key, HISTORY, HISTORY_FILES, *arguments))


def path_in(rules_dir: Path, name: str) -> str | None:
    """The rules_dir-relative POSIX path of a file named as in errors (display name), or None when outside."""
    target = Path(os.path.abspath(name))
    bases = [Path(os.path.abspath(rules_dir))]
    try:
        bases.append(rules_dir.resolve())  # display names of files outside the working directory are resolved
    except (OSError, RuntimeError):
        pass
    for base in bases:
        try:
            return target.relative_to(base).as_posix()
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class VersionSummary:
    """One entry of the history, with what it changed against the entry before it (`previous`)."""

    version: str
    published_at: str
    source: str
    message: str
    previous: str | None
    changes: tuple[FileDiff, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version, "published_at": self.published_at, "source": self.source,
            "message": self.message, "previous": self.previous,
            "changes": [change.summary() for change in self.changes],
            "added": sum(c.added for c in self.changes), "removed": sum(c.removed for c in self.changes),
        }  # fmt: skip


@dataclass(frozen=True)
class Version(VersionSummary):
    """A version with its files' text (`{name: text}`, names as in errors) and each file's diff."""

    files: dict[str, str]
    paths: dict[str, str]
    damaged: bool = False  # its texts in Redis are not readable (cut short, edited by hand)

    def as_json(self) -> dict[str, Any]:
        answer = {**super().as_json(), "files": self.files, "changes": [c.as_json() for c in self.changes]}
        if self.damaged:
            answer["damaged"] = True
        return answer


def versions(connection: redis.Redis, limit: int = LIMIT) -> list[VersionSummary]:
    """The newest `limit` versions, newest first, each with what it changed (texts left out)."""
    entries = _entries(connection, limit + 1)  # one more: the oldest shown is compared with its own previous
    texts = _files(connection, {entry["version"] for entry in entries})
    summaries = []
    for index, entry in enumerate(entries[:limit]):
        previous = entries[index + 1] if index + 1 < len(entries) else None
        summaries.append(_summary(entry, previous, texts))
    return summaries


def version(connection: redis.Redis, version_id: str) -> Version | None:
    """The newest entry for `version_id` with its texts and its diff against the entry before it; None if unknown."""
    entries = _entries(connection, LIMIT + 1)
    for index, entry in enumerate(entries):
        if entry["version"] != version_id:
            continue
        previous = entries[index + 1] if index + 1 < len(entries) else None
        texts = _files(connection, {entry["version"], *([previous["version"]] if previous else [])})
        summary = _summary(entry, previous, texts)
        files = texts.get(version_id)
        paths = entry.get("paths")
        return Version(**summary.__dict__, files=files or {}, damaged=files is None,
                       paths=paths if isinstance(paths, dict) else {})  # fmt: skip
    return None


def newest(connection: redis.Redis) -> str | None:
    """The version of the newest entry (the set that runs, unless history was lost)."""
    entries = _entries(connection, 1)
    return entries[0]["version"] if entries else None


def _summary(entry: dict[str, Any], previous: dict[str, Any] | None, texts: dict[str, dict[str, str] | None]
             ) -> VersionSummary:  # fmt: skip
    older = (texts.get(previous["version"]) or {}) if previous else {}
    return VersionSummary(
        version=entry["version"], published_at=str(entry.get("published_at") or ""),
        source=str(entry.get("source") or ""), message=str(entry.get("message") or ""),
        previous=previous["version"] if previous else None,
        changes=tuple(diff_files(older, texts.get(entry["version"]) or {})),
    )  # fmt: skip


def _entries(connection: redis.Redis, count: int) -> list[dict[str, Any]]:
    """The newest `count` readable entries; an entry damaged by hand is skipped, not fatal."""
    entries = []
    for raw in connection.lrange(HISTORY, 0, count - 1):
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("version"), str):
            entries.append(entry)
    return entries


def _files(connection: redis.Redis, wanted: set[str]) -> dict[str, dict[str, str] | None]:
    """Each version's files; None for a version whose texts are missing or not a JSON map of texts."""
    names = sorted(wanted)
    found: dict[str, dict[str, str] | None] = {}
    for name, raw in zip(names, connection.hmget(HISTORY_FILES, names) if names else [], strict=True):
        try:
            files = json.loads(raw) if raw is not None else None
        except ValueError:
            files = None
        valid = isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
        found[name] = files if valid else None
    return found
