"""The OpenAPI 3.0 document of the whole HTTP API, served at /openapi.json.

Kept true by a schemathesis run against a live server in the test suite: every
status and shape answered must be documented here.
"""

from __future__ import annotations

from typing import Any

from engine import __version__
from engine.hana import ALIASES, EVENT_TYPES

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Bad request", 401: "Missing or wrong token", 403: "Refused: console.read_only is on", 404: "Not found",
        409: "Conflict",
        413: "Body over 1 MiB", 422: "The rules have errors; the running set stays", 503: "Unavailable",
    }  # fmt: skip
    return {str(code): _json(_ERROR, text[code]) for code in codes}


_ADMIN = {"security": [{"admin": []}]}
_EVENT_ID = {"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}}
_ACTION_ID = {"name": "action_id", "in": "path", "required": True, "schema": {"type": "string"}}
#: The rule files, their save and the history (SPEC §10 page 7).
_RULE_FILES = {
    "type": "object",
    "required": ["files", "read_only"],
    "properties": {"files": {"type": "array", "items": {"type": "object", "required": ["name", "file", "sha256"]}}},
}  # fmt: skip
_FILE_NAME = {
    "name": "name", "in": "path", "required": True, "schema": {"type": "string"},
    "description": "The path inside rules_dir, such as vip.yaml or team/sales.yaml",
}  # fmt: skip
_SAVE = {
    "type": "object",
    "required": ["text"],
    "properties": {
        "text": {"type": "string"},
        "expected": {"type": "string", "nullable": True, "description": "The text or sha256 opened; null: new"},
        "message": {"type": "string", "maxLength": 500},
    },
}  # fmt: skip
_CONFLICT = {
    "type": "object",
    "required": ["error", "disk", "submitted"],
    "properties": {"error": {"type": "string"}, "disk": {"type": "string", "nullable": True},
                   "submitted": {"type": "string"}},
}  # fmt: skip
_VERSION = {
    "type": "object",
    "required": ["version", "published_at", "source", "message", "previous", "changes"],
    "properties": {
        "source": {"enum": ["console", "cli", "api", "file-watch", "signal", "boot", "rollback"]},
        "changes": {"type": "array", "items": {"type": "object", "required": ["file", "change", "added", "removed"]}},
    },
}  # fmt: skip
_HISTORY = {
    "type": "object",
    "required": ["running", "versions"],
    "properties": {"versions": {"type": "array", "items": _VERSION}},
}  # fmt: skip
_ROLLBACK = {
    "type": "object",
    "required": ["version"],
    "properties": {"version": {"type": "string"}, "message": {"type": "string", "maxLength": 500},
                   "source": {"enum": ["api", "cli"]}},
}  # fmt: skip
#: The editor's drafts: {files: {path: text}} or {path, text}; paths inside rules_dir.
_DRAFTS = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "files": {"type": "object", "additionalProperties": {"type": "string"}},
                    "path": {"type": "string"},
                    "text": {"type": "string"},
                    "events": {"type": "integer", "minimum": 1, "maximum": 10000},
                },
            }
        }
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "hana-rules",
        "version": __version__,
        "description": "Receives Hana's lead/opportunity events; admin API of the rule engine.",
    },  # fmt: skip
    "components": {
        "securitySchemes": {
            "admin": {"type": "http", "scheme": "bearer"},
            "webhookQuery": {"type": "apiKey", "in": "query", "name": "token"},
            "webhookHeader": {"type": "apiKey", "in": "header", "name": "X-Webhook-Token"},
        },
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "Receipt": {
                "type": "object",
                "required": ["status", "event_id"],
                "properties": {
                    "status": {"enum": ["accepted", "duplicate", "quarantined"]},
                    "event_id": {"type": "string"},
                    "reason": {"type": "string"},
                },
            },
            "Evaluation": {
                "type": "object",
                "required": ["version", "matched", "rules"],
                "properties": {
                    "version": {"type": "string"},
                    "matched": {"type": "array", "items": {"type": "string"}},
                    "rules": {"type": "array", "items": {"type": "object", "required": ["id", "matched"]}},
                },
            },
            "Field": {
                "type": "object",
                "required": ["application", "entity", "name", "type", "count", "last_seen", "examples"],
                "properties": {
                    "application": {"type": "string", "nullable": True},
                    "entity": {"enum": ["lead", "opportunity"]},
                    "name": {"type": "string"},
                    "type": {"type": "string", "nullable": True},
                    "count": {"type": "integer"},
                    "last_seen": {"type": "string"},
                    "examples": {"type": "array", "items": {"type": "string"}},
                },
            },
            "RuleError": {
                "type": "object",
                "required": ["file", "line", "column", "rule", "path", "message", "hint"],
                "properties": {
                    "file": {"type": "string"},
                    "line": {"type": "integer"},
                    "column": {"type": "integer"},
                    "rule": {"type": "string", "nullable": True},
                    "path": {"type": "string"},
                    "message": {"type": "string"},
                    "hint": {"type": "string", "nullable": True},
                },
            },
            "EventSummary": {
                "type": "object",
                "required": ["id", "type", "received_at", "status", "matched"],
                "properties": {
                    "id": {"type": "string"},
                    "type": {"type": "string"},
                    "received_at": {"type": "string"},
                    "status": {"enum": ["received", "processing", "done", "failed", "quarantined"]},
                    "matched": {"type": "array", "items": {"type": "string"}},
                },
            },
        },  # fmt: skip
    },
    "paths": {
        "/hooks/{event_type}": {
            "post": {
                "summary": "Receive one Hana event",
                "security": [{"webhookQuery": []}, {"webhookHeader": []}],
                "parameters": [
                    {
                        "name": "event_type",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": ", ".join([*EVENT_TYPES, *ALIASES]),
                    }
                ],  # fmt: skip
                "requestBody": {"content": {"application/json": {"schema": {}}}},
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Receipt"}, "Accepted, duplicate or quarantined"),
                    **_errors(401, 404, 413, 503),
                },  # fmt: skip
            }
        },
        "/healthz": {"get": {"summary": "The process is up", "responses": {"200": _json({"type": "object"}, "Up")}}},
        "/readyz": {
            "get": {
                "summary": "Redis reachable, rules loaded",
                "responses": {"200": _json({"type": "object"}, "Ready"), **_errors(503)},
            }
        },  # fmt: skip
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "Metrics", "content": {"text/plain": {}}}},
            }
        },  # fmt: skip
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": _json({"type": "object"}, "OpenAPI")}}
        },
        "/admin/rules": {
            "get": {
                **_ADMIN,
                "summary": "The running rules with their counts",
                "responses": {
                    "200": _json({"type": "object", "required": ["version", "rules"]}, "Rules"),
                    **_errors(401),
                },
            }
        },  # fmt: skip
        "/admin/reload": {
            "post": {
                **_ADMIN,
                "summary": "Make the rule files live everywhere, or compare them against history",
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "dry_run": {"type": "boolean"},
                                    "events": {"type": "integer", "minimum": 1, "maximum": 10000},
                                    "source": {"enum": ["api", "cli"]},
                                    "message": {"type": "string", "maxLength": 500},
                                },
                            }
                        }
                    }
                },
                "responses": {
                    "200": _json({"type": "object"}, "Live, or the dry run's report"),
                    **_errors(400, 401, 422, 503),
                },
            }
        },  # fmt: skip
        "/admin/simulate": {
            "post": {
                **_ADMIN,
                "summary": "Evaluate one event, explained; nothing is sent",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["event_type", "payload"],
                                "properties": {
                                    "event_type": {"type": "string"},
                                    "payload": {"type": "object"},
                                    "previous": {"type": "object"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Evaluation"}, "The evaluation"),
                    **_errors(400, 401),
                },
            }
        },  # fmt: skip
        "/admin/events": {
            "get": {
                **_ADMIN,
                "summary": "Recent events, newest first",
                "parameters": [
                    {"name": n, "in": "query", "schema": {"type": "string"}} for n in ("type", "rule", "status")
                ]
                + [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["events"],
                            "properties": {
                                "events": {"type": "array", "items": {"$ref": "#/components/schemas/EventSummary"}}
                            },
                        },
                        "Events",
                    ),
                    **_errors(400, 401),
                },
            }
        },  # fmt: skip
        "/admin/events/{event_id}": {
            "get": {
                **_ADMIN,
                "summary": "One event's whole story",
                "parameters": [_EVENT_ID],
                "responses": {
                    "200": _json({"type": "object", "required": ["id", "body", "rules", "actions"]}, "The event"),
                    **_errors(401, 404),
                },
            }
        },  # fmt: skip
        "/admin/events/{event_id}/replay": {
            "post": {
                **_ADMIN,
                "summary": "Process a stored event again as a new event",
                "parameters": [_EVENT_ID],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Receipt"}, "Replayed"),
                    **_errors(401, 404, 409, 503),
                },
            }
        },  # fmt: skip
        "/admin/fields": {
            "get": {
                **_ADMIN,
                "summary": "The attribute catalogue: attribute names seen in events, with type, count and examples",
                "parameters": [
                    {"name": "application", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "entity",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "lead or opportunity (or ticket)",
                    },
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["fields", "dropped"],
                            "properties": {
                                "fields": {"type": "array", "items": {"$ref": "#/components/schemas/Field"}},
                                "dropped": {"type": "array", "items": {"type": "object"}},
                            },
                        },
                        "Attributes, by entity then name",
                    ),
                    **_errors(400, 401),
                },
            }
        },  # fmt: skip
        "/admin/failed": {
            "get": {
                **_ADMIN,
                "summary": "Dead letters and parked actions",
                "responses": {"200": _json({"type": "object", "required": ["failed"]}, "Dead letters"), **_errors(401)},
            }
        },  # fmt: skip
        "/admin/failed/{action_id}/retry": {
            "post": {
                **_ADMIN,
                "summary": "Retry a dead letter (a parked one resumes its application)",
                "parameters": [_ACTION_ID],
                "responses": {"200": _json({"type": "object"}, "Queued"), **_errors(401, 404)},
            }
        },  # fmt: skip
        "/admin/failed/{action_id}": {
            "delete": {
                **_ADMIN,
                "summary": "Forget a dead letter",
                "parameters": [_ACTION_ID],
                "responses": {"200": _json({"type": "object"}, "Deleted"), **_errors(401, 404)},
            }
        },  # fmt: skip
        "/admin/validate": {
            "post": {
                **_ADMIN,
                "summary": "Check draft rule files with the rest of the set from disk, as reload would",
                "requestBody": _DRAFTS,
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["errors", "rules", "version"],
                            "properties": {
                                "errors": {"type": "array", "items": {"$ref": "#/components/schemas/RuleError"}},
                                "rules": {"type": "integer", "nullable": True},
                                "version": {"type": "string", "nullable": True},
                            },
                        },
                        "Every error (none: the draft set is valid)",
                    ),
                    **_errors(400, 401, 413),
                },
            }
        },  # fmt: skip
        "/admin/dry-runs": {
            "post": {
                **_ADMIN,
                "summary": "Queue a dry run of draft rule files against the last N stored events, on the workers",
                "requestBody": _DRAFTS,
                "responses": {
                    "202": _json({"type": "object", "required": ["id", "status"]}, "Queued; poll its progress"),
                    **_errors(400, 401, 413),
                },
            }
        },  # fmt: skip
        "/admin/dry-runs/{run_id}": {
            "get": {
                **_ADMIN,
                "summary": "A dry run's progress and, per rule, its matches and the events whose outcome changes",
                "parameters": [{"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["id", "status", "done", "total", "rules"],
                            "properties": {
                                "status": {"enum": ["queued", "running", "finished", "failed"]},
                                "rules": {"type": "array", "items": {"type": "object"}},
                            },
                        },
                        "Progress and result so far",
                    ),
                    **_errors(401, 404),
                },
            }
        },  # fmt: skip
        "/admin/rules/files": {
            "get": {
                **_ADMIN,
                "summary": "Every rule file with its exact text and sha256, for the editor to open",
                "responses": {"200": _json(_RULE_FILES, "The rule files"), **_errors(401)},
            }
        },  # fmt: skip
        "/admin/rules/files/{name}": {
            "put": {
                **_ADMIN,
                "summary": "Save one rule file exactly as typed, if unchanged on disk since opened; then publish",
                "parameters": [_FILE_NAME],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _SAVE}}},
                "responses": {
                    "200": _json({"type": "object", "required": ["version", "rules", "name", "sha256"]}, "Live"),
                    "409": _json(_CONFLICT, "The file changed on disk since it was opened: both versions"),
                    **_errors(400, 401, 403, 404, 413, 422, 503),  # 404: a name the router cannot take (a newline)
                },
            }
        },  # fmt: skip
        "/admin/history": {
            "get": {
                **_ADMIN,
                "summary": "Published rule-set versions, newest first, with the files each changed",
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}
                ],
                "responses": {
                    "200": _json(_HISTORY, "History"),
                    **_errors(400, 401),
                },
            }
        },  # fmt: skip
        "/admin/history/{version}": {
            "get": {
                **_ADMIN,
                "summary": "One version: its files' text and its diff against the version before it",
                "parameters": [{"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": _json({**_VERSION, "required": [*_VERSION["required"], "files"]}, "The version"),
                    **_errors(401, 404),
                },
            }
        },  # fmt: skip
        "/admin/rollback": {
            "post": {
                **_ADMIN,
                "summary": "Write a version's files back, validate and publish them; recorded as a rollback",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ROLLBACK}}},
                "responses": {
                    "200": _json({"type": "object", "required": ["version", "rolled_back_to"]}, "Rolled back"),
                    **_errors(400, 401, 403, 404, 422, 503),
                },
            }
        },  # fmt: skip
    },
}
