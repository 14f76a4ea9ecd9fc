"""A real gengate server in a subprocess, for tests that need real sockets or a kill."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate, *, timeout: float = 20.0, interval: float = 0.02, what: str = "") -> None:  # type: ignore[no-untyped-def]
    """Poll `predicate` until it is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    stdout_path: Path

    def log(self) -> str:
        """What the server logged (stderr)."""
        return self.log_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(
    env: dict[str, str],
    workdir: Path,
    *,
    args: list[str] | None = None,
    ready_path: str | None = "/readyz",
    ready_within_s: float = 30,
) -> LiveServer:
    """Run `gengate serve` (or other args) with `env`; wait until `ready_path` answers 200
    (at most `ready_within_s`).

    With `ready_path=None` (a worker has no HTTP side) it returns once the process started.
    """
    port = free_port()
    log_path = workdir / f"server-{port}.log"
    stdout_path = workdir / f"server-{port}.out"
    full_env = {**os.environ, **env, "GENGATE_PORT": str(port), "GENGATE_HOST": "127.0.0.1"}
    with log_path.open("wb") as log, stdout_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *(args or ["serve"])],
            env=full_env,
            stdout=out,
            stderr=log,
            cwd=workdir,
        )
    server = LiveServer(process, f"http://127.0.0.1:{port}", log_path, stdout_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"server exited early:\n{server.log()}\n{server.stdout()}")
        try:
            return httpx.get(server.base_url + str(ready_path), timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    if ready_path is not None:
        try:
            wait_until(ready, timeout=ready_within_s, what="server readiness")
        except BaseException:
            server.stop()  # a server left running would claim later tests' tasks
            raise
    return server
