"""Every error answer is `{"error": "<clear sentence>"}`, whatever went wrong."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


def error(status: int, message: str, **extra: object) -> tuple[Response, int]:
    return jsonify({"error": message, **extra}), status


def install(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        messages = {
            404: "no such endpoint; webhooks are POST /hooks/<event_type>",
            405: f"method not allowed here; use {', '.join(sorted(exc.valid_methods or []))}"
            if getattr(exc, "valid_methods", None)
            else "method not allowed here",
            413: "the body is larger than 1 MiB",
        }
        return error(exc.code or 500, messages.get(exc.code or 500, exc.description or exc.name))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unexpected error while answering a request")
        return error(500, "internal error; the administrator can find it in the logs")
