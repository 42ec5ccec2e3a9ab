"""Rule files on disk → parsed documents with positions; YAML and schema errors as RuleErrors."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
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
            errors.append(RuleError(name, exc.line, exc.column, exc.message, hint=exc.hint))
            continue
        if document.value is None:
            document.value = {}
        file_errors, broken = schema_errors(name, document)
        errors.extend(file_errors)
        files.append(SourceFile(name=name, document=document, broken_rules=frozenset(broken)))
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


def schema_errors(name: str, document: Document) -> tuple[list[RuleError], set[int]]:
    found: list[RuleError] = []
    broken: set[int] = set()
    for error in _VALIDATOR.iter_errors(document.value):
        path = tuple(error.absolute_path)
        message, hint, at = _explain(error, path)
        line, column = document.position(at)
        found.append(RuleError(name, line, column, message, rule_id_at(document, path), inner_path(at), hint))
        if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
            broken.add(path[1])
    return found, broken


def _explain(error: Any, path: tuple[Any, ...]) -> tuple[str, str | None, tuple[Any, ...]]:
    """A sentence a business user can act on, a hint, and the exact path to point at."""
    validator, instance, schema = error.validator, error.instance, error.schema
    last = path[-1] if path else None
    if validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(str(k) for k in set(instance) - set(allowed))
        key = unknown[0]
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
        return f"expected {' or '.join(names.get(w, w) for w in wanted)}, got {_kind(instance)}", None, path
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


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a text", bool: "true/false", type(None): "nothing"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )
