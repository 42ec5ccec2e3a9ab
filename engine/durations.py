"""Durations as people write them in config and rule files: `30s`, `10m`, `2h`, `7d` or seconds."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")


def parse_duration(value: object) -> float:
    """Seconds in `value`; compound forms such as `1h30m` are accepted.

    Raises ValueError with a sentence a user can act on.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, 10m, 2h or 7d, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            return float(text)
        if _WHOLE.fullmatch(text):
            return sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    raise ValueError(f"expected a duration such as 30s, 10m, 2h or 7d, got {value!r}")
