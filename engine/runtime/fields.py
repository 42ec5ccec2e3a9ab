"""The attribute catalogue: every lead/opportunity attribute name real events carried, per application.

The editor completes attribute names from it and rule validation warns about a name
never seen (engine/rules/reads.py): a typo in `lead.cf_string_phan_loai_kh` otherwise
only shows as a rule that never matches. What is recorded is what the rules see of the
event itself: the top-level attributes of `lead` and `opportunity` in its body (after
unwrapping Hana's envelope), not the merged last known state, so `count` is how many
events carried the name. Values inside an object attribute are not catalogued as names
of their own: Hana's attributes are flat, and the keys of a free-form object are data,
not names a business user picks from.

Cheap on the worker's path: a worker gathers what its events carried in memory and
writes it in the same pipeline (the same round trip) as an event's commit, one call
of fields.lua for all the names of many events: every second under load, at once when
no other event waits (so a lone event's names show at once), and in the worker's
maintenance (at least every 15 s: a worker whose last jobs others took) and as it
stops. A worker killed meanwhile loses what it had not written: about a second of
counts and examples, never an event. Per catalogue (one application and entity):

    hr:fields:seen:<application>:<entity>   sorted set: name → last seen (ms, Redis's clock)
    hr:fields:info:<application>:<entity>   hash: name → JSON {"type", "count", "examples"}
    hr:fields:catalogues                    the "<application>:<entity>" having one
    hr:fields:dropped                       "<application>:<entity>" (or "*") → names not recorded

Bounded: MAX_ATTRIBUTES names per catalogue (new names past it are dropped, until
retention frees room), MAX_CATALOGUES catalogues (further applications' names count
under "*"), names of 1 to MAX_NAME characters; a dropped name is counted each time an
event carried it. EXAMPLES distinct examples of at most EXAMPLE_LENGTH characters each,
secrets masked before they are cut. Retention (retention.py) forgets the names not
seen within the retention period.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from engine.hana import ENTITIES, is_array_attribute, is_date_attribute, iso_from_microseconds, parse_hana_date
from engine.redaction import MASK, SECRET_KEYS, redact
from engine.runtime import lua

SEEN_PREFIX = "hr:fields:seen:"
INFO_PREFIX = "hr:fields:info:"
CATALOGUES = "hr:fields:catalogues"
DROPPED = "hr:fields:dropped"
#: Names kept per application and entity: Hana apps have tens of custom attributes; a body
#: sending thousands of made-up names must not grow Redis or the editor's completion list.
#: 0 turns the catalogue off (bench/fields.py measures the workers both ways).
MAX_ATTRIBUTES = 500
#: Under load, a worker writes what it gathered at most this often (with an event's commit).
FLUSH_SECONDS = 1.0
MAX_CATALOGUES = 200
MAX_NAME = 200
EXAMPLES = 3
EXAMPLE_LENGTH = 40
#: A type from the name's prefix (`cf_<word>_`) wins over what one value looks like (Hana's own typing).
_PREFIXED = {"string": "string", "number": "number", "enum": "enum", "date": "date"}
#: The type of a value without a prefix to go by (text is looked at more closely: a date, or text).
_BY_VALUE: dict[type, str] = {bool: "boolean", int: "number", float: "number", list: "list", dict: "object"}
#: Entities as the API takes them: `ticket` is Hana's word for an opportunity.
ENTITY_NAMES = {"lead": "lead", "opportunity": "opportunity", "ticket": "opportunity"}


def type_of(name: str, value: Any) -> str:
    """The attribute's Hana type: from its prefix, else from the value; '' for null (says nothing)."""
    if name.startswith("cf_"):
        word, underscore, _ = name[3:].partition("_")
        if underscore and word in _PREFIXED:
            return _PREFIXED[word]
    kind = _BY_VALUE.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, str):
        if is_date_attribute(name) or (value[:1].isdigit() and parse_hana_date(value)):
            return "date"  # both of Hana's date forms start with a digit: other text is not parsed
        return "list" if is_array_attribute(name) else "string"
    return "" if value is None else "string"


def shown(value: Any) -> str:
    """A value as the catalogue shows it: text as it is, anything else as compact JSON."""
    if isinstance(value, str) and value:
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def cut(text: str, limit: int = EXAMPLE_LENGTH) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class CatalogueWrite:
    """What one event adds to one catalogue: (name, type, example) per attribute ('' = no example)."""

    catalogue: str  # "<application>:<entity>"
    entries: tuple[tuple[str, str, str], ...]
    over: int = 0  # names left out before Redis (too long, or past MAX_ATTRIBUTES in one event)


