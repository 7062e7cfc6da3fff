"""The embedded PostgreSQL (pgserver): starts in a folder, keeps its data, and really stops."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from adapters.postgres.embedded import EmbeddedPostgres


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    embedded = EmbeddedPostgres(tmp_path / "var" / "postgres", database="pictor_test")
    try:
        yield embedded
    finally:
        embedded.stop()  # even when the test failed half-way: leave no server behind


def stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_data_survives_a_restart_and_stop_ends_the_server(server: EmbeddedPostgres) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no XDG_RUNTIME_DIR (or other) warning noise on start
        url = server.start()
    first_pid = server.pid
    assert first_pid is not None
    assert server.data_dir.name == "postgres"
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("pictor_test",)
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")

    server.stop()
    assert stopped(first_pid)
    assert server.pid is None
    with pytest.raises(RuntimeError):
        _ = server.url

    url = server.start()
    second_pid = server.pid
    assert second_pid is not None
    assert second_pid != first_pid
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT note FROM kept").fetchall() == [("still here",)]

    server.stop()
    assert stopped(second_pid)
    server.stop()  # stopping twice is harmless


def test_context_manager_starts_and_stops(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "postgres") as server:
        pid = server.pid
        assert pid is not None
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("pictor",)
    assert stopped(pid)
