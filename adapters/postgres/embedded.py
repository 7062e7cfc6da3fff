"""The embedded PostgreSQL: the server shipped in the `pgserver` wheel, run in a folder of ours.

Used when `PICTOR_DATABASE_URL` is unset (DESIGN.md §2). The server listens only on a unix socket
inside its data folder, and its data survives restarts. pgserver's own exit hook stops the server
only when its bookkeeping of handle-holding processes says it is the last one, which a crashed
process can leave wrong forever; so we start it with `cleanup_mode=None` and stop it ourselves.
Starting and stopping block (they run `pg_ctl`): call them from a thread in async code.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import subprocess
import warnings
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

import psutil
import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

logger = logging.getLogger("pictor.db.embedded")

STOP_TIMEOUT_SECONDS = 30


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in `data_dir` (created if missing).

    `start()` returns a psycopg URL for `database` (created on first start); `stop()` shuts the
    server down unless another live process still holds a handle on it. Usable as a context manager.
    """

    def __init__(self, data_dir: str | Path, *, database: str = "pictor") -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.database = database
        self._server: PostgresServer | None = None

    @property
    def url(self) -> str:
        """The URL of `database` on the running server; RuntimeError when not started."""
        if self._server is None:
            raise RuntimeError("the embedded PostgreSQL is not started")
        return self._server.get_uri(self.database)

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while a server runs on `data_dir`, else None."""
        pid = _postmaster_pid(self.data_dir)
        return pid if pid is not None and _alive(pid) else None

    def start(self) -> str:
        """Start the server (or attach to one already running on `data_dir`); returns `url`."""
        if self._server is None:
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            server = _get_server(self.data_dir)
            # With cleanup_mode=None the hook would only edit pgserver's bookkeeping; `stop` does that.
            atexit.unregister(server._cleanup)
            self._server = server
            self._create_database(server)
        return self.url

    def stop(self) -> None:
        """Stop the server, unless another live process still uses it. Data stays in `data_dir`."""
        server, self._server = self._server, None
        if server is None:
            return
        from pgserver.postgres_server import PostgresServer

        with PostgresServer._lock:  # the inter-process lock pgserver itself starts servers under
            PostgresServer._instances.pop(server.pgdata, None)
            handles = server.global_process_id_list
            others = [pid for pid in handles.get() if pid != os.getpid() and _alive(pid)]
            handles.put(others)
            if others:
                logger.info("embedded PostgreSQL left running for processes %s", others)
                return
            self._shut_down(server.system_user)

    def _shut_down(self, system_user: str | None) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        pid = self.pid
        if pid is None:
            return
        command = [
            str(POSTGRES_BIN_PATH / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            str(STOP_TIMEOUT_SECONDS),
            "-m",
            "fast",
            "stop",
        ]
        try:
            # `user=` runs pg_ctl as the account pgserver created for the server when we are root.
            subprocess.run(  # noqa: S603 - fixed argument list, no shell
                command,
                check=True,
                capture_output=True,
                user=system_user,
                timeout=STOP_TIMEOUT_SECONDS + 5,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            logger.warning("pg_ctl stop failed (%s); terminating the postmaster", error)
            _terminate(pid)

    def _create_database(self, server: PostgresServer) -> None:
        with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if exists is None:
                # Another process starting the same server may create it first.
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _get_server(data_dir: Path) -> PostgresServer:
    # pgserver computes its lock folder from XDG_RUNTIME_DIR at import and warns when it is unset
    # (containers, services); the fallback folder is fine, so the warning is only noise.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from pgserver.postgres_server import get_server
    return get_server(data_dir, cleanup_mode=None)


def _postmaster_pid(data_dir: Path) -> int | None:
    """The pid recorded in `postmaster.pid`, which exists while a server runs (or after a crash)."""
    try:
        first_line = (data_dir / "postmaster.pid").read_text().partition("\n")[0]
        return int(first_line)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None  # no server, or one writing the file right now


def _alive(pid: int) -> bool:
    """True when `pid` runs and is not a zombie (an exited postmaster its parent has not reaped)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _terminate(pid: int) -> None:
    try:
        process = psutil.Process(pid)
        process.terminate()
        try:
            process.wait(5)
        except psutil.TimeoutExpired:
            process.kill()
    except psutil.NoSuchProcess:
        return
