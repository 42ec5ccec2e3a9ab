"""Rule files on disk → parsed documents with positions; YAML and schema errors as RuleErrors."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from engine.rules.conditions import suggest
from engine.rules.errors import RuleError
from engine.rules.schema import EVENT_PATTERN, SCHEMA
from engine.rules.yaml_loader import Document, YamlError, load_yaml

_VALIDATOR = Draft202012Validator(SCHEMA)
EVENT_NAMES = [f"{e}.{v}" for e in ("lead", "opportunity", "ticket") for v in ("created", "updated", "deleted")]


@dataclass(frozen=True)
class SourceFile:
    name: str  # as shown in errors: relative to the working directory when possible
    document: Document
    #: rule indexes with schema errors: not compiled further, so one mistake gives one message
    broken_rules: frozenset[int] = frozenset()
    #: the same for the `tests:` entries
    broken_tests: frozenset[int] = frozenset()


@dataclass(frozen=True)
class LoadedFiles:
    files: tuple[SourceFile, ...]
    errors: tuple[RuleError, ...]
    version: str


def rule_files(rules_dir: Path) -> list[Path]:
    if not rules_dir.exists():
        return []
    return sorted(p for p in rules_dir.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def display_name(path: Path) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path.resolve()) if relative.startswith("..") else relative


def load_texts(texts: Mapping[str, str], env: Mapping[str, str]) -> LoadedFiles:
    """Parse and schema-check files given as {name: text}; the version hashes every byte."""
    digest = hashlib.sha256()
    files: list[SourceFile] = []
    errors: list[RuleError] = []
    for name in sorted(texts):
        text = texts[name]
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
        try:
            document = load_yaml(text, env)
        except YamlError as exc:
            errors.append(RuleError(name, exc.line, exc.column, exc.message, exc.rule_id, inner_path(exc.path),
                                    exc.hint))  # fmt: skip
            continue
        if document.value is None:
            document.value = {}
        shape = shape_error(name, document)
        if shape is not None:
            errors.append(shape)
            continue
        file_errors, broken = schema_errors(name, document)
        errors.extend(file_errors)
        files.append(SourceFile(name=name, document=document, broken_rules=frozenset(broken.get("rules", ())),
                                broken_tests=frozenset(broken.get("tests", ()))))  # fmt: skip
    return LoadedFiles(files=tuple(files), errors=tuple(errors), version=digest.hexdigest()[:12])


def read_texts(rules_dir: Path) -> tuple[dict[str, str], list[RuleError]]:
    """Every rule file's text by display name, and one error per file that cannot be read."""
    texts: dict[str, str] = {}
    unreadable: list[RuleError] = []
    for path in rule_files(rules_dir):
        name = display_name(path)
        try:
            texts[name] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            unreadable.append(RuleError(name, 1, 1, f"cannot read this file: {exc}"))
    return texts, unreadable


def load_directory(rules_dir: Path, env: Mapping[str, str]) -> LoadedFiles:
    texts, unreadable = read_texts(rules_dir)
    loaded = load_texts(texts, env)
    return LoadedFiles(loaded.files, (*unreadable, *loaded.errors), loaded.version)


def rule_id_at(document: Document, path: tuple[Any, ...]) -> str | None:
    if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
        rules = document.value.get("rules") if isinstance(document.value, dict) else None
        if isinstance(rules, list) and path[1] < len(rules) and isinstance(rules[path[1]], dict):
            rule_id = rules[path[1]].get("id")
            return str(rule_id) if rule_id is not None else None
    return None


def inner_path(path: tuple[Any, ...]) -> str:
    """The path inside a rule (`when/2/any/0/equals`), or inside the file for other keys."""
    if len(path) >= 2 and path[0] in ("rules", "tests") and isinstance(path[1], int):
        path = path[2:]
    return "/".join(str(p) for p in path)


_RULE_KEYS = frozenset(("id", "on", "when", "then", "vars", "priority", "throttle"))


def shape_error(name: str, document: Document) -> RuleError | None:
    """A file that is not a mapping of `rules:`/`tests:` at all: one error that says what to write."""
    value = document.value
    line, column = document.position(())
    if isinstance(value, list):
        return RuleError(name, line, column, "a rule file is a mapping with `rules:` (and optionally `tests:`), "
                         "not a list", hint="write `rules:` above your list and indent the list under it")  # fmt: skip
    if not isinstance(value, dict):
        return RuleError(name, line, column, f"a rule file is a mapping with `rules:` (and optionally `tests:`), "
                         f"not {_kind(value)}", hint="start the file with `rules:` and write each rule under it "
                         "as a list item: `  - id: my-rule`")  # fmt: skip
    if "rules" not in value and "tests" not in value and _RULE_KEYS & set(value):
        return RuleError(name, line, column, "this looks like a rule, but a rule file lists its rules under `rules:`",
                         hint="write `rules:` on the first line and make the rule a list item under it: "
                         "`  - id: my-rule`")  # fmt: skip
    return None


