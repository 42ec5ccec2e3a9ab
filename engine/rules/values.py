"""Coercions shared by operators, templates and tests: numbers, dates, relative times."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.durations import parse_duration
from engine.hana import parse_hana_date


class _Missing:
    """An absent field: behaves as null, but a trace can tell it apart from an explicit null."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<missing>"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


def is_absent(value: Any) -> bool:
    return value is None or value is MISSING


def as_number(value: Any) -> float | int | None:
    """A number for numbers and plain numeric text (`"1.0"`, `" 3 "`); None otherwise.

    Thousands separators are not guessed: `1.000.000` is Vietnamese for a million but
    English for nothing, so only plain numerals count.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str) and len(value) < 64:
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


_RELATIVE = re.compile(r"\s*(now)?\s*([+-])\s*(\S+)\s*|\s*now\s*")


class RelativeTime:
    """`now`, `-7d`, `+1h`, `now-2h`: resolved at evaluation time, not at load."""

    def __init__(self, offset_seconds: float, text: str) -> None:
        self.offset = timedelta(seconds=offset_seconds)
        self.text = text

    def resolve(self, now: datetime | None = None) -> datetime:
        return (now or datetime.now(UTC)) + self.offset

    def __repr__(self) -> str:
        return self.text


def parse_moment(operand: Any) -> datetime | RelativeTime:
    """An operand of before/after: a date Hana would send, or a time relative to now."""
    if isinstance(operand, str):
        match = _RELATIVE.fullmatch(operand)
        if match:
            if match.group(2) is None:
                return RelativeTime(0, operand)
            seconds = parse_duration(match.group(3))
            return RelativeTime(seconds if match.group(2) == "+" else -seconds, operand)
    moment = parse_hana_date(operand)
    if moment is None:
        raise ValueError(
            f"expected a date (2024-01-31, 2024-01-31T08:00:00Z, 31-01-2024) or a time relative "
            f"to now (now, -7d, +1h), got {operand!r}"
        )
    return moment


def resolve_moment(moment: datetime | RelativeTime) -> datetime:
    return moment.resolve() if isinstance(moment, RelativeTime) else moment
