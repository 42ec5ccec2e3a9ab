"""When to try an action again: exponential backoff with jitter, lengthened by a Retry-After.

Our backoff is the floor of every wait: a partner that answers `Retry-After: 0`
(or a date in the past, or garbage) must not turn the schedule into a burst of
attempts a few milliseconds apart. Retry-After only ever lengthens a wait, up
to an hour.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from engine.config import Delivery

#: A server's Retry-After lengthens the wait even beyond max_backoff, up to this.
MAX_RETRY_AFTER = 3600.0
RETRYABLE_STATUS = frozenset((408, 429)) | frozenset(range(500, 600))


def backoff_delay(attempt: int, delivery: Delivery, *, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    The ceiling doubles from `backoff` up to `max_backoff`; the delay is drawn between
    half the ceiling and the ceiling, so retries of many actions do not arrive together.
    """
    ceiling = min(delivery.max_backoff, delivery.backoff * 2 ** (attempt - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped at an hour.

    None when there is nothing usable: no header, garbage, NaN, infinity or a negative
    number. A date already past is 0 (the server meant "now"), which leaves our backoff.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = max((moment - (now or datetime.now(UTC))).total_seconds(), 0.0)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER)


def next_delay(attempt: int, delivery: Delivery, retry_after: float | None) -> float:
    """Our backoff, lengthened (never shortened) by the server's Retry-After, up to an hour."""
    floor = backoff_delay(attempt, delivery)
    if retry_after is None or not math.isfinite(retry_after):
        return floor
    return max(floor, min(retry_after, MAX_RETRY_AFTER))