def catalogue_key(application_id: str | None, entity: str) -> str:
    return f"{application_id or '-'}:{entity}"


def catalogue_writes(context: Mapping[str, Any], secrets: frozenset[str]) -> tuple[CatalogueWrite, ...]:
    """What an event's normalized context (before the known state is merged in) adds to the catalogue."""
    if MAX_ATTRIBUTES <= 0:
        return ()
    application = context.get("application")
    application_id = application.get("id") if isinstance(application, dict) else None
    writes = []
    for entity in ENTITIES:
        attributes = context.get(entity)
        if not isinstance(attributes, dict) or not attributes:
            continue
        names = [name for name in attributes if isinstance(name, str) and 0 < len(name) <= MAX_NAME]
        kept = names[:MAX_ATTRIBUTES]
        # Secrets are masked in the whole value, then cut: a cut secret would not be found any more.
        texts = redact([shown(attributes[name]) if attributes[name] is not None else "" for name in kept], secrets)
        entries = tuple(
            (name, type_of(name, attributes[name]),
             MASK if name.lower() in SECRET_KEYS and text else cut(text))
            for name, text in zip(kept, texts, strict=True)
        )  # fmt: skip
        writes.append(CatalogueWrite(catalogue_key(application_id, entity), entries, len(attributes) - len(kept)))
    return tuple(writes)


def write_script(connection: redis.Redis) -> Any:
    """fields.lua, with this process's bounds written in."""
    source = lua.render("fields.lua", seen_prefix=SEEN_PREFIX, info_prefix=INFO_PREFIX, catalogues=CATALOGUES,
                        dropped_counts=DROPPED, max_attributes=MAX_ATTRIBUTES, max_catalogues=MAX_CATALOGUES,
                        examples=EXAMPLES)  # fmt: skip
    return connection.register_script(source)


class _Batch:
    """Observations of many events, merged: per catalogue and name, [count, type, examples latest first]."""

    def __init__(self) -> None:
        self.names: dict[str, dict[str, list[Any]]] = {}
        self.over: dict[str, int] = {}
        self.since = time.monotonic()
        self.full = False  # as many catalogues, or names in one, as Redis keeps: write it now

    def add(self, writes: tuple[CatalogueWrite, ...]) -> None:
        for write in writes:
            names = self.names.setdefault(write.catalogue, {})
            self.over[write.catalogue] = self.over.get(write.catalogue, 0) + write.over
            for name, kind, example in write.entries:
                seen = names.get(name)
                if seen is None:
                    seen = names[name] = [0, "", []]
                seen[0] += 1
                if kind:
                    seen[1] = kind
                examples = seen[2]
                if example and (not examples or examples[0] != example):
                    if example in examples:
                        examples.remove(example)
                    examples.insert(0, example)
                    del examples[EXAMPLES:]
            self.full = self.full or len(names) >= MAX_ATTRIBUTES or len(self.names) >= MAX_CATALOGUES

    def arguments(self) -> list[str | int]:
        """fields.lua's arguments."""
        arguments: list[str | int] = [len(self.names)]
        for catalogue, names in self.names.items():
            arguments += [catalogue, self.over.get(catalogue, 0), len(names)]
            for name, (count, kind, examples) in names.items():
                arguments += [name, count, kind, len(examples), *examples]
        return arguments


class Pending:
    """One worker's observations not written yet, and when to write them (see the module's docstring).

    `offer` is called with each event's observations before its commit and says what the commit
    carries; `committed` after a commit that went through keeps what it did not carry for later.
    """

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        self.script = write_script(connection)
        self.batch = _Batch()
        self._held: tuple[CatalogueWrite, ...] = ()

    def offer(self, writes: tuple[CatalogueWrite, ...], *, idle: bool) -> list[str | int]:
        """fields.lua's arguments for the commit of this event to carry ([]: none yet).

        `idle`: nothing else waits for the workers; what is gathered is written with this commit.
        """
        self._held = ()
        due = idle or self.batch.full or time.monotonic() - self.batch.since >= FLUSH_SECONDS
        if not due or not (writes or self.batch.names):
            self._held = writes
            return []
        self.batch.add(writes)
        arguments = self.batch.arguments()
        self.batch = _Batch()  # written whatever the commit answers: the pipeline runs both
        return arguments

    def committed(self) -> None:
        """The event's commit went through: what it did not carry waits for a later one."""
        if self._held:
            if not self.batch.names:
                self.batch.since = time.monotonic()
            self.batch.add(self._held)
            self._held = ()

    def flush(self) -> None:
        """Write what is gathered now (the worker's maintenance, and when it stops)."""
        if self.batch.names:
            batch, self.batch = self.batch, _Batch()
            self.script(keys=[], args=batch.arguments())


