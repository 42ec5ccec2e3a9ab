"""Hana's wire format, in one place: event types, the attribute envelope, dates.

Everything else in hana-rules sees the context this module builds and never
the body Hana sent. Hana's bodies are loosely specified, so normalization is
best-effort: every surprise becomes a warning kept on the event, never an
exception.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ENTITIES = ("lead", "opportunity")
EVENT_TYPES = tuple(f"{entity}.{verb}" for entity in ENTITIES for verb in ("created", "updated", "deleted"))
ALIASES = {f"ticket.{verb}": f"opportunity.{verb}" for verb in ("created", "updated", "deleted")}
ENVELOPE_VALUE_KEYS = ("nomalizeData", "normalizeData")  # Hana's own spelling first
ENVELOPE_KEYS = frozenset((*ENVELOPE_VALUE_KEYS, "rawData"))
TOP_LEVEL_KEYS = frozenset(("application", "lead", "opportunity", "conversation"))


def canonical_event_type(name: str) -> str | None:
    """`ticket.*` → `opportunity.*`; None for anything that is not an event type."""
    name = ALIASES.get(name, name)
    return name if name in EVENT_TYPES else None


def entity_of(event_type: str) -> str:
    """`lead` or `opportunity`."""
    return event_type.split(".", 1)[0]


def unwrap(value: Any) -> tuple[Any, Any]:
    """(normalized, raw) of one attribute; a value without envelope counts as both."""
    if isinstance(value, dict) and value.keys() & ENVELOPE_KEYS:
        for key in ENVELOPE_VALUE_KEYS:
            if key in value:
                normalized = value[key]
                return normalized, value.get("rawData", normalized)
        return value["rawData"], value["rawData"]
    return value, value


def application_id_of(body: Mapping[str, Any]) -> str | None:
    application = body.get("application")
    if isinstance(application, dict):
        value = application.get("id")
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
    return None


def entity_id_of(body: Mapping[str, Any], entity: str) -> str | None:
    """The id of the lead/opportunity an event is about, enveloped or not."""
    attributes = body.get(entity)
    if not isinstance(attributes, dict) or "id" not in attributes:
        return None
    value, _ = unwrap(attributes["id"])
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    return None


_DMY = re.compile(r"(\d{1,2})-(\d{1,2})-(\d{4})")


def parse_hana_date(value: Any) -> datetime | None:
    """A timezone-aware datetime for the date forms Hana uses, else None.

    Hana sends ISO 8601 (`2020-09-13T17:00:00.000Z`, or with an offset) in raw
    values and `dd-MM-yyyy` (`14-09-2020`) in normalized ones. A date without a
    zone is taken as UTC.
    """
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not 8 <= len(value) <= 40:
        return None
    text = value.strip()
    match = _DMY.fullmatch(text)
    try:
        if match:
            day, month, year = (int(g) for g in match.groups())
            return datetime(year, month, day, tzinfo=UTC)
        if text[:4].isdigit() and text[4:5] == "-":
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except ValueError:
        return None
    return None


def is_date_attribute(name: str) -> bool:
    return name.startswith("cf_date_") or name in ("baseBirthday",)


@dataclass(frozen=True)
class Normalized:
    """What a rule sees of one event, and what surprised us on the way."""

    context: dict[str, Any]
    warnings: tuple[str, ...]


def normalize(
    body: Any,
    *,
    event_id: str,
    event_type: str,
    received_at: str,
    application_name: str | None = None,
) -> Normalized:
    """Turn a Hana body into the rule context of SPEC §5 (state fields are added later)."""
    warnings: list[str] = []
    entity = entity_of(event_type)
    if not isinstance(body, dict):
        warnings.append(f"the body is a JSON {type(body).__name__}, not an object; it has no attributes")
        body = {}
    unknown = sorted(set(body) - TOP_LEVEL_KEYS)
    if unknown:
        warnings.append(f"unknown top-level keys ignored: {', '.join(map(str, unknown))}")

    app_id = application_id_of(body)
    if app_id is None:
        warnings.append("application.id is missing")

    context: dict[str, Any] = {
        "event": {"id": event_id, "type": event_type, "entity": entity, "received_at": received_at},
        "application": {"id": app_id, "name": application_name},
        "raw": {},
        "previous": {},
        "changes": [],
        "vars": {},
    }
    present = []
    for name in ENTITIES:
        if name not in body or body[name] is None:
            continue
        values, raws = _attributes(name, body[name], warnings)
        context[name] = values
        context["raw"][name] = raws
        present.append(name)
    if not present:
        warnings.append("neither lead nor opportunity is present; rules see no attributes")
    elif entity not in present:
        warnings.append(f"a {event_type} event without {entity} attributes")
    elif "id" not in context[entity]:
        warnings.append(f"{entity}.id is missing, so this {entity} cannot be updated or tracked")

    conversation = body.get("conversation")
    url = None
    if isinstance(conversation, dict):
        url = conversation.get("conversationUrl")
        if url is not None and not isinstance(url, str):
            warnings.append("conversation.conversationUrl is not a string; ignored")
            url = None
    elif conversation is not None:
        warnings.append("conversation is not an object; ignored")
    context["conversation"] = {"url": url}
    return Normalized(context=context, warnings=tuple(warnings))


def _attributes(entity: str, attributes: Any, warnings: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    if not isinstance(attributes, dict):
        warnings.append(f"{entity} is a JSON {type(attributes).__name__}, not an object; ignored")
        return {}, {}
    values: dict[str, Any] = {}
    raws: dict[str, Any] = {}
    bare: list[str] = []
    for name, value in attributes.items():
        if isinstance(value, dict) and value.keys() & ENVELOPE_KEYS:
            extra = sorted(set(value) - ENVELOPE_KEYS)
            if extra:
                warnings.append(f"{entity}.{name}: unknown envelope keys ignored: {', '.join(extra)}")
            if not value.keys() & set(ENVELOPE_VALUE_KEYS):
                warnings.append(f"{entity}.{name} has rawData but no nomalizeData; the raw value is used")
        else:
            bare.append(name)
        normalized, raw = unwrap(value)
        values[name] = normalized
        raws[name] = raw
        _check_type(entity, name, normalized, warnings)
    if bare:
        warnings.append(f"{entity} attributes without nomalizeData/rawData envelope, used as both: {', '.join(bare)}")
    return values, raws


def _check_type(entity: str, name: str, value: Any, warnings: list[str]) -> None:
    if value is None:
        return
    where = f"{entity}.{name}"
    if name.startswith("cf_number_") and (isinstance(value, bool) or not isinstance(value, int | float)):
        warnings.append(f"{where} should be a number, got {type(value).__name__}")
    elif (name.startswith("cf_enum_") or name == "baseSourceInput") and not isinstance(value, list):
        warnings.append(f"{where} should be an array, got {type(value).__name__}")
    elif is_date_attribute(name) and parse_hana_date(value) is None:
        warnings.append(f"{where} is not a date Hana sends (ISO 8601 or dd-MM-yyyy)")


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds and `Z`, as Hana writes dates."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_from_microseconds(epoch_us: int) -> str:
    """`now_iso`'s format for a moment already read from the clock (so an id and a date agree)."""
    seconds, micros = divmod(epoch_us, 1_000_000)
    return f"{_iso_second(seconds)}.{micros // 1000:03d}Z"


