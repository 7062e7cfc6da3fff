"""The `pictor` command: serve, worker, migrate, check-config."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import msgspec
import svcs

from adapters.postgres.migrations import MigrationError
from core.errors import DomainError
from entrypoints.generation_policy import load_prompt_policy
from entrypoints.http.shutdown import DRAIN_FILE_VARIABLE, die_with_parent
from entrypoints.plan_catalog import load_plan_catalog
from entrypoints.settings import (
    Settings,
    SettingsError,
    load_environment,
    mask_url_password,
    masked,
    settings_from_mapping,
)
from entrypoints.wiring import PendingMigrationsError, UnusableConfiguration

# Failures at start-up that come from configuration or the database's state, not from a bug.
STARTUP_ERRORS = (SettingsError, PendingMigrationsError, MigrationError, UnusableConfiguration, DomainError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.environ = load_environment()
        settings = settings_from_mapping(args.environ)
        args.plans = load_plan_catalog(settings)  # a broken PICTOR_PLANS_FILE stops every command
        load_prompt_policy(settings)  # so does an unreadable PICTOR_BLOCKED_TERMS_FILE
    except SettingsError as error:
        print(f"pictor: configuration error: {error}", file=sys.stderr)
        return 2
    from entrypoints.logging_setup import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        return int(args.handler(settings, args) or 0)
    except STARTUP_ERRORS as error:  # an operator's problem: say what, not where in our code
        detail = error.detail if isinstance(error, DomainError) else error
        print(f"pictor {args.command}: {detail}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pictor", description="Pictor: image generation as a service.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API (and, by default, the embedded services)")
    serve.add_argument("--host", help="bind address (PICTOR_HOST)")
    serve.add_argument("--port", type=int, help="port (PICTOR_PORT)")
    serve.add_argument("--workers", type=int, help="HTTP server processes (PICTOR_HTTP_WORKERS)")
    serve.add_argument(
        "--migrate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="apply pending migrations first (default: only for the embedded database)",
    )
    serve.set_defaults(handler=_serve)

    worker = commands.add_parser("worker", help="run a background job worker")
    worker.add_argument("--queues", help="comma-separated queues (default: all)")
    worker.add_argument("--concurrency", type=int, help="jobs at once per queue (PICTOR_WORKER_CONCURRENCY)")
    worker.set_defaults(handler=_worker)

    migrate = commands.add_parser("migrate", help="apply pending database migrations")
    migrate.add_argument("--list", action="store_true", help="only list the pending migrations")
    migrate.set_defaults(handler=_migrate)

    users = commands.add_parser("users", help="manage accounts")
    user_commands = users.add_subparsers(dest="users_command", required=True)
    create_admin = user_commands.add_parser(
        "create-admin", help="create an administrator (password asked for, or read from stdin)"
    )
    create_admin.add_argument("email")
    create_admin.add_argument("--display-name", default=None)
    create_admin.set_defaults(handler=_create_admin)
    set_plan = user_commands.add_parser(
        "set-plan", help="put a user on a plan at once, without a charge (audited)"
    )
    set_plan.add_argument("email")
    set_plan.add_argument("plan", help="a plan code of the catalog (GET /v1/plans)")
    set_plan.set_defaults(handler=_set_plan)

    from entrypoints.flags_cli import add_flags_commands

    add_flags_commands(commands)

    check = commands.add_parser("check-config", help="print the resolved configuration, secrets masked")
    check.set_defaults(handler=_check_config)

    from entrypoints.queue_cli import add_queue_commands
    from entrypoints.secrets_cli import add_secrets_commands

    add_queue_commands(commands)
    add_secrets_commands(commands)
    return parser


# --- check-config -------------------------------------------------------------------------------


def _check_config(settings: Settings, args: argparse.Namespace) -> int:
    shown = masked(settings)
    shown["resolved"] = {
        "public_base_url": settings.public_base_url,
        "database": mask_url_password(settings.database_url)
        if settings.database_url
        else f"embedded PostgreSQL in {settings.data_path / 'postgres'}",
        "cache": (settings.valkey_url and mask_url_password(settings.valkey_url)) or "in-process memory",
        "storage": mask_url_password(settings.resolved_storage_url),
        "queue": mask_url_password(settings.queue_url) if settings.queue_url else "SAQ on the database",
        "secrets_dir": str(settings.secrets_path),
        "embedded_worker": settings.runs_embedded_worker,
        "plans": {
            "source": settings.plans_file or "built-in",
            "version": args.plans.version,
            "default": args.plans.default.code,
            "codes": [plan.code for plan in args.plans],
        },
    }
    print(json.dumps(shown, indent=2, sort_keys=True))
    return 0


# --- migrate -----------------------------------------------------------------------------------


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.postgres.migrations import pending_migrations
    from entrypoints.wiring import database_url_for, prepare_database

    with database_url_for(settings) as url:
        if url.startswith("memory:"):
            print("memory:// needs no migrations")
            return 0
        pending = asyncio.run(pending_migrations(url))
        if not args.list:
            asyncio.run(prepare_database(settings, url, migrate=True))  # and the queue's tables
    verb = "pending" if args.list else "applied"
    print(f"{len(pending)} migration(s) {verb}" + "".join(f"\n  {m}" for m in pending))
    return 0


# --- users -------------------------------------------------------------------------------------


def _create_admin(settings: Settings, args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("pictor users create-admin: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    user = asyncio.run(_register_admin(settings, args, password))
    print(f"administrator {user.email} created (id {user.id})")
    return 0


async def _register_admin(settings: Settings, args: argparse.Namespace, password: str) -> Any:
    from core.accounts.context import Caller
    from core.accounts.users import Role
    from entrypoints.use_cases import registration_from
    from entrypoints.wiring import service_registry

    async with (
        service_registry(settings, environ=args.environ) as registry,
        svcs.Container(registry) as container,
    ):
        registration = await registration_from(container)
        return await registration.register(
            email=args.email,
            password=password,
            display_name=args.display_name,
            caller=Caller(correlation_id="cli:create-admin"),
            role=Role.ADMIN,
            email_verified=True,
        )


def _set_plan(settings: Settings, args: argparse.Namespace) -> int:
    details = asyncio.run(_set_plan_by_email(settings, args))
    subscription = details.subscription
    print(f"{args.email.strip()} is on the {subscription.plan} plan ({subscription.status.value})")
    return 0


async def _set_plan_by_email(settings: Settings, args: argparse.Namespace) -> Any:
    from core.accounts.context import Caller
    from entrypoints.use_cases import subscriptions_from
    from entrypoints.wiring import service_registry

    async with (
        service_registry(settings, environ=args.environ) as registry,
        svcs.Container(registry) as container,
    ):
        subscriptions = await subscriptions_from(container)
        return await subscriptions.set_plan_by_email(
            args.email, args.plan, Caller(correlation_id="cli:set-plan")
        )


# --- worker ------------------------------------------------------------------------------------


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from entrypoints.worker import run_worker, served_queues

    if args.concurrency:
        settings = msgspec.structs.replace(settings, worker_concurrency=args.concurrency)
    queues = [q.strip() for q in args.queues.split(",")] if args.queues else None
    served_queues(queues)  # fail before anything starts
    _run_with_uvloop(run_worker(settings, queues=queues))
    return 0


def _run_with_uvloop(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]


# --- serve -------------------------------------------------------------------------------------


class _Stop(Exception):
    """SIGTERM or SIGINT arrived while `pictor serve` was still starting."""


def _stop_while_starting(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from entrypoints.wiring import database_url_for

    # Until the server runs, a stop signal unwinds normally, so the embedded database stops too.
    signal.signal(signal.SIGTERM, _stop_while_starting)
    signal.signal(signal.SIGINT, _stop_while_starting)
    overrides = {
        k: v for k, v in {"host": args.host, "port": args.port, "http_workers": args.workers}.items() if v
    }
    try:
        settings = msgspec.structs.replace(settings, **overrides)
        settings.data_path.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with database_url_for(settings) as database_url:  # the embedded PostgreSQL runs for the block
            return _serve_with_database(settings, args, database_url, started)
    except _Stop as stop:
        print(f"pictor: stopped by {stop} while starting", file=sys.stderr)
        return 1


def _serve_with_database(
    settings: Settings, args: argparse.Namespace, database_url: str, started: float
) -> int:
    from entrypoints.wiring import ensure_generated_secrets, prepare_database

    embedded = settings.uses_embedded_database
    migrate = args.migrate or (args.migrate is None and embedded)
    asyncio.run(prepare_database(settings, database_url, migrate=migrate))  # or say what is pending
    created = asyncio.run(ensure_generated_secrets(settings, args.environ))

    runtime = Path(tempfile.mkdtemp(prefix="pictor-serve-"))
    drain_file = runtime / "draining"
    env = dict(args.environ)
    env.update(
        {
            "PICTOR_DATABASE_URL": database_url,
            "PICTOR_HOST": settings.host,
            "PICTOR_PORT": str(settings.port),
            "PICTOR_HTTP_WORKERS": str(settings.http_workers),
            "PICTOR_EMBEDDED_WORKER": str(settings.runs_embedded_worker).lower(),
            DRAIN_FILE_VARIABLE: str(drain_file),
        }
    )
    if settings.http_workers > 1:
        # Several processes write metrics: prometheus-client's multiprocess mode aggregates them.
        metrics_dir = runtime / "metrics"
        metrics_dir.mkdir()
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    if env.get("PROMETHEUS_MULTIPROC_DIR"):
        from entrypoints.system_metrics import prepare_multiprocess_dir

        prepare_multiprocess_dir(Path(env["PROMETHEUS_MULTIPROC_DIR"]))  # no counters of an earlier run
    _print_banner(settings, embedded=embedded, created_secrets=created)

    command = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--factory",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--workers",
        str(settings.http_workers),
        "--loop",
        "uvloop" if _has_uvloop() else "asyncio",
        "--log-level",
        "warning" if settings.log_level in ("info", "debug") else settings.log_level,
        "--workers-kill-timeout",
        str(max(1, int(settings.shutdown_timeout_seconds))),
        "--no-ws",
        "entrypoints.http.asgi:app_from_env",
    ]
    # Its own session: the whole server (main and worker processes) can be signalled as a group.
    server = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        command, env=env, start_new_session=True, preexec_fn=die_with_parent
    )
    try:
        return _supervise(server, settings, drain_file, started)
    finally:
        _kill_group(server)
        shutil.rmtree(runtime, ignore_errors=True)


def _supervise(server: subprocess.Popen[bytes], settings: Settings, drain_file: Path, started: float) -> int:
    """Run until the server exits or a stop signal arrives; then drain and stop it gracefully.

    Draining: readiness fails at once (the drain file), load balancers get
    `shutdown_drain_seconds` to notice, then the server stops accepting, finishes in-flight
    requests (up to `shutdown_timeout_seconds`) and exits. A second signal skips the wait.
    """
    stop_requested: list[str] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop_requested.append(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    announced = False
    while server.poll() is None and not stop_requested:
        if not announced and _answers(settings):
            print(f"Pictor is ready on {settings.public_base_url} after {time.monotonic() - started:.1f} s")
            announced = True
        time.sleep(0.1)
    if server.poll() is not None:
        return server.returncode or 1  # the server died on its own

    drain_file.touch()
    deadline = time.monotonic() + settings.shutdown_drain_seconds
    while time.monotonic() < deadline and len(stop_requested) < 2 and server.poll() is None:
        time.sleep(0.05)
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)  # granian stops accepting and finishes in-flight requests
    try:
        return server.wait(timeout=settings.shutdown_timeout_seconds + 5)
    except subprocess.TimeoutExpired:
        print("pictor: the server did not stop in time; killing it", file=sys.stderr)
        return 1


def _answers(settings: Settings) -> bool:
    import urllib.request

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = f"http://{host}:{settings.port}/health/live"
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _kill_group(server: subprocess.Popen[bytes]) -> None:
    """Nothing of the server may outlive `pictor serve`: not its main process, not a worker."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=5)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _print_banner(settings: Settings, *, embedded: bool, created_secrets: list[str]) -> None:
    base = settings.public_base_url
    lines = [
        f"Pictor {_version()} is starting on {base} (docs: {base}/docs)",
        f"  data directory : {settings.data_path}",
        "  database       : "
        + (f"embedded PostgreSQL in {settings.data_path / 'postgres'}" if embedded else "configured"),
        f"  storage        : {mask_url_password(settings.resolved_storage_url)}",
        f"  queue          : {'SAQ on the database' if not settings.queue_url else 'configured'}"
        + (" (worker in this process)" if settings.runs_embedded_worker else ""),
        f"  secrets        : {settings.secrets_path}"
        + (f" (generated: {', '.join(created_secrets)})" if created_secrets else ""),
        f"  metrics        : {base}/metrics, bearer token "
        + (
            "from PICTOR_METRICS_TOKEN"
            if settings.metrics_token
            else f"in {settings.secrets_path / 'metrics_token'}"
        ),
        "  first admin    : uv run pictor users create-admin you@example.com",
        "  stop with Ctrl-C; readiness fails at once, in-flight requests finish",
    ]
    print("\n".join(lines), flush=True)


def _version() -> str:
    from entrypoints.http.app import VERSION

    return VERSION


if __name__ == "__main__":
    raise SystemExit(main())
