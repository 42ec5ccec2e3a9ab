"""YAML for people who are not programmers: what you write is what you get.

PyYAML follows YAML 1.1, where `on` and `NO` are booleans, `012` is octal ten
and `12:30` is the number 750. In a rule file `on:` is a key, `NO` is Norway
and `0312345670` is a phone number. So documents are built here from the
parser's events with a small YAML 1.2-style resolver: only `true`/`false` are
booleans, only `null`/`~`/empty is null, numbers are decimal without leading
zeros, and everything else stays the string that was written. Duplicate keys,
anchors and aliases are errors. Every node's position is kept, keyed by its
path, so any later error can point at `file:line:column`.

A file is bounded before anything recurses over it: its size, its number of
values and its nesting depth. Every later stage (the JSON Schema, the compiler,
rendering) walks the document recursively, so the depth bound here is what
keeps each of them far below Python's recursion limit, whatever the input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from engine.envsubst import UnsetVariableError, substitute

Path = tuple[str | int, ...]

_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?|[-+]?\.[0-9]+([eE][-+]?[0-9]+)?")
_Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: A hand-written rule needs ~15 levels (rules/0/when/any/0/all/1/not/field); 50 leaves room for
#: nested webhook bodies, and keeps every recursive stage under ~300 of Python's 1,000 frames.
MAX_DEPTH = 50
#: 1,000 rules of ~25 values each fit 4 times over; each value costs a position entry.
MAX_NODES = 100_000
#: Characters per file: ~5,000 hand-written rules. Files beyond are generated: split them.
MAX_CHARACTERS = 2 * 1024 * 1024


class YamlError(Exception):
    """A YAML problem at a position: (line, column) are 1-based; inside a rule, its id and path too."""

    def __init__(self, message: str, line: int, column: int, hint: str | None = None, *,
                 path: Path = (), rule_id: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.hint = hint
        self.path = path
        self.rule_id = rule_id


@dataclass
class Document:
    """A parsed file: plain Python values, and where each value stands in the text."""

    value: Any
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)
    #: Values that came from `${NAME}`: secrets, never shown.
    secrets: set[str] = field(default_factory=set)

    def position(self, path: Path) -> tuple[int, int]:
        """The position of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path not in self.positions and path:
            path = path[:-1]
        return self.positions.get(path, (1, 1))


def resolve_scalar(text: str, style: str | None, tag: str | None) -> Any:
    if style is not None and style != "":  # quoted or block scalar: always a string
        return text
    if tag == "tag:yaml.org,2002:str":
        return text
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def load_yaml(text: str, env: Mapping[str, str] | None = None) -> Document:
    """Parse one YAML document; raises YamlError with a position."""
    if len(text) > MAX_CHARACTERS:
        size = f"{MAX_CHARACTERS // 1024 // 1024} MiB"
        raise YamlError(f"this file is larger than {size}", *_offset(text, MAX_CHARACTERS),
                        hint="split its rules into several files")  # fmt: skip
    document = Document(value=None)
    try:
        events = iter(yaml.parse(text, Loader=_Parser))
        _expect(events, yaml.StreamStartEvent)
        first = next(events)
        if isinstance(first, yaml.StreamEndEvent):
            return document
        if not isinstance(first, yaml.DocumentStartEvent):
            raise YamlError("unexpected content", *_mark(first))
        document.value = _Builder(events, document, env or {}).build(next(events), (), 1)
        _expect(events, yaml.DocumentEndEvent)
        extra = next(events)
        if not isinstance(extra, yaml.StreamEndEvent):
            raise YamlError("only one YAML document per file (remove the extra `---`)", *_mark(extra))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlError(f"not valid YAML: {exc.problem or exc.context}", line, column) from None
    except yaml.reader.ReaderError as exc:
        raise YamlError(f"not valid YAML: {exc.reason} (character #x{exc.character:04x})",
                        *_offset(text, exc.position), hint="remove this character") from None  # fmt: skip
    except yaml.YAMLError as exc:
        raise YamlError(f"not valid YAML: {exc}", 1, 1) from None
    return document


