"""The JSON Schema (draft 2020-12) of a rule file: for editors and the first validation stage.

It avoids `anyOf`/`oneOf`, whose errors say only "not valid under any of the
given schemas": a keyword like `properties` applies only to objects and `items`
only to arrays, so one schema can say "a condition, or a list of conditions"
and still report the precise key that is wrong.
"""

from __future__ import annotations

from typing import Any

from engine.rules.operators import MODIFIERS, OPERATORS

SCHEMA_ID = "https://hana-rules.dev/schema/rules.json"
EVENT_PATTERN = r"^(\*|lead|opportunity|ticket)(\.(\*|created|updated|deleted))?$"
RULE_ID_PATTERN = r"^[a-z0-9_-]+$"
ACTION_KINDS = ("hana_update", "webhook", "slack", "telegram", "email", "log", "delay")
CONDITION_KINDS = ("all", "any", "not", "template", "changed", "field", "path")

_DURATION = {"type": ["string", "number"], "description": "30s, 10m, 2h, 7d, or seconds"}
_TEMPLATE = {"type": "string", "description": "text with Jinja {{ … }} templates"}
_ANY_VALUE: dict[str, Any] = {}


def _condition_keywords() -> dict[str, Any]:
    properties: dict[str, Any] = {
        "all": {"type": "array", "items": {"$ref": "#/$defs/condition"}, "description": "every one holds"},
        "any": {"type": "array", "items": {"$ref": "#/$defs/condition"}, "description": "at least one holds"},
        "not": {"$ref": "#/$defs/conditions", "description": "the condition does not hold"},
        "template": {**_TEMPLATE, "description": "a Jinja expression that must be truthy"},
        "changed": {"type": "string", "description": "this event changed the attribute, e.g. lead.baseFunnelStatus"},
        "from": {**_ANY_VALUE, "description": "with changed: the value before"},
        "to": {**_ANY_VALUE, "description": "with changed: the value after"},
        "field": {"type": "string", "description": "a dotted name: lead.baseName, vars.score, event.type"},
        "path": {"type": "string", "description": "a JSONPath over the body Hana sent"},
    }
    for name in sorted(OPERATORS):
        properties[name] = {"description": f"operator {name}"}
    for name in MODIFIERS:
        properties[name] = {"type": "boolean"}
    return {"properties": properties, "additionalProperties": False, "minProperties": 1}


SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "hana-rules rule file",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "rules": {"type": "array", "items": {"$ref": "#/$defs/rule"}},
        "tests": {"type": "array", "items": {"$ref": "#/$defs/test"}},
    },
    "$defs": {
        "rule": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "on"],
            "properties": {
                "id": {"type": "string", "pattern": RULE_ID_PATTERN, "description": "unique, [a-z0-9_-]+"},
                "name": {"type": "string"},
                "description": {"type": "string"},
                "enabled": {"type": "boolean", "default": True},
                "priority": {"type": "integer", "default": 0, "description": "higher runs first"},
                "applications": {"type": "array", "items": {"type": "string"}},
                "on": {
                    "type": ["string", "array"],
                    "pattern": EVENT_PATTERN,
                    "items": {"type": "string", "pattern": EVENT_PATTERN},
                    "minItems": 1,
                    "description": "lead.created … opportunity.deleted, ticket.*, lead.*, *.created, *",
                },
                "vars": {
                    "type": "object",
                    "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                    "additionalProperties": _TEMPLATE,
                },
                "when": {"$ref": "#/$defs/conditions"},
                "then": {"type": "array", "items": {"$ref": "#/$defs/action"}},
                "throttle": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["key", "per"],
                    "properties": {"key": _TEMPLATE, "per": _DURATION, "limit": {"type": "integer", "minimum": 1}},
                },
                "stop": {"type": "boolean", "default": False},
                "include_echo": {"type": "boolean", "default": False},
            },
        },
        "conditions": {
            "type": ["object", "array"],
            "items": {"$ref": "#/$defs/condition"},
            **_condition_keywords(),
        },
        "condition": {"type": "object", **_condition_keywords()},
        "action": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "hana_update": {
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "properties": {
                        "lead": {"type": "object", "required": ["id"]},
                        "opportunity": {"type": "object", "required": ["id"]},
                    },
                },
                "webhook": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["url"],
                    "properties": {
                        "url": _TEMPLATE,
                        "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
                        "headers": {"type": "object", "additionalProperties": _TEMPLATE},
                        "json": _ANY_VALUE,
                        "body": _TEMPLATE,
                    },
                },
                "slack": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["webhook_url", "text"],
                    "properties": {"webhook_url": _TEMPLATE, "text": _TEMPLATE, "blocks": {"type": "array"}},
                },
                "telegram": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["bot_token", "chat_id", "text"],
                    "properties": {
                        "bot_token": _TEMPLATE,
                        "chat_id": {"type": ["string", "integer"]},
                        "text": _TEMPLATE,
                        "parse_mode": {"enum": ["HTML", "Markdown", "MarkdownV2"]},
                    },
                },
                "email": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["to", "subject", "body"],
                    "properties": {
                        "to": {"type": ["string", "array"], "items": {"type": "string"}},
                        "subject": _TEMPLATE,
                        "body": _TEMPLATE,
                    },
                },
                "log": _TEMPLATE,
                "delay": _DURATION,
                "recheck": {"type": "boolean", "description": "with delay: only if `when` still holds"},
            },
        },
        "test": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "event", "payload", "expect"],
            "properties": {
                "name": {"type": "string"},
                "event": {"type": "string", "pattern": EVENT_PATTERN},
                "payload": {"type": "object", "description": "the body Hana sends"},
                "previous": {"type": "object", "description": "known state, e.g. {lead: {baseName: A}}"},
                "expect": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matched": {"type": "array", "items": {"type": "string"}},
                        "not_matched": {"type": "array", "items": {"type": "string"}},
                        "actions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["rule"],
                                "properties": {
                                    "rule": {"type": "string"},
                                    "action": {"enum": list(ACTION_KINDS)},
                                    "payload": _ANY_VALUE,
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