def entity_name(text: str) -> str | None:
    """`lead` or `opportunity` for what a user may type (`ticket` too); None for anything else."""
    return ENTITY_NAMES.get(text.strip().lower())


class Catalogue:
    """Reads the catalogue for the admin API, the CLI and validation; forgets what retention ends."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        self._forget: Any = None  # the trim script, registered when retention first needs it

    def _catalogues(self, application: str | None, entity: str | None) -> list[tuple[str, str | None, str]]:
        """(catalogue, application, entity) of each catalogue, filtered."""
        found = []
        for raw in self.connection.smembers(CATALOGUES):
            catalogue = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            owner, _, kind = catalogue.rpartition(":")
            app = None if owner == "-" else owner
            if (application is None or app == application) and (entity is None or kind == entity):
                found.append((catalogue, app, kind))
        return sorted(found, key=lambda item: (item[2], item[1] or ""))

    def listing(self, *, application: str | None = None, entity: str | None = None) -> dict[str, Any]:
        """`{fields: [...], dropped: [...]}`: every name seen, by entity then name (then application)."""
        catalogues = self._catalogues(application, entity)
        with self.connection.pipeline(transaction=False) as pipe:
            for catalogue, _, _ in catalogues:
                pipe.zrange(SEEN_PREFIX + catalogue, 0, -1, withscores=True)
                pipe.hgetall(INFO_PREFIX + catalogue)
            pipe.hgetall(DROPPED)
            answers = pipe.execute()
        rows = []
        for index, (_, app, kind) in enumerate(catalogues):
            seen, info = answers[2 * index], answers[2 * index + 1]
            for raw_name, score in seen:
                rows.append(_row(app, kind, raw_name, score, info.get(raw_name)))
        rows.sort(key=lambda row: (row["entity"], row["name"], row["application"] or ""))
        dropped = []
        for raw, count in sorted(answers[-1].items()):
            owner, _, kind = raw.decode(errors="replace").rpartition(":")
            app = None if owner == "-" else owner
            if raw == b"*":  # applications past MAX_CATALOGUES: shown whatever the filters
                dropped.append({"application": "*", "entity": "*", "count": int(count)})
            elif (application is None or app == application) and (entity is None or kind == entity):
                dropped.append({"application": app, "entity": kind, "count": int(count)})
        return {"fields": rows, "dropped": dropped}

    def seen(self) -> dict[str | None, dict[str, set[str]]]:
        """application → entity → names: what engine.rules.reads.unseen_attributes compares rules with."""
        catalogues = self._catalogues(None, None)
        with self.connection.pipeline(transaction=False) as pipe:
            for catalogue, _, _ in catalogues:
                pipe.zrange(SEEN_PREFIX + catalogue, 0, -1)
            answers = pipe.execute()
        names: dict[str | None, dict[str, set[str]]] = {}
        for (_, app, kind), members in zip(catalogues, answers, strict=True):
            names.setdefault(app, {})[kind] = {m.decode(errors="replace") for m in members}
        return names

    def forget_before(self, cutoff_ms: float) -> int:
        """Forget names last seen before `cutoff_ms` (Redis's clock); how many. Deletes only."""
        if self._forget is None:
            source = lua.render("fields_trim.lua", seen_prefix=SEEN_PREFIX, info_prefix=INFO_PREFIX,
                                catalogues=CATALOGUES, dropped=DROPPED, max_catalogues=MAX_CATALOGUES)  # fmt: skip
            self._forget = self.connection.register_script(source)
        return int(self._forget(keys=[], args=[int(cutoff_ms)]))


def _row(application: str | None, entity: str, raw_name: bytes, score: float, raw_info: bytes | None) -> dict[str, Any]:
    try:
        info = json.loads(raw_info) if raw_info else {}
    except ValueError:
        info = {}
    if not isinstance(info, dict):
        info = {}
    examples = info.get("examples")  # Redis's cjson writes an empty list as {}
    count = info.get("count")
    return {
        "application": application, "entity": entity, "name": raw_name.decode(errors="replace"),
        "type": info.get("type") if isinstance(info.get("type"), str) else None,
        "count": int(count) if isinstance(count, int | float) and not isinstance(count, bool) else 0,
        "last_seen": iso_from_microseconds(int(score) * 1000),
        "examples": [str(e) for e in examples] if isinstance(examples, list) else [],
    }  # fmt: skip
