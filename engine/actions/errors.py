"""Why an action failed, and what to do about it: retry, park, or give up at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.errors import HanaRulesError


class ActionError(HanaRulesError):
    """An action that did not succeed.

    `retryable` decides retry or dead letter; `park` holds every hana_update of the
    application (a revoked token must not burn every retry); `retry_after` is the
    server's own wish, which may lengthen our backoff (up to an hour), never shorten it.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        park: bool = False,
        retry_after: float | None = None,
        response: Response | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.park = park
        self.retry_after = retry_after
        self.response = response


@dataclass
class Response:
    status_code: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    duration_ms: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"status_code": self.status_code, "body": self.body[:2000], "headers": self.headers,
                "duration_ms": round(self.duration_ms, 1)}  # fmt: skip
