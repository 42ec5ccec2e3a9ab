"""When to try an action again: exponential backoff with full jitter, Retry-After honoured."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from engine.config import Delivery

#: A server's Retry-After is honoured even beyond max_backoff, up to this.
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
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped at an hour."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def next_delay(attempt: int, delivery: Delivery, retry_after: float | None) -> float:
    """The server's wish when it gave one, else our backoff."""
    return retry_after if retry_after is not None else backoff_delay(attempt, delivery)
