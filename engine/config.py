"""The settings file, `${ENV}` interpolation and generated tokens → one frozen `Settings`.

Every key is optional: with no file at all, `hana-rules serve` works. Errors
name the file and the key, and say what to do; they never show a value that
came from the environment.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets as token_source
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from engine.clock import zone
from engine.config_schema import join_key, validate
from engine.durations import parse_duration
from engine.envsubst import UnsetVariableError, substitute
from engine.errors import ConfigError

CONFIG_FILE_NAME = "hana-rules.yaml"
CONFIG_ENV = "HANA_RULES_CONFIG"
SECRETS_FILE_NAME = "secrets.json"
DEFAULT_APPLICATION_NAME = "default"
#: An RQ job runs at most this long (the work horse is killed past it), so a
#: job that delivers an action must be done well before.
JOB_TIMEOUT = 30.0
#: The longest `outbound.timeout` allowed: one attempt plus the Redis writes that
#: record it must fit in one job, and 5 s leaves room for those writes even on a
#: slow Redis. A longer attempt would be killed with its outcome unrecorded.
MAX_OUTBOUND_TIMEOUT = JOB_TIMEOUT - 5

@dataclass(frozen=True)
class Application:
    """One Hana application (one business) served by this installation."""

    id: str | None  # None: the default application, which accepts any application.id
    name: str
    webhook_token: str
    hana_update_url: str | None = None
    access_token: str | None = None


@dataclass(frozen=True)
class Outbound:
    allow_hosts: tuple[str, ...] = ("hooks.slack.com", "api.telegram.org")
    timeout: float = 10.0
    telegram_api: str = "https://api.telegram.org"


@dataclass(frozen=True)
class Smtp:
    host: str = "localhost"
    port: int = 587
    username: str | None = None
    password: str | None = None
    sender: str | None = None
    starttls: bool = True


@dataclass(frozen=True)
class Delivery:
    max_attempts: int = 8
    backoff: float = 10.0
    max_backoff: float = 3600.0


@dataclass(frozen=True)
class RedisSentinel:
    """Redis with replicas and Sentinel: ask the sentinels which server is the master, follow failovers."""

    master: str
    nodes: tuple[tuple[str, int], ...]
    password: str | None = None
    sentinel_password: str | None = None
    tls: bool = False


@dataclass(frozen=True)
class LoopGuard:
    limit: int = 10
    per: float = 60.0
    hold: float = 600.0


@dataclass(frozen=True)
class Console:
    """SPEC §10: the key that signs console sessions (None: generated into data_dir), and
    `read_only` for rule sets kept in git."""

    secret_key: str | None = None
    read_only: bool = False
    #: Reverse proxies in front (each adds X-Forwarded-For/-Proto): the client's address, which
    #: limits failed logins, and HTTPS, which makes the cookie Secure, are read from them.
    trusted_proxies: int = 0
    #: The clock the console's pages show times on (an IANA name): Hana's users read Vietnam's time.
    timezone: str = "Asia/Ho_Chi_Minh"


@dataclass(frozen=True)
class Settings:
    """Everything configurable, resolved once; never mutated while serving."""

    config_file: Path | None
    rules_dir: Path
    data_dir: Path
    redis_url: str | None = None
    redis_sentinel: RedisSentinel | None = None
    #: The embedded Redis's appendfsync: `always` (an event is on disk before Hana's 200) or `everysec`.
    redis_fsync: str = "always"
    admin_token: str | None = None
    applications: tuple[Application, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    web_workers: int = 2
    #: Threads per web process. Two measured best on 2 cores: more threads mostly wait for
    #: the GIL, and the receiver's Redis wait is short (README, Performance).
    web_threads: int = 2
    log_format: str = "text"
    retention: float = 7 * 86400.0
    max_events: int = 100_000
    outbound: Outbound = field(default_factory=Outbound)
    smtp: Smtp | None = None
    delivery: Delivery = field(default_factory=Delivery)
    loop_guard: LoopGuard = field(default_factory=LoopGuard)
    console: Console = field(default_factory=Console)
    secrets: frozenset[str] = frozenset()

    @property
    def redis_target(self) -> str | RedisSentinel | None:
        """Where Redis is: Sentinel when configured, else `redis_url` (None: `serve` embeds one)."""
        return self.redis_sentinel or self.redis_url

    @property
    def uses_default_application(self) -> bool:
        return len(self.applications) == 1 and self.applications[0].id is None

    def application(self, application_id: str | None) -> Application | None:
        for app in self.applications:
            if app.id == application_id:
                return app
        return None


def find_config_file(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """`--config`, else HANA_RULES_CONFIG, else ./hana-rules.yaml when it exists."""
    if explicit:
        return Path(explicit)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    default = Path.cwd() / CONFIG_FILE_NAME
    return default if default.exists() else None


def load_settings(config_file: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read, interpolate, validate and resolve the settings file (tokens not yet generated)."""
    env = os.environ if env is None else env
    path = find_config_file(config_file, env)
    raw: Any = {}
    label = str(path) if path else CONFIG_FILE_NAME
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the settings file ({exc.strerror})", file=label) from exc
        try:
            raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{label}:{mark.line + 1}:{mark.column + 1}" if mark else label
            raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=where) from exc
        if not isinstance(raw, dict):
            raise ConfigError("the settings file must be a mapping of keys to values", file=label)
    found_secrets: set[str] = set()
    raw = _interpolate(raw, env, found_secrets, label, "")
    validate(raw, label)
    base = path.resolve().parent if path else Path.cwd()
    return _resolve(raw, base=base, path=path, env=env, label=label, found_secrets=found_secrets)


