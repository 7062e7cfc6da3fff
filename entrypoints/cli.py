"""The `pictor` command: serve, worker, migrate, check-config."""

from __future__ import annotations

import argparse
import asyncio
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

import msgspec

from entrypoints.settings import Settings, SettingsError, load_settings, mask_url_password, masked

DRAIN_FILE_VARIABLE = "PICTOR_DRAIN_FILE"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"pictor: configuration error: {error}", file=sys.stderr)
        return 2
    from entrypoints.logging_setup import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    return int(args.handler(settings, args) or 0)


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

    check = commands.add_parser("check-config", help="print the resolved configuration, secrets masked")
    check.set_defaults(handler=_check_config)
    return parser


# --- check-config -------------------------------------------------------------------------------


def _check_config(settings: Settings, _: argparse.Namespace) -> int:
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
    }
    print(json.dumps(shown, indent=2, sort_keys=True))
    return 0


# --- migrate -----------------------------------------------------------------------------------


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from entrypoints.wiring import database_url_for

    with database_url_for(settings) as url:
        if url.startswith("memory:"):
            print("memory:// needs no migrations")
            return 0
        applied_or_pending = asyncio.run(_run_migrations(url, dry_run=args.list))
    verb = "pending" if args.list else "applied"
    print(f"{len(applied_or_pending)} migration(s) {verb}" + "".join(f"\n  {m}" for m in applied_or_pending))
    return 0


async def _run_migrations(url: str, *, dry_run: bool) -> list[str]:
    import psycopg

    from adapters.postgres.migrations import apply_migrations, pending_migrations

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await (pending_migrations(conn) if dry_run else apply_migrations(conn))


# --- worker ------------------------------------------------------------------------------------


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from entrypoints.worker import run_worker

    if args.concurrency:
        settings = msgspec.structs.replace(settings, worker_concurrency=args.concurrency)
    queues = [q.strip() for q in args.queues.split(",")] if args.queues else None
    _run_with_uvloop(run_worker(settings, queues=queues))
    return 0


def _run_with_uvloop(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]


# --- serve -------------------------------------------------------------------------------------


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from entrypoints.wiring import database_url_for

    overrides = {
        k: v for k, v in {"host": args.host, "port": args.port, "http_workers": args.workers}.items() if v
    }
    if overrides:
        try:
            settings = msgspec.structs.replace(settings, **overrides)
        except SettingsError as error:
            print(f"pictor: {error}", file=sys.stderr)
            return 2
    settings.data_path.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with database_url_for(settings) as database_url:  # the embedded PostgreSQL runs for the block
        return _serve_with_database(settings, args, database_url, started)


def _serve_with_database(
    settings: Settings, args: argparse.Namespace, database_url: str, started: float
) -> int:
    from entrypoints.wiring import ensure_generated_secrets

    embedded = settings.uses_embedded_database
    wants_migrations = args.migrate or (args.migrate is None and embedded)
    if wants_migrations and not database_url.startswith("memory:"):
        asyncio.run(_run_migrations(database_url, dry_run=False))
    created = asyncio.run(ensure_generated_secrets(settings, os.environ))

    runtime = Path(tempfile.mkdtemp(prefix="pictor-serve-"))
    drain_file = runtime / "draining"
    env = dict(os.environ)
    env.update(
        {
            "PICTOR_DATABASE_URL": database_url,
            "PICTOR_HOST": settings.host,
            "PICTOR_PORT": str(settings.port),
            "PICTOR_HTTP_WORKERS": str(settings.http_workers),
            DRAIN_FILE_VARIABLE: str(drain_file),
        }
    )
    if settings.http_workers > 1:
        # Several processes write metrics: prometheus-client's multiprocess mode aggregates them.
        metrics_dir = runtime / "metrics"
        metrics_dir.mkdir()
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    _print_banner(settings, embedded=embedded, created_secrets=created, seconds=time.monotonic() - started)

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
    server = subprocess.Popen(command, env=env)  # noqa: S603 - our own interpreter and arguments
    try:
        return _supervise(server, settings, drain_file)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def _supervise(server: subprocess.Popen[bytes], settings: Settings, drain_file: Path) -> int:
    """Wait for the server; on SIGTERM/SIGINT drain first, then stop it gracefully."""
    stopping = False

    def begin_shutdown(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        drain_file.touch()  # readiness fails from now on
        time.sleep(settings.shutdown_drain_seconds)
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)  # the server finishes in-flight requests, then exits

    signal.signal(signal.SIGTERM, begin_shutdown)
    signal.signal(signal.SIGINT, begin_shutdown)
    try:
        while True:
            try:
                code = server.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        if server.poll() is None:
            try:
                server.wait(timeout=settings.shutdown_timeout_seconds + 5)
            except subprocess.TimeoutExpired:
                server.kill()
    return 0 if stopping else code


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _print_banner(settings: Settings, *, embedded: bool, created_secrets: list[str], seconds: float) -> None:
    base = settings.public_base_url
    lines = [
        f"Pictor {_version()} ready to serve on {base} (docs: {base}/docs)",
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
        f"  started in {seconds:.1f} s; stop with Ctrl-C",
    ]
    print("\n".join(lines), flush=True)


def _version() -> str:
    from entrypoints.http.app import VERSION

    return VERSION


if __name__ == "__main__":
    raise SystemExit(main())
