"""One function per action kind: a rendered payload in, a delivery out (or an ActionError).

Every HTTP kind goes through the guarded OutboundClient; `email` goes to the
configured SMTP server, the whole exchange (connect, EHLO, STARTTLS, login,
send) bounded by the same total deadline as an HTTP attempt; `log` writes to
the log and the event's trace.
"""

from __future__ import annotations

import functools
import logging
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from engine.actions.deadline import bounded, open_connection, within_deadline
from engine.actions.errors import ActionError, Response
from engine.actions.outbound import OutboundClient
from engine.config import Application, Settings
from engine.hana import UpdateValueError, update_body

log = logging.getLogger(__name__)


@dataclass
class ActionEnvironment:
    settings: Settings
    client: OutboundClient
    application: Application | None
    event_id: str = ""
    rule_id: str = ""


Executor = Callable[[Any, ActionEnvironment], Response | None]
EXECUTORS: dict[str, Executor] = {}


def executor(kind: str) -> Callable[[Executor], Executor]:
    def register(function: Executor) -> Executor:
        EXECUTORS[kind] = function
        return function

    return register


def _mapping(payload: Any, kind: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ActionError(f"{kind}: the rendered action is not a mapping", retryable=False)
    return payload


@executor("hana_update")
def hana_update(payload: Any, env: ActionEnvironment) -> Response | None:
    app = env.application
    if app is None or not app.hana_update_url or not app.access_token:
        name = app.name if app else "this event's application"
        raise ActionError(f"no hana_update_url/access_token configured for {name}", retryable=False)
    try:
        body = update_body(_mapping(payload, "hana_update"))
    except UpdateValueError as exc:
        raise ActionError(f"hana_update: {exc}", retryable=False) from None
    headers = {"Authorization": f"Bearer {app.access_token}", "Content-Type": "application/json"}
    try:
        return env.client.send("POST", app.hana_update_url, headers=headers, json=body)
    except ActionError as exc:
        status = exc.response.status_code if exc.response else None
        if status in (401, 403):
            raise ActionError(
                f"Hana refused the access token of {app.name} ({status}); its hana_update actions are parked "
                "until an admin fixes the token and retries them", retryable=False, park=True, response=exc.response,
            ) from None  # fmt: skip
        raise


@executor("webhook")
def webhook(payload: Any, env: ActionEnvironment) -> Response | None:
    spec = _mapping(payload, "webhook")
    method = str(spec.get("method", "POST")).upper()
    headers = {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}
    if "json" in spec:
        return env.client.send(method, str(spec["url"]), headers=headers, json=spec["json"])
    body = spec.get("body")
    return env.client.send(method, str(spec["url"]), headers=headers, data=None if body is None else str(body))


@executor("slack")
def slack(payload: Any, env: ActionEnvironment) -> Response | None:
    spec = _mapping(payload, "slack")
    message: dict[str, Any] = {"text": str(spec.get("text", ""))}
    if spec.get("blocks"):
        message["blocks"] = spec["blocks"]
    return env.client.send("POST", str(spec["webhook_url"]), json=message)


@executor("telegram")
def telegram(payload: Any, env: ActionEnvironment) -> Response | None:
    spec = _mapping(payload, "telegram")
    message: dict[str, Any] = {"chat_id": spec["chat_id"], "text": str(spec.get("text", ""))}
    if spec.get("parse_mode"):
        message["parse_mode"] = spec["parse_mode"]
    url = f"{env.settings.outbound.telegram_api}/bot{spec['bot_token']}/sendMessage"
    return env.client.send("POST", url, json=message)


class _BoundedSMTP(smtplib.SMTP):
    """smtplib with DNS and connect bounded, and its socket watched from before the greeting."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return open_connection(host, port, timeout=timeout, source_address=self.source_address)


@functools.cache
def _ehlo_name() -> str:
    """The name smtplib would say in EHLO, looked up once per process, within the attempt's deadline.

    smtplib looks it up (a reverse DNS query) in its constructor, where nothing bounds it.
    """
    name = socket.getfqdn()
    return name if "." in name else f"[{socket.gethostbyname(socket.gethostname())}]"


@executor("email")
def email(payload: Any, env: ActionEnvironment) -> Response | None:
    spec = _mapping(payload, "email")
    smtp = env.settings.smtp
    if smtp is None:
        raise ActionError("email: no smtp settings configured", retryable=False)
    recipients = spec["to"] if isinstance(spec["to"], list) else [spec["to"]]
    message = EmailMessage()
    message["From"] = smtp.sender or smtp.username or "hana-rules@localhost"
    message["To"] = ", ".join(map(str, recipients))
    message["Subject"] = str(spec.get("subject", ""))
    message.set_content(str(spec.get("body", "")))
    timeout = env.settings.outbound.timeout
    with bounded(timeout) as attempt:
        try:
            server = _BoundedSMTP(local_hostname=within_deadline(_ehlo_name, "naming this machine"), timeout=timeout)
            try:
                code, greeting = server.connect(smtp.host, smtp.port)
                if code != 220:
                    raise smtplib.SMTPConnectError(code, greeting)
                server.ehlo()
                if smtp.starttls and server.has_extn("starttls"):
                    server.starttls(context=ssl.create_default_context())
                    server.ehlo()
                if smtp.username and smtp.password:
                    server.login(smtp.username, smtp.password)
                refused = server.send_message(message)
            finally:
                _quit(server)
        except smtplib.SMTPResponseException as exc:  # a real answer, even late: judged by its code
            raise ActionError(f"email: the SMTP server answered {exc.smtp_code}",
                              retryable=exc.smtp_code < 500) from None  # fmt: skip
        except smtplib.SMTPRecipientsRefused:
            raise ActionError("email: every recipient was refused", retryable=False) from None
        except (OSError, smtplib.SMTPException) as exc:
            if attempt.passed:
                raise ActionError(f"email: no complete exchange with the SMTP server within {timeout:g}s",
                                  retryable=True) from None  # fmt: skip
            raise ActionError(f"email: could not deliver ({exc})", retryable=True) from None
    if refused:
        log.warning("event %s rule %s: email refused for %s", env.event_id, env.rule_id, ", ".join(refused))
    return Response(status_code=250, body=f"sent to {len(recipients) - len(refused)} recipient(s)")


def _quit(server: smtplib.SMTP) -> None:
    """QUIT is a courtesy: whether the message was accepted was settled before it, so it never fails one."""
    try:
        server.quit()
    except (OSError, smtplib.SMTPException):
        server.close()


@executor("log")
def write_log(payload: Any, env: ActionEnvironment) -> Response | None:
    log.info("event %s rule %s: %s", env.event_id, env.rule_id, payload,
             extra={"event_id": env.event_id, "rule_id": env.rule_id})  # fmt: skip
    return Response(status_code=0, body=str(payload)[:2000])


def execute(kind: str, payload: Any, env: ActionEnvironment) -> Response | None:
    try:
        run = EXECUTORS[kind]
    except KeyError:
        raise ActionError(f"unknown action kind {kind!r}", retryable=False) from None
    return run(payload, env)
