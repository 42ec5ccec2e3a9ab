"""Who may see the console, and the guards every page carries (SPEC §10, Access).

- A login form takes the admin token (compared in constant time) and sets Flask's signed
  session cookie: HttpOnly, SameSite=Strict, Secure when the request came over HTTPS, 12 h.
- The signing key is `console.secret_key` / `HANA_RULES_SECRET_KEY`, else one generated into
  `data_dir/secrets.json` under a file lock (every machine of one installation needs the same).
- Every POST carries the session's CSRF token; GETs change nothing.
- Failed logins are counted per client address in Redis (shared by every web process and
  machine): past `MAX_FAILED_LOGINS` in `LOGIN_WINDOW_SECONDS`, logins are refused for a while.
- Every console answer forbids frames, inline scripts and sniffing.
"""

from __future__ import annotations

import hmac
import logging
import secrets as token_source
from datetime import timedelta
from pathlib import Path

import redis
from flask import Flask, Request, Response, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from engine.config import Settings, generated_secrets
from engine.errors import ConfigError

log = logging.getLogger(__name__)

SESSION_LIFETIME = timedelta(hours=12)
MAX_FAILED_LOGINS = 10
LOGIN_WINDOW_SECONDS = 15 * 60
FAILED_LOGINS_PREFIX = "hr:console:failed-logins:"
CSRF_FIELD = "csrf_token"
SECRET_KEY_NAME = "console_secret_key"

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class ConsoleSessions(SecureCookieSessionInterface):
    """Flask's signed cookie, Secure exactly when the page was asked for over HTTPS, and only on the
    console: Hana's webhooks and the admin API never carry one, and opening a session costs ~40 µs of
    the receiver's hot path (building the signing serializer) for nothing."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure

    def open_session(self, app: Flask, incoming: Request) -> SecureCookieSession | None:
        if not incoming.path.startswith("/console/"):
            return None  # Flask then uses a null session, which no webhook or admin call touches
        return super().open_session(app, incoming)


def configure(app: Flask, settings: Settings) -> None:
    app.secret_key = settings.console.secret_key or _session_key(settings.data_dir)
    if settings.console.trusted_proxies:
        hops = settings.console.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.session_interface = ConsoleSessions()
    app.config.update(SESSION_COOKIE_NAME="hana_rules_console", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_PATH="/",
                      PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME)  # fmt: skip


def generated_secret_key(data_dir: Path) -> str:
    """The installation's session key, created once beside the generated tokens."""
    return generated_secrets(data_dir, (SECRET_KEY_NAME, 48))[SECRET_KEY_NAME]


def _session_key(data_dir: Path) -> str:
    """The generated key; when data_dir cannot hold it (a full or read-only disk), a key for this
    process only, loudly: the receiver must start whatever the console needs."""
    try:
        return generated_secret_key(data_dir)
    except (OSError, ConfigError) as exc:
        log.error("console: cannot keep a session key in %s (%s); logins last until this process restarts and "
                  "hold on this machine only. Set console.secret_key or HANA_RULES_SECRET_KEY.", data_dir, exc)
        return token_source.token_urlsafe(48)


def logged_in() -> bool:
    return bool(session.get("admin"))


def log_in() -> None:
    session.clear()
    session.permanent = True
    session["admin"] = True
    session[CSRF_FIELD] = token_source.token_urlsafe(32)


def csrf_token() -> str:
    """The session's CSRF token, made on first use (the login form needs one before any login)."""
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = token_source.token_urlsafe(32)
    return session[CSRF_FIELD]


def csrf_ok(incoming: Request) -> bool:
    expected = session.get(CSRF_FIELD)
    sent = incoming.form.get(CSRF_FIELD) or incoming.headers.get("X-CSRF-Token") or ""
    return bool(expected) and hmac.compare_digest(str(expected).encode(), sent.encode())


def token_ok(settings: Settings, sent: str) -> bool:
    return bool(settings.admin_token) and hmac.compare_digest(settings.admin_token.encode(), sent.encode())


def client_address(incoming: Request) -> str:
    return incoming.remote_addr or "unknown"


def too_many_failures(connection: redis.Redis, address: str) -> bool:
    try:
        return int(connection.get(FAILED_LOGINS_PREFIX + address) or 0) >= MAX_FAILED_LOGINS
    except redis.RedisError:
        return False  # the console without Redis still lets the admin in to see that Redis is gone


def count_failure(connection: redis.Redis, address: str) -> None:
    try:
        with connection.pipeline() as pipe:
            pipe.set(FAILED_LOGINS_PREFIX + address, 0, ex=LOGIN_WINDOW_SECONDS, nx=True)  # the window opens
            pipe.incr(FAILED_LOGINS_PREFIX + address)
            pipe.execute()
    except redis.RedisError:
        pass


def secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
