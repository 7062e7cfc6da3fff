"""Pictor's configuration: one Struct, read once from `PICTOR_*` variables (and an optional `.env`).

This module and `wiring.py` are the only readers of the environment. Every problem is reported
with the variable's name, so a typo in production fails at start-up with a message an operator
can act on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec

from core.webhooks.deliveries import parse_schedule
from entrypoints.http.shutdown import DRAIN_FILE_VARIABLE

PREFIX = "PICTOR_"

# Variables that share the prefix but configure tests and tooling, not the service.
_NOT_SETTINGS = frozenset(
    {
        "PICTOR_REQUIRE_SERVICES",
        "PICTOR_TEST_DATABASE_URL",
        "PICTOR_TEST_VALKEY_URL",
        "PICTOR_ENV_FILE",
        DRAIN_FILE_VARIABLE,
    }
)

_SCHEMES: dict[str, frozenset[str]] = {
    "database_url": frozenset({"postgresql", "postgres", "memory"}),
    "valkey_url": frozenset({"redis", "rediss", "valkey", "valkeys", "memory"}),
    "storage_url": frozenset({"s3", "gs", "az", "file", "memory"}),
    "queue_url": frozenset({"redis", "rediss", "valkey", "valkeys", "postgresql", "postgres", "memory"}),
    "smtp_url": frozenset({"smtp", "smtps", "memory", "console"}),
    "renderer_url": frozenset({"http", "https"}),
    "ops_webhook_url": frozenset({"http", "https"}),
}

SECRET_FIELDS = frozenset({"metrics_token", "s3_secret_access_key"})


class SettingsError(ValueError):
    """Configuration that cannot work; the message names the variable."""


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    # Where the API listens and how it is reached from outside.
    host: str = "127.0.0.1"
    port: int = 8000
    base_url: str | None = None  # public URL for signed links; default http://{host}:{port}
    http_workers: int = 1

    # State. Unset URLs mean the embedded defaults (DESIGN.md §2).
    data_dir: str = "./var"
    database_url: str | None = None
    valkey_url: str | None = None
    storage_url: str | None = None
    queue_url: str | None = None
    secrets_dir: str | None = None  # default: {data_dir}/secrets
    # How long a process caches what it read from the secrets directory; a rotated version signs
    # only after this (plus a margin), once every process has read it.
    secrets_cache_seconds: float = 5.0
    namespace: str = "pictor"  # prefixes Valkey keys and queue names: several instances can share one server

    # S3-compatible storage.
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_allow_http: bool = False

    # PostgreSQL pool (DESIGN.md §2).
    db_pool_min: int = 5
    db_pool_max: int = 20
    db_pool_acquire_timeout: float = 5.0
    db_pool_idle_timeout: float = 300.0
    db_statement_timeout_ms: int = 30_000
    db_slow_query_seconds: float = 1.0

    # Cache.
    cache_ttl_seconds: float = 30.0

    # Accounts.
    password_min_length: int = 12
    session_idle_timeout_seconds: int = 8 * 3600
    session_absolute_lifetime_seconds: int = 7 * 24 * 3600
    session_cookie_secure: bool | None = None  # default: when the base URL is https
    smtp_url: str | None = None  # smtp://user:pass@host:587?starttls=true, smtps://…; unset: console
    mail_from: str = "Pictor <no-reply@localhost>"
    app_url: str | None = None  # where links in emails point (the web app); default: base URL

    # Generations.
    renderer_url: str | None = None  # an OpenAI-compatible image server; unset: the built-in renderer
    renderer_model: str = "gpt-image-1"  # the model asked of that server
    renderer_timeout_seconds: float = 120.0  # one image request to that server
    render_workers: int = 1  # processes of the built-in renderer, per worker process
    render_steps: int = 8  # refinement steps per image (progress is reported after each)
    generation_wait_max_seconds: int = 60  # longest `Prefer: wait=N` (and the OpenAI endpoint's wait)
    blocked_terms_file: str | None = None  # prompts containing any of its terms are refused
    upload_max_bytes: int = 10 * 1024 * 1024
    upload_max_pixels: int = 4096 * 4096

    # Worker. None: run one inside `pictor serve` only when the queue is embedded or in memory.
    embedded_worker: bool | None = None
    worker_concurrency: int = 10
    # How soon a job whose worker died is noticed: it stops beating for `render_heartbeat_seconds`,
    # and a sweep (every `queue_sweep_interval_seconds`, by one worker at a time) hands it back.
    render_heartbeat_seconds: float = 20.0
    queue_sweep_interval_seconds: float = 15.0
    job_shutdown_grace_seconds: float = 20.0

    # Operations.
    metrics_token: str | None = None
    metrics_sample_interval_seconds: float = 15.0  # how often each process reads the queue figures
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int | None = None  # `pictor worker` serves its own /metrics here when set
    webhooks_allow_private: bool = False  # plain http, loopback and private targets (development, tests)
    # Seconds before each webhook attempt, the first included (Svix's schedule); ±10 % jitter applies.
    webhook_retry_schedule: str = "0,5,300,1800,7200,18000,36000,36000"
    # How often each worker looks for unpublished events and due webhook deliveries.
    outbox_poll_interval_seconds: float = 1.0
    # Error tracking and alerts: an alert when a failure rate is over its threshold in the window
    # on at least `alert_min_requests` requests (or jobs of a queue), at most once per cooldown.
    ops_webhook_url: str | None = None  # alerts are posted here, signed with the secret ops_webhook_secret
    alert_5xx_rate: float = 0.05  # share of HTTP responses with a 5xx status
    alert_job_failure_rate: float = 0.25  # share of a queue's job runs that raised
    alert_min_requests: int = 20
    alert_window_seconds: int = 300
    alert_cooldown_seconds: int = 900
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["json", "console"] = "json"
    plans_file: str | None = None
    shutdown_drain_seconds: float = 1.0  # readiness fails this long before the listener closes
    shutdown_timeout_seconds: float = 30.0  # in-flight requests get this long to finish

    def __post_init__(self) -> None:
        _check_settings(self)

    @property
    def webhook_schedule(self) -> tuple[float, ...]:
        return parse_schedule(self.webhook_retry_schedule)

    def __repr__(self) -> str:  # tracebacks and debuggers show settings; never their secrets
        shown = ", ".join(f"{k}={v!r}" for k, v in masked(self).items())
        return f"Settings({shown})"

    __str__ = __repr__

    @property
    def public_base_url(self) -> str:
        return (self.base_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def session_cookie_is_secure(self) -> bool:
        if self.session_cookie_secure is not None:
            return self.session_cookie_secure
        return self.public_base_url.startswith("https:")

    @property
    def public_app_url(self) -> str:
        return (self.app_url or self.public_base_url).rstrip("/")

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def secrets_path(self) -> Path:
        return (
            Path(self.secrets_dir).expanduser().resolve() if self.secrets_dir else self.data_path / "secrets"
        )

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or (self.data_path / "blobs").as_uri()

    @property
    def effective_queue_url(self) -> str | None:
        """The queue's URL; SAQ's PostgreSQL queue on the database when unset (None: embedded)."""
        return self.queue_url or self.database_url

    @property
    def runs_embedded_worker(self) -> bool:
        """By default only the embedded and in-memory set-ups run jobs inside `pictor serve`;
        production runs `pictor worker` processes."""
        if self.embedded_worker is not None:
            return self.embedded_worker
        queue = self.effective_queue_url
        return queue is None or queue.startswith("memory:")


def _check_settings(s: Settings) -> None:
    for field, schemes in _SCHEMES.items():
        url = getattr(s, field)
        if url is not None and urlsplit(url).scheme not in schemes:
            raise SettingsError(  # the scheme only: the rest of a URL may hold a password
                f"{PREFIX}{field.upper()}: scheme must be one of {', '.join(sorted(schemes))}, "
                f"got {urlsplit(url).scheme or 'none'!r}"
            )
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", s.namespace):
        raise SettingsError(
            f"{PREFIX}NAMESPACE: 1-32 characters of a-z, 0-9, _ and -, starting with a letter"
        )
    if not 0 < s.port < 65536:
        raise SettingsError(f"{PREFIX}PORT: must be between 1 and 65535, got {s.port}")
    if s.worker_metrics_port is not None and not 0 < s.worker_metrics_port < 65536:
        raise SettingsError(
            f"{PREFIX}WORKER_METRICS_PORT: must be between 1 and 65535, got {s.worker_metrics_port}"
        )
    if s.base_url is not None and urlsplit(s.base_url).scheme not in ("http", "https"):
        raise SettingsError(f"{PREFIX}BASE_URL: must be an http(s) URL, got {s.base_url!r}")
    if not 0 < s.secrets_cache_seconds <= 300:
        raise SettingsError(f"{PREFIX}SECRETS_CACHE_SECONDS: must be greater than 0 and at most 300")
    if not 1 <= s.db_pool_min <= s.db_pool_max:
        raise SettingsError(f"{PREFIX}DB_POOL_MIN/{PREFIX}DB_POOL_MAX: need 1 <= min <= max")
    if not 8 <= s.password_min_length <= 64:
        raise SettingsError(f"{PREFIX}PASSWORD_MIN_LENGTH: between 8 and 64 (NIST asks for at least 8)")
    if not 60 <= s.session_idle_timeout_seconds <= s.session_absolute_lifetime_seconds:
        raise SettingsError(
            f"{PREFIX}SESSION_IDLE_TIMEOUT_SECONDS: at least 60, "
            f"and at most {PREFIX}SESSION_ABSOLUTE_LIFETIME_SECONDS"
        )
    positive = (
        "renderer_timeout_seconds",
        "render_heartbeat_seconds",
        "queue_sweep_interval_seconds",
        "render_workers",
        "render_steps",
        "generation_wait_max_seconds",
        "upload_max_bytes",
        "upload_max_pixels",
        "http_workers",
        "db_pool_acquire_timeout",
        "db_statement_timeout_ms",
        "db_slow_query_seconds",
        "worker_concurrency",
        "outbox_poll_interval_seconds",
        "metrics_sample_interval_seconds",
    )
    for field in positive:
        if getattr(s, field) <= 0:
            raise SettingsError(f"{PREFIX}{field.upper()}: must be greater than 0")
    for field in ("shutdown_drain_seconds", "shutdown_timeout_seconds", "job_shutdown_grace_seconds"):
        if getattr(s, field) < 0:
            raise SettingsError(f"{PREFIX}{field.upper()}: cannot be negative")
    for field in ("alert_5xx_rate", "alert_job_failure_rate"):
        if not 0 <= getattr(s, field) < 1:
            raise SettingsError(f"{PREFIX}{field.upper()}: a rate at least 0 and below 1 (0.05 is 5 %)")
    if s.alert_min_requests < 1:
        raise SettingsError(f"{PREFIX}ALERT_MIN_REQUESTS: must be at least 1")
    if not 10 <= s.alert_window_seconds <= 86_400:
        raise SettingsError(f"{PREFIX}ALERT_WINDOW_SECONDS: between 10 and 86400")
    if s.alert_cooldown_seconds < 1:
        raise SettingsError(f"{PREFIX}ALERT_COOLDOWN_SECONDS: must be at least 1")
    try:
        parse_schedule(s.webhook_retry_schedule)
    except ValueError as exc:
        raise SettingsError(f"{PREFIX}WEBHOOK_RETRY_SCHEDULE: {exc}") from None
    if s.http_workers > 1:
        # In-memory state lives in one process; several would each hold their own.
        in_memory = {
            "DATABASE_URL": s.database_url,
            "VALKEY_URL": s.valkey_url or "memory://",
            "STORAGE_URL": s.storage_url,
            "QUEUE_URL": s.effective_queue_url,
        }
        for name, url in in_memory.items():
            if url is not None and url.startswith("memory:"):
                raise SettingsError(
                    f"{PREFIX}{name}: memory:// keeps state in one process; with {PREFIX}HTTP_WORKERS > 1 "
                    "use a shared service (PostgreSQL, Valkey, S3 or files)"
                )


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=value` lines; `#` comments, blank lines and optional quotes are understood."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep:
            raise SettingsError(f"{path}:{number}: expected KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load_environment(
    environ: Mapping[str, str] | None = None, *, env_file: Path | None = None
) -> dict[str, str]:
    """`environ` (default: the process environment) over an optional `.env` file.

    Real environment variables win over the file, so an operator can always override it.
    """
    environ = os.environ if environ is None else environ
    env_file = env_file or Path(environ.get("PICTOR_ENV_FILE", ".env"))
    merged: dict[str, str] = {}
    if env_file.is_file():
        merged.update(read_env_file(env_file))
    merged.update(environ)
    return merged


def load_settings(environ: Mapping[str, str] | None = None, *, env_file: Path | None = None) -> Settings:
    """Settings from the environment and `.env` (see `load_environment`)."""
    return settings_from_mapping(load_environment(environ, env_file=env_file))


def settings_from_mapping(variables: Mapping[str, str]) -> Settings:
    fields = set(Settings.__struct_fields__)
    raw: dict[str, Any] = {}
    for name, value in variables.items():
        if not name.startswith(PREFIX) or name in _NOT_SETTINGS or name.startswith("PICTOR_SECRET_"):
            continue
        field = name[len(PREFIX) :].lower()
        if field not in fields:
            raise SettingsError(f"{name}: unknown setting (see README's configuration table)")
        if value == "" and field in _optional_fields():
            continue  # an empty variable means "unset"
        raw[field] = value.lower() if field in ("log_level", "log_format") else value
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as error:
        raise SettingsError(_name_variable(str(error))) from None


def _optional_fields() -> set[str]:
    return {f.name for f in msgspec.structs.fields(Settings) if "None" in str(f.type) or f.default is None}


def _name_variable(message: str) -> str:
    """msgspec says `... - at `$.port``; operators think in variable names."""
    text, found, where = message.rpartition(" - at `$.")
    if not found:
        return message
    field = where.rstrip("`")
    return f"{PREFIX}{field.upper()}: {text}"


def masked(settings: Settings) -> dict[str, Any]:
    """The settings as a dict with every secret (and any password inside a URL) replaced."""
    shown: dict[str, Any] = msgspec.structs.asdict(settings)
    for field, value in shown.items():
        if value is None:
            continue
        if field in SECRET_FIELDS:
            shown[field] = "********"
        elif isinstance(value, str) and field.endswith("_url"):
            shown[field] = mask_url_password(value)
    return shown


_SECRET_QUERY_PARAMETERS = frozenset(
    {"password", "sslpassword", "secret", "token", "access_key", "secret_key"}
)


def mask_url_password(url: str) -> str:
    """The URL with the password in its user part and in its query (libpq's `?password=`) masked."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":********@", 1)
    query = "&".join(
        f"{name}=********" if name.lower() in _SECRET_QUERY_PARAMETERS else f"{name}{sep}{value}"
        for name, sep, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))
