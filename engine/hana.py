"""Hana's wire format, in one place: event types, the attribute envelope, dates.

Everything else in hana-rules sees the context this module builds and never
the body Hana sent. Hana's bodies are loosely specified, so normalization is
best-effort: every surprise becomes a warning kept on the event, never an
exception.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
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


def is_array_attribute(name: str) -> bool:
    return name.startswith("cf_enum_") or name == "baseSourceInput"


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
    application_id: str | None = None,
) -> Normalized:
    """Turn a Hana body into the rule context of SPEC §5 (state fields are added later).

    `application_id`: the application of the token the event came with; it stands in for a
    missing `application.id` (SPEC §4), so rules limited to that application still see it.
    """
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
        app_id = application_id
        warnings.append("application.id is missing" + ("; the webhook token's application is used" if app_id else ""))

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
    elif is_array_attribute(name) and not isinstance(value, list):
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
    if is_array_attribute(attribute):
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


# Hana shows dates as the calendar day in Vietnam: `2020-09-13T17:00:00.000Z` is normalized to `14-09-2020`.
VIETNAM = timezone(timedelta(hours=7), "Asia/Ho_Chi_Minh")  # no daylight saving time
_MAX_DEPTH = 64  # deeper than any body the receiver accepts; beyond it values count as unequal


def same_written_value(attribute: str, written: Any, normalized: Any, raw: Any) -> bool:
    """Whether the value Hana sent back for `attribute` is the one we wrote, compared as Hana types it.

    Our own `hana_update` comes back as an `*.updated` event (SPEC §6 Loops), but never in the form
    we wrote: `"4"` returns as `4`, an array may be reordered, and a date we wrote as the instant
    `2026-03-09T17:00:00.000Z` returns normalized as `10-03-2026`, the day in Vietnam, with the
    instant in rawData. Echo detection needs these to count as the same value, and a real change by
    someone else not to: a date compares as an instant (as a Vietnamese calendar day when only a
    day is there, or when we wrote only a day), a `cf_number_*` as a number (never a bool), a
    `cf_enum_*` or `baseSourceInput` as a set (a comma-separated text as its parts), anything
    else as equal JSON values with text in Unicode NFC. `written` may be the rendered value or the
    typed one we sent. Any input, however odd, gives an answer rather than an exception.
    """
    seen = (normalized, raw)
    wrote = _canonical(written)
    if any(_canonical(value) == wrote for value in seen):
        return True
    if not isinstance(attribute, str):
        return False
    if is_date_attribute(attribute):
        return _same_date(written, normalized, raw)
    if attribute.startswith("cf_number_"):
        number = _number(attribute, written)
        return number is not None and any(_number(attribute, value) == number for value in seen)
    if is_array_attribute(attribute):
        members = _members(attribute, written)
        return members is not None and any(_members(attribute, value) == members for value in seen)
    return False


def _canonical(value: Any, depth: int = 0) -> Any:
    """A hashable form of a JSON value in which equal values (text in NFC, 4 and 4.0) are equal.

    Tags keep kinds apart, so `True` is not `1` and `"4"` is not `4`; anything that is not JSON
    (or nests too deep) equals only itself.
    """
    if depth > _MAX_DEPTH:
        return ("object", id(value))
    if value is None:
        return ("null",)
    if isinstance(value, str):
        return ("text", unicodedata.normalize("NFC", value))
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value) if not isinstance(value, float) or math.isfinite(value) else ("object", id(value))
    if isinstance(value, list | tuple):
        return ("list", tuple(_canonical(item, depth + 1) for item in value))
    if isinstance(value, dict):
        return ("map", frozenset((_canonical(k, depth + 1), _canonical(v, depth + 1)) for k, v in value.items()))
    return ("object", id(value))


def _number(attribute: str, value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = type_update_value(attribute, value)
    except UpdateValueError:
        return None
    if isinstance(number, float) and not math.isfinite(number):
        return None
    return number if isinstance(number, int | float) else None


def _members(attribute: str, value: Any) -> frozenset[Any] | None:
    """The set of an array value; None (nothing) is the empty set, a non-array has none."""
    if value is None:
        return frozenset()
    if not isinstance(value, list | str):
        return None
    items = type_update_value(attribute, value)  # a list as it is, a text split at its commas
    return frozenset(_canonical(item) for item in items)


def _same_date(written: Any, normalized: Any, raw: Any) -> bool:
    wrote = parse_hana_date(written)
    if wrote is None:
        return False
    day_only = _is_day(written)
    instants = [moment for value in (raw, normalized) if not _is_day(value) and (moment := parse_hana_date(value))]
    try:
        if instants:
            seen = instants[0]
            if day_only:  # we wrote a day: any instant on that day in Vietnam is it
                return seen.astimezone(VIETNAM).date() == wrote.date()
            return hana_date(seen) == hana_date(wrote)  # Hana keeps milliseconds
        days = [_day(value) for value in (normalized, raw) if _is_day(value)]
        return bool(days) and days[0] == (wrote.date() if day_only else wrote.astimezone(VIETNAM).date())
    except (OverflowError, UpdateValueError):  # an instant at the very edge of datetime's range
        return False


def _is_day(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 40 and _DMY.fullmatch(value.strip()) is not None


def _day(value: str) -> date | None:
    moment = parse_hana_date(value)
    return moment.date() if moment else None
