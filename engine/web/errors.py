"""Every error answer is `{"error": "<clear sentence>"}`, whatever went wrong (a page, on the console)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


def console_refusal(code: int) -> Response:
    """A console page's error as a page in the reader's language, not the API's JSON."""
    from engine.web.console.pages import refusal

    return refusal(code)


def error(status: int, message: str, **extra: object) -> tuple[Response, int]:
    return jsonify({"error": message, **extra}), status


def install(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if request.path.startswith("/console/") and exc.code in (404, 405):
            return console_refusal(exc.code)
        messages = {
            404: "no such endpoint; webhooks are POST /hooks/<event_type>",
            405: f"method not allowed here; use {', '.join(sorted(exc.valid_methods or []))}"
            if getattr(exc, "valid_methods", None)
            else "method not allowed here",
            413: "the body is larger than 1 MiB",
        }
        return error(exc.code or 500, messages.get(exc.code or 500, exc.description or exc.name))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        log.exception("unexpected error while answering a request")
        if request.path.startswith("/console/"):
            return console_refusal(500)
        return error(500, "internal error; the administrator can find it in the logs")