def schema_errors(name: str, document: Document) -> tuple[list[RuleError], dict[str, set[int]]]:
    """Every schema error, and per section (`rules`, `tests`) the indexes of entries that have one."""
    found: list[RuleError] = []
    broken: dict[str, set[int]] = {}
    for error, path in _schema_errors(document.value):
        message, hint, at = _explain(error, path)
        line, column = document.position(at)
        found.append(RuleError(name, line, column, message, rule_id_at(document, path), inner_path(at), hint))
        if len(path) >= 2 and path[0] in ("rules", "tests") and isinstance(path[1], int):
            broken.setdefault(path[0], set()).add(path[1])
    return found, broken


def _schema_errors(value: Any) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """(error, its path in the file): each rule and test alone, those seen valid before skipped.

    The editor sends the whole file at each pause in typing, and every entry but the one
    being typed was valid a moment ago: JSON Schema is half the cost of a check otherwise.
    """
    if not isinstance(value, dict):
        yield from ((error, tuple(error.absolute_path)) for error in _VALIDATOR.iter_errors(value))
        return
    sections = {s: value[s] for s in ("rules", "tests") if isinstance(value.get(s), list)}
    yield from ((e, tuple(e.absolute_path)) for e in _VALIDATOR.iter_errors({**value, **dict.fromkeys(sections, [])}))
    for section, entries in sections.items():
        for index, entry in enumerate(entries):
            canonical = json.dumps(entry, sort_keys=True, ensure_ascii=False, default=_typed)
            if canonical in _VALID[section]:
                continue
            errors = list(_ENTRY_VALIDATORS[section].iter_errors(entry))
            if not errors:
                with _VALID_LOCK:  # request threads validate at once
                    _VALID[section][canonical] = None
                    while len(_VALID[section]) > VALID_ENTRIES_KEPT:
                        _VALID[section].pop(next(iter(_VALID[section])))
            yield from ((e, (section, index, *e.absolute_path)) for e in errors)


def _typed(value: Any) -> str:
    """A value JSON has no spelling for, spelled with its type: never taken for a string that validates."""
    return f"\0{type(value).__name__}:{value!r}"


#: Entries (rules, tests) seen valid, by their canonical JSON, oldest first: bounded memory.
VALID_ENTRIES_KEPT = 10_000
_ENTRY_VALIDATORS = {section: _VALIDATOR.evolve(schema=SCHEMA["$defs"][section[:-1]]) for section in ("rules", "tests")}
_VALID: dict[str, dict[str, None]] = {"rules": {}, "tests": {}}
_VALID_LOCK = threading.Lock()


def _explain(error: Any, path: tuple[Any, ...]) -> tuple[str, str | None, tuple[Any, ...]]:
    """A sentence a business user can act on, a hint, and the exact path to point at."""
    validator, instance, schema = error.validator, error.instance, error.schema
    last = path[-1] if path else None
    if validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(str(k) for k in set(instance) - set(allowed))
        key = unknown[0]
        if not path:
            return (f"unknown top-level key {key!r}: a rule file holds `rules:` and optionally `tests:`",
                    suggest(key, allowed), (key,))  # fmt: skip
        where = "in a condition" if "field" in allowed else "here"
        what = "operator or key" if "field" in allowed else "key"
        return f"unknown {what} {key!r} {where}", suggest(key, allowed), (*path, key)
    if validator == "required":
        missing = error.message.split("'")[1]
        return f"{missing!r} is required here", None, path
    if validator == "type":
        wanted = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        names = {"object": "a mapping", "array": "a list", "string": "a text", "integer": "a whole number",
                 "number": "a number", "boolean": "true or false", "null": "nothing"}  # fmt: skip
        message = f"expected {' or '.join(str(names.get(w, w)) for w in wanted)}, got {_kind(instance)}"
        section = path if len(path) == 1 else (path[0], 0) if len(path) == 2 else None
        return message, _SHAPE_HINTS.get(section) if section else None, path
    if validator == "pattern" and schema.get("pattern") == EVENT_PATTERN:
        return (f"unknown event type {instance!r}; use lead.created … opportunity.deleted, ticket.*, "
                "or wildcards lead.*, *.created, *", suggest(str(instance), EVENT_NAMES), path)  # fmt: skip
    if validator == "pattern" and last == "id":
        return f"rule id {instance!r} may use only a-z, 0-9, - and _", None, path
    if validator == "pattern":
        return f"{instance!r} is not a valid name here (letters, digits and _ only)", None, path
    if validator == "enum":
        return f"expected one of {', '.join(map(str, schema['enum']))}, got {instance!r}", None, path
    if validator == "minProperties":
        return "this mapping is empty", None, path
    if validator == "minItems":
        return "this list is empty", None, path
    return error.message, None, path


_SHAPE_HINTS: dict[tuple[Any, ...], str] = {
    ("rules",): "write each rule under `rules:` as a list item starting with `- `: `  - id: my-rule`",
    ("tests",): "write each test under `tests:` as a list item starting with `- `: `  - name: my-test`",
    ("rules", 0): "a rule is a mapping such as `- id: my-rule` with `on:`, `when:` and `then:` under it",
    ("tests", 0): "a test is a mapping such as `- name: my-test` with `event:`, `payload:` and `expect:` under it",
}


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a text", bool: "true/false", type(None): "nothing"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )
