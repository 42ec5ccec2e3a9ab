"""YAML for people who are not programmers: what you write is what you get.

PyYAML follows YAML 1.1, where `on` and `NO` are booleans, `012` is octal ten
and `12:30` is the number 750. In a rule file `on:` is a key, `NO` is Norway
and `0312345670` is a phone number. So documents are built here from the
parser's events with a small YAML 1.2-style resolver: only `true`/`false` are
booleans, only `null`/`~`/empty is null, numbers are decimal without leading
zeros, and everything else stays the string that was written. Duplicate keys,
anchors and aliases are errors. Every node's position is kept, keyed by its
path, so any later error can point at `file:line:column`.
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


class YamlError(Exception):
    """A YAML problem at a position: (line, column) are 1-based."""

    def __init__(self, message: str, line: int, column: int, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.hint = hint


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
    document = Document(value=None)
    try:
        events = iter(yaml.parse(text, Loader=_Parser))
        _expect(events, yaml.StreamStartEvent)
        first = next(events)
        if isinstance(first, yaml.StreamEndEvent):
            return document
        if not isinstance(first, yaml.DocumentStartEvent):
            raise YamlError("unexpected content", *_mark(first))
        document.value = _build(next(events), events, (), document, env or {})
        _expect(events, yaml.DocumentEndEvent)
        extra = next(events)
        if not isinstance(extra, yaml.StreamEndEvent):
            raise YamlError("only one YAML document per file (remove the extra `---`)", *_mark(extra))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlError(f"not valid YAML: {exc.problem or exc.context}", line, column) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"not valid YAML: {exc}", 1, 1) from None
    return document


def _mark(event: Any) -> tuple[int, int]:
    return event.start_mark.line + 1, event.start_mark.column + 1


def _expect(events: Any, kind: type) -> Any:
    event = next(events)
    if not isinstance(event, kind):
        raise YamlError("unexpected YAML structure", *_mark(event))
    return event


def _build(event: Any, events: Any, path: Path, document: Document, env: Mapping[str, str]) -> Any:
    document.positions[path] = _mark(event)
    if isinstance(event, yaml.AliasEvent):
        raise YamlError(
            f"aliases (*{event.anchor}) are not allowed in rule files", *_mark(event),
            hint="write the value out in full",
        )  # fmt: skip
    if getattr(event, "anchor", None):
        raise YamlError(f"anchors (&{event.anchor}) are not allowed in rule files", *_mark(event),
                        hint="write the value out in full")  # fmt: skip
    tag = getattr(event, "tag", None)
    if tag not in (None, "!", "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"):
        raise YamlError(f"YAML tags such as {tag} are not allowed in rule files", *_mark(event))
    if isinstance(event, yaml.ScalarEvent):
        value = resolve_scalar(event.value, event.style, tag)
        if isinstance(value, str) and "$" in value:
            try:
                value = substitute(value, env, document.secrets)
            except UnsetVariableError as exc:
                raise YamlError(str(exc), *_mark(event)) from None
        return value
    if isinstance(event, yaml.SequenceStartEvent):
        items = []
        while not isinstance(item := next(events), yaml.SequenceEndEvent):
            items.append(_build(item, events, (*path, len(items)), document, env))
        return items
    if isinstance(event, yaml.MappingStartEvent):
        mapping: dict[Any, Any] = {}
        while not isinstance(key_event := next(events), yaml.MappingEndEvent):
            if not isinstance(key_event, yaml.ScalarEvent):
                raise YamlError("a key must be a plain word, not a list or mapping", *_mark(key_event))
            key = key_event.value  # keys stay as written: `on`, `NO`, `012`
            if key in mapping:
                line, column = document.positions[(*path, key)]
                raise YamlError(f"duplicate key {key!r} (first at line {line})", *_mark(key_event),
                                hint="remove one of them")  # fmt: skip
            document.positions[(*path, key)] = _mark(key_event)
            value_event = next(events)
            mapping[key] = _build(value_event, events, (*path, key), document, env)
            document.positions[(*path, key)] = _mark(key_event)  # errors about a key point at the key
        return mapping
    raise YamlError("unexpected YAML structure", *_mark(event))
