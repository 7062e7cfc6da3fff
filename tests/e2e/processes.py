"""Start real `pictor` processes for end-to-end tests, and always stop them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_environ(extra: Mapping[str, str]) -> dict[str, str]:
    """The test's environment without any PICTOR_* setting it may carry, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PICTOR_", "PROMETHEUS_"))}
    env.update(extra)
    return env


class PictorProcess:
    """`pictor <args>` as a child process, output captured to a file for failure messages."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "entrypoints.cli", *args],
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a stray signal to the test's group never reaches it
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, base_url: str, timeout: float = 30.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"pictor exited with {self.process.returncode}:\n{self.output()}")
            try:
                response = httpx.get(f"{base_url}/health/ready", timeout=2)
                if response.status_code == 200:
                    return dict(response.json())
                last = response.text
            except httpx.HTTPError as error:
                last = repr(error)
            time.sleep(0.1)
        raise AssertionError(f"not ready after {timeout} s ({last}):\n{self.output()}")

    def terminate(self, timeout: float = 40.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """Kill the whole process group, leftovers of an exited parent included."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(timeout=10)
        self._log.close()
