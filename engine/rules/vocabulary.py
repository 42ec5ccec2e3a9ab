"""The words a rule file may use, for the editor's completion: keys, operators, events, filters.

Read from the same tables the loader and compiler use (the JSON Schema, the operator table,
the sandboxed Jinja environment), so completion never offers a word the loader refuses,
and a new operator or filter appears in the editor without a change here. The attribute
names come from the catalogue of what Hana really sent (engine/runtime/fields.py), which
the web layer adds: this module is pure.
"""

from __future__ import annotations

from typing import Any

from engine.hana import ALIASES, ENTITIES, EVENT_TYPES
from engine.rules.operators import MODIFIERS, OPERATORS
from engine.rules.schema import SCHEMA
from engine.rules.templates import ENVIRONMENT

#: Names of the context a template or a `field:` reads besides the entity's attributes.
CONTEXT_NAMES = ("event.id", "event.type", "event.entity", "event.received_at", "application.id", "application.name",
                 "changes", "previous", "vars", "raw")


def vocabulary() -> dict[str, Any]:
    """{keys, operators, modifiers, events, filters, context}: each a sorted list of words."""
    return {
        "keys": sorted(_keys(SCHEMA) - set(OPERATORS) - set(MODIFIERS)),
        "operators": sorted(OPERATORS),
        "modifiers": sorted(MODIFIERS),
        "events": [*EVENT_TYPES, *(f"{entity}.*" for entity in ENTITIES), "*", *sorted(ALIASES)],
        "filters": sorted(name for name in ENVIRONMENT.filters if not name.startswith("_")),
        "context": list(CONTEXT_NAMES),
    }


def _keys(schema: Any) -> set[str]:
    """Every property name the schema declares, at any depth (`$defs` included)."""
    found: set[str] = set()
    if isinstance(schema, dict):
        for name, value in schema.items():
            if name == "properties" and isinstance(value, dict):
                found.update(key for key in value if not key.startswith("$"))
            found |= _keys(value)
    elif isinstance(schema, list):
        for item in schema:
            found |= _keys(item)
    return found
