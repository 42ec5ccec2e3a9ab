"""Times as the console's readers read them: on their own clock, named.

Times are stored and sent in UTC (ISO 8601, `Z`); pages show them on `console.timezone`.
Vietnam keeps UTC+7 all year (no daylight saving), so its zone needs no time zone database:
a machine without one (a slim container) still shows Vietnam's time.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: Zones known without a database: fixed offsets all year.
FIXED = {"Asia/Ho_Chi_Minh": timezone(timedelta(hours=7)), "Asia/Saigon": timezone(timedelta(hours=7)),
         "UTC": UTC, "Etc/UTC": UTC}  # fmt: skip


@functools.lru_cache(maxsize=16)
def zone(name: str) -> tzinfo:
    """The zone called `name`; ValueError saying what to write when this machine does not know it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        if name in FIXED:
            return FIXED[name]
        raise ValueError(f"{name!r} is not a time zone this machine knows; write one such as Asia/Ho_Chi_Minh "
                         "or UTC (pip install tzdata adds the others)") from None


def local_time(iso: str | None, name: str) -> str:
    """2026-12-02T01:55:39.830Z → "2026-12-02 08:55:39 (UTC+7)" on Vietnam's clock; the text as it is if not a time."""
    if not iso or len(iso) < 19 or iso[10] != "T":
        return iso or "—"
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    shown = moment.astimezone(zone(name))
    offset = shown.utcoffset() or timedelta()
    hours, rest = divmod(int(offset.total_seconds()), 3600)
    label = "UTC" if not offset else f"UTC{hours:+d}" + (f":{abs(rest) // 60:02d}" if rest else "")
    return f"{shown:%Y-%m-%d %H:%M:%S} ({label})"