@functools.lru_cache(maxsize=8)
def _iso_second(epoch_seconds: int) -> str:
    """The receiver stamps thousands of events a second: each second is formatted once."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


class UpdateValueError(ValueError):
    """A rendered value cannot be given the type Hana expects for its attribute."""


def hana_date(value: Any) -> str:
    """The date format of Hana attributes: `yyyy-MM-dd'T'HH:mm:ss.SSSZ` in UTC."""
    moment = parse_hana_date(value)
    if moment is None:
        raise UpdateValueError(f"{value!r} is not a date (ISO 8601 or dd-MM-yyyy)")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def type_update_value(attribute: str, value: Any) -> Any:
    """The value as Hana's update API expects it for this attribute (SPEC §6).

    `cf_number_*` numbers, `cf_enum_*` and `baseSourceInput` arrays, `cf_date_*` Hana dates;
    other attributes as rendered. None (clearing a value) passes through.
    """
    if value is None:
        return None
    if attribute.startswith("cf_number_"):
        if isinstance(value, bool):
            raise UpdateValueError(f"{attribute} needs a number, got {value!r}")
        if isinstance(value, int | float):
            return value
        text = str(value).strip()
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                raise UpdateValueError(f"{attribute} needs a number, got {value!r}") from None
    if attribute.startswith("cf_enum_") or attribute == "baseSourceInput":
        if isinstance(value, list):
            return value
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        raise UpdateValueError(f"{attribute} needs an array, got {value!r}")
    if attribute.startswith("cf_date_"):
        return hana_date(value)
    return value


def update_body(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of Hana's update API from a rendered `hana_update` action."""
    body: dict[str, Any] = {}
    for entity in ENTITIES:
        part = payload.get(entity)
        if part is None:
            continue
        if not isinstance(part, Mapping) or part.get("id") in (None, ""):
            raise UpdateValueError(f"{entity}.id is required and rendered empty")
        body[entity] = {name: type_update_value(name, value) for name, value in part.items()}
        body[entity]["id"] = str(body[entity]["id"])
    if not body:
        raise UpdateValueError("nothing to update: give lead or opportunity")
    return body