def _interpolate(value: Any, env: Mapping[str, str], found: set[str], label: str, key: str) -> Any:
    if isinstance(value, str):
        try:
            return substitute(value, env, found)
        except UnsetVariableError as exc:
            raise ConfigError(str(exc), file=label, key=key or None) from None
    if isinstance(value, dict):
        return {k: _interpolate(v, env, found, label, join_key(key, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, found, label, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


def _resolve(
    raw: dict[str, Any],
    *,
    base: Path,
    path: Path | None,
    env: Mapping[str, str],
    label: str,
    found_secrets: set[str],
) -> Settings:
    def number(key: str, value: Any, kind: type = int, minimum: int = 0) -> Any:
        try:
            result = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"expected a whole number, got {value!r}", file=label, key=key) from None
        if result < minimum:
            raise ConfigError(f"must be at least {minimum}", file=label, key=key)
        return result

    def duration(key: str, value: Any) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ConfigError(str(exc), file=label, key=key) from None

    def attempt_timeout(key: str, value: Any) -> float:
        seconds = duration(key, value)
        if not seconds > 0:
            raise ConfigError("must be more than 0s: each attempt needs time to connect and be answered; "
                              "set a few seconds, such as 10s", file=label, key=key)  # fmt: skip
        if seconds > MAX_OUTBOUND_TIMEOUT:
            raise ConfigError(
                f"must be at most {MAX_OUTBOUND_TIMEOUT:g}s, so an attempt ends well inside the {JOB_TIMEOUT:g}s job "
                f"timeout; set {MAX_OUTBOUND_TIMEOUT:g}s or less (a slow partner is retried on the delivery schedule)",
                file=label, key=key,
            )  # fmt: skip
        return seconds

    def directory(value: str) -> Path:
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else base / candidate

    outbound_raw = raw.get("outbound") or {}
    delivery_raw = raw.get("delivery") or {}
    loop_raw = raw.get("loop_guard") or {}
    console_raw = raw.get("console") or {}
    if console_raw.get("secret_key"):
        found_secrets.add(console_raw["secret_key"])
    smtp_raw = raw.get("smtp")
    defaults = Delivery()
    guard_defaults = LoopGuard()
    out_defaults = Outbound()
    return Settings(
        config_file=path,
        rules_dir=directory(raw.get("rules_dir") or "rules"),
        data_dir=directory(raw.get("data_dir") or "var"),
        redis_url=(raw.get("redis_url") or env.get("REDIS_URL") or None),
        redis_fsync=raw.get("redis_fsync", "always"),
        redis_sentinel=_sentinel(raw.get("redis_sentinel"), label, found_secrets),
        admin_token=raw.get("admin_token") or _secret(env, "HANA_RULES_ADMIN_TOKEN", found_secrets),
        applications=_applications(raw.get("applications") or [], env, label, found_secrets),
        host=raw.get("host") or "127.0.0.1",
        port=number("port", raw.get("port", 8080), minimum=1),
        workers=number("workers", raw.get("workers", 2), minimum=0),
        web_workers=number("web_workers", raw.get("web_workers", 2), minimum=1),
        web_threads=number("web_threads", raw.get("web_threads", 2), minimum=1),
        log_format=raw.get("log_format", "text"),
        retention=duration("retention", raw.get("retention", "7d")),
        max_events=number("max_events", raw.get("max_events", 100_000), minimum=1),
        outbound=Outbound(
            allow_hosts=tuple(h.lower() for h in outbound_raw.get("allow_hosts", out_defaults.allow_hosts)),
            timeout=attempt_timeout("outbound.timeout", outbound_raw.get("timeout", out_defaults.timeout)),
            telegram_api=outbound_raw.get("telegram_api", out_defaults.telegram_api).rstrip("/"),
        ),
        smtp=None
        if smtp_raw is None
        else Smtp(
            host=smtp_raw.get("host", "localhost"),
            port=number("smtp.port", smtp_raw.get("port", 587), minimum=1),
            username=smtp_raw.get("username"),
            password=smtp_raw.get("password"),
            sender=smtp_raw.get("from"),
            starttls=smtp_raw.get("starttls", True),
        ),
        delivery=Delivery(
            max_attempts=number(
                "delivery.max_attempts", delivery_raw.get("max_attempts", defaults.max_attempts), minimum=1
            ),
            backoff=duration("delivery.backoff", delivery_raw.get("backoff", defaults.backoff)),
            max_backoff=duration("delivery.max_backoff", delivery_raw.get("max_backoff", defaults.max_backoff)),
        ),
        loop_guard=LoopGuard(
            limit=number("loop_guard.limit", loop_raw.get("limit", guard_defaults.limit), minimum=1),
            per=duration("loop_guard.per", loop_raw.get("per", guard_defaults.per)),
            hold=duration("loop_guard.hold", loop_raw.get("hold", guard_defaults.hold)),
        ),
        console=Console(
            secret_key=console_raw.get("secret_key") or _secret(env, "HANA_RULES_SECRET_KEY", found_secrets),
            read_only=bool(console_raw.get("read_only", False)),
            trusted_proxies=int(console_raw.get("trusted_proxies", 0)),
            timezone=_timezone(console_raw.get("timezone", Console.timezone)),
        ),
        secrets=frozenset(found_secrets),
    )


def _sentinel(raw: dict[str, Any] | None, label: str, found_secrets: set[str]) -> RedisSentinel | None:
    if raw is None:
        return None
    nodes = []
    for index, node in enumerate(raw["nodes"]):
        host, _, port = node.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"expected host:port, such as sentinel-1:26379, got {node!r}", file=label,
                              key=f"redis_sentinel.nodes[{index}]")  # fmt: skip
        nodes.append((host.strip("[]"), int(port)))
    found_secrets.update(v for v in (raw.get("password"), raw.get("sentinel_password")) if v)
    return RedisSentinel(master=raw["master"], nodes=tuple(nodes), password=raw.get("password") or None,
                         sentinel_password=raw.get("sentinel_password") or None, tls=bool(raw.get("tls")))  # fmt: skip


def _applications(
    items: list[dict[str, Any]], env: Mapping[str, str], label: str, found_secrets: set[str]
) -> tuple[Application, ...]:
    apps: list[Application] = []
    seen_ids: set[str] = set()
    seen_tokens: set[str] = set()
    for index, item in enumerate(items):
        key = f"applications[{index}]"
        if item["id"] in seen_ids:
            raise ConfigError(f"application id {item['id']!r} is listed twice", file=label, key=f"{key}.id")
        if len(item["webhook_token"]) < 16:
            raise ConfigError(
                "webhook_token must be at least 16 characters (use `python -c "
                '"import secrets; print(secrets.token_urlsafe(24))"`)',
                file=label,
                key=f"{key}.webhook_token",
            )
        if item["webhook_token"] in seen_tokens:
            raise ConfigError("two applications share one webhook_token", file=label, key=f"{key}.webhook_token")
        seen_ids.add(item["id"])
        seen_tokens.add(item["webhook_token"])
        found_secrets.update(v for v in (item.get("webhook_token"), item.get("access_token")) if v)
        apps.append(
            Application(
                id=item["id"],
                name=item.get("name") or item["id"],
                webhook_token=item["webhook_token"],
                hana_update_url=item.get("hana_update_url") or None,
                access_token=item.get("access_token") or None,
            )
        )
    if not apps:
        # The default application: its webhook token is generated by `with_generated_tokens`.
        access = _secret(env, "HANA_ACCESS_TOKEN", found_secrets)
        apps.append(
            Application(
                id=None,
                name=DEFAULT_APPLICATION_NAME,
                webhook_token=_secret(env, "HANA_WEBHOOK_TOKEN", found_secrets) or "",
                hana_update_url=env.get("HANA_UPDATE_URL") or None,
                access_token=access,
            )
        )
    return tuple(apps)


def _secret(env: Mapping[str, str], name: str, found_secrets: set[str]) -> str | None:
    value = env.get(name) or None
    if value:
        found_secrets.add(value)
    return value


def with_generated_tokens(settings: Settings) -> Settings:
    """Fill the admin token and the default application's webhook token.

    They are generated once and kept in `data_dir/secrets.json` (mode 0600) so a
    restart keeps the URLs pasted into Hana valid.
    """
    need_admin = not settings.admin_token
    need_webhook = settings.uses_default_application and not settings.applications[0].webhook_token
    if not (need_admin or need_webhook):
        return settings
    stored = _read_or_create_secrets(settings.data_dir)
    admin = settings.admin_token or stored["admin_token"]
    apps = settings.applications
    if need_webhook:
        apps = (replace(apps[0], webhook_token=stored["webhook_token"]),)
    generated = {admin, *(a.webhook_token for a in apps)}
    return replace(settings, admin_token=admin, applications=apps, secrets=settings.secrets | generated)


def _read_or_create_secrets(data_dir: Path) -> dict[str, str]:
    return generated_secrets(data_dir, ("admin_token", 32), ("webhook_token", 24))


def generated_secrets(data_dir: Path, *wanted: tuple[str, int]) -> dict[str, str]:
    """`data_dir/secrets.json` (mode 0600), with each wanted (name, bytes) secret made once.

    Under a file lock, so processes starting at once agree; other names in the file are kept
    (the tokens and the console's session key live side by side).
    """
    path = data_dir / SECRETS_FILE_NAME
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / ".secrets.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            stored = {}
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read generated tokens ({exc}); delete the file to regenerate", file=str(path)
            ) from exc
        if not isinstance(stored, dict):
            raise ConfigError("generated tokens are not a JSON object; delete the file to regenerate", file=str(path))
        missing = [(name, size) for name, size in wanted if not isinstance(stored.get(name), str) or not stored[name]]
        if missing:
            stored.update({name: token_source.token_urlsafe(size) for name, size in missing})
            temporary = path.with_suffix(".tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(stored, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        return stored


def _timezone(name: str) -> str:
    """`console.timezone` if this machine knows it (Vietnam's is known without a time zone database)."""
    try:
        zone(name)
    except ValueError as exc:
        raise ConfigError(f"console.timezone: {exc}") from None
    return name