def _offset(text: str, offset: int) -> tuple[int, int]:
    """(line, column), 1-based, of a character offset."""
    offset = max(0, min(offset, len(text)))
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _mark(event: Any) -> tuple[int, int]:
    return event.start_mark.line + 1, event.start_mark.column + 1


def _expect(events: Any, kind: type) -> Any:
    event = next(events)
    if not isinstance(event, kind):
        raise YamlError("unexpected YAML structure", *_mark(event))
    return event


class _Builder:
    """Plain values from parser events, counting values and depth as it goes."""

    def __init__(self, events: Any, document: Document, env: Mapping[str, str]) -> None:
        self.events = events
        self.document = document
        self.env = env
        self.nodes = 0
        #: each rule's mapping while it is being built: an error inside a rule names the rule
        self.rules: dict[int, dict[Any, Any]] = {}

    def error(self, message: str, event: Any, path: Path, hint: str | None = None) -> YamlError:
        rule = self.rules.get(path[1]) if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int) else None
        rule_id = rule.get("id") if rule is not None else None
        return YamlError(message, *_mark(event), hint, path=path,
                         rule_id=rule_id if isinstance(rule_id, str) else None)  # fmt: skip

    def build(self, event: Any, path: Path, depth: int) -> Any:
        document = self.document
        document.positions[path] = _mark(event)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise YamlError(f"more than {MAX_NODES:,} values in one file", *_mark(event),
                            hint="split its rules into several files")  # fmt: skip
        if isinstance(event, yaml.AliasEvent):
            raise self.error(f"aliases (*{event.anchor}) are not allowed in rule files", event, path,
                             "write the value out in full")  # fmt: skip
        if getattr(event, "anchor", None):
            raise self.error(f"anchors (&{event.anchor}) are not allowed in rule files", event, path,
                             "write the value out in full")  # fmt: skip
        tag = getattr(event, "tag", None)
        if tag not in (None, "!", "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"):
            raise self.error(f"YAML tags such as {tag} are not allowed in rule files", event, path,
                             "remove the tag: values are read as written")  # fmt: skip
        if isinstance(event, yaml.ScalarEvent):
            value = resolve_scalar(event.value, event.style, tag)
            if isinstance(value, str) and "$" in value:
                try:
                    value = substitute(value, self.env, document.secrets)
                except UnsetVariableError as exc:
                    raise self.error(str(exc), event, path) from None
            return value
        if depth > MAX_DEPTH:
            # Named by the rule's own key (`when`), not by a path of 50 steps.
            in_rule = len(path) >= 2 and path[0] == "rules" and path[1] in self.rules
            raise self.error(f"nested more than {MAX_DEPTH} levels deep", event, path[:3] if in_rule else path[:1],
                             "a rule needs far fewer levels: list conditions under all:/any: instead of nesting "
                             "them, or move deep data out of the rule file")  # fmt: skip
        if isinstance(event, yaml.SequenceStartEvent):
            items: list[Any] = []
            while not isinstance(item := next(self.events), yaml.SequenceEndEvent):
                items.append(self.build(item, (*path, len(items)), depth + 1))
            return items
        if isinstance(event, yaml.MappingStartEvent):
            mapping: dict[Any, Any] = {}
            if len(path) == 2 and path[0] == "rules" and isinstance(path[1], int):
                self.rules[path[1]] = mapping
            while not isinstance(key_event := next(self.events), yaml.MappingEndEvent):
                if not isinstance(key_event, yaml.ScalarEvent):
                    raise self.error("a key must be a plain word, not a list or mapping", key_event, path)
                key = key_event.value  # keys stay as written: `on`, `NO`, `012`
                if key in mapping:
                    line, column = document.positions[(*path, key)]
                    raise self.error(f"duplicate key {key!r} (first at line {line})", key_event, (*path, key),
                                     "remove one of them")  # fmt: skip
                document.positions[(*path, key)] = _mark(key_event)
                mapping[key] = self.build(next(self.events), (*path, key), depth + 1)
                document.positions[(*path, key)] = _mark(key_event)  # errors about a key point at the key
            return mapping
        raise self.error("unexpected YAML structure", event, path)
