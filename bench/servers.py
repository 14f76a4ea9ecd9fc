"""Start one server under test (uvicorn, or `gengate serve` with its workers), wait until it
is ready, always stop it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent  # .venv/bin: `make bench` runs .venv/bin/python
READY_TIMEOUT_S = 30.0


class BenchError(RuntimeError):
    """The bench itself broke (as opposed to a target being missed)."""


@dataclass(frozen=True)
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def uvicorn_command(target: str, port: int, *, factory: bool = False) -> list[str]:
    """The same flags for gengate and the baseline: one process, no access log."""
    return [
        str(BIN / "uvicorn"),
        *(["--factory"] if factory else []),
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def _wait_ready(server: Server, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise BenchError(f"{server.name} exited early:\n{server.log_tail()}")
            try:
                if client.get(f"{server.url}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise BenchError(f"{server.name} not ready after {timeout:.0f} s:\n{server.log_tail()}")


def stop(server: Server) -> None:
    if server.proc.poll() is not None:
        return
    server.proc.terminate()
    try:
        server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=10)


def serve_command(port: int, *, workers: int = 1) -> list[str]:
    """`gengate serve` itself, as an operator runs it (uvicorn's workers when above 1)."""
    return [
        *(str(BIN / "gengate"), "serve", "--host", "127.0.0.1", "--port", str(port)),
        *("--workers", str(workers)),
    ]


@contextmanager
def running(
    name: str,
    target: str,
    env: dict[str, str],
    log_dir: Path,
    *,
    factory: bool = False,
    command: Callable[[int], list[str]] | None = None,
) -> Iterator[Server]:
    """Run uvicorn on `target`, or `command(port)` when given; ready once /readyz answers."""
    port = free_port()
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command(port) if command else uvicorn_command(target, port, factory=factory),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(name=name, url=f"http://127.0.0.1:{port}", proc=proc, log=log)
    try:
        _wait_ready(server)
        yield server
    finally:
        stop(server)


# --- several processes on one port -------------------------------------------------------


def server_processes(server: Server) -> list[int]:
    """The processes uvicorn spawned to serve (not multiprocessing's resource tracker)."""
    pids = []
    for task in Path(f"/proc/{server.proc.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                pids.append(int(child))
    return sorted(pids)


def wait_all_answering(server: Server, processes: int, timeout: float = READY_TIMEOUT_S) -> None:
    """Open connections to /readyz until each of the `processes` has answered one.

    /readyz answers as soon as one process is up; a load run before the others are would
    measure fewer processes than it says. Which process holds a connection is read from
    /proc: the server end's socket inode, among each process's open files.
    """
    port = int(server.url.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout
    answered: set[int] = set()
    pids: list[int] = []
    conns: list[socket.socket] = []
    try:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise BenchError(f"{server.name} exited early:\n{server.log_tail()}")
            pids = server_processes(server)
            if len(pids) == processes and answered >= set(pids):
                return
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            conns.append(conn)
            conn.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            if conn.recv(65536).startswith(b"HTTP/1.1 200"):
                owner = socket_owner(port, conn.getsockname()[1], pids)
                if owner is not None:
                    answered.add(owner)
            else:
                time.sleep(0.05)  # one process is still starting up
    finally:
        for conn in conns:
            conn.close()
    raise BenchError(
        f"{server.name}: {len(answered)} of {processes} processes answered within "
        f"{timeout:.0f} s (processes {pids}):\n{server.log_tail()}"
    )


def socket_owner(port: int, client_port: int, pids: list[int]) -> int | None:
    """Which of `pids` holds the server end of the loopback TCP connection from
    `client_port` to `port`, if any yet (read from /proc)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) == client_port:
            inode = fields[9]
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # closed while we looked
                if os.readlink(fd) == target:
                    return pid
    return None
