"""`gengate serve --workers N`: N API processes on one port, or a clear refusal where the
processes could not share their state (SQLite, no Redis)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.servers import socket_owner
from tests.support.backends import ON_POSTGRES, TEST_REDIS_URL
from tests.support.server import LiveServer, start_server, wait_until

STARTED = re.compile(r"Started server process \[(\d+)\]")


def _serve_json(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "--json", "serve", *args],
        env={k: v for k, v in os.environ.items() if not k.startswith("GENGATE_")} | env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("database", "redis", "needs"),
    [
        (None, None, ["PostgreSQL", "Redis"]),
        (None, "redis://127.0.0.1:6379/15", ["PostgreSQL"]),
        ("postgresql://gengate@127.0.0.1:5432/gengate", None, ["Redis"]),
    ],
)
def test_more_than_one_process_needs_postgres_and_redis(
    tmp_path: Path, database: str | None, redis: str | None, needs: list[str]
) -> None:
    env = {"GENGATE_ENV": "test", "GENGATE_VAR_DIR": str(tmp_path / "var")}
    env |= {"GENGATE_DATABASE_URL": database} if database else {}
    env |= {"GENGATE_REDIS_URL": redis} if redis else {}
    code, answer = _serve_json(env, tmp_path, "--workers", "2")
    assert code == 1
    assert answer["field"] == "workers"
    message = str(answer["error"])
    assert message.startswith("--workers 2 needs ")
    for name in ("PostgreSQL", "Redis"):
        assert (name + " (GENGATE_") in message if name in needs else name not in message
    # Refused before anything was set up: no SQLite file, no generated secret.
    assert not (tmp_path / "var").exists()


def test_zero_workers_is_a_usage_error(tmp_path: Path) -> None:
    code, answer = _serve_json(
        {"GENGATE_VAR_DIR": str(tmp_path / "var")}, tmp_path, "--workers", "0"
    )
    assert code == 2
    assert answer["field"] == "workers"


def _server_socket_owner(port: int, client: socket.socket, pids: list[int]) -> int | None:
    """Which of `pids` holds the server end of `client`'s TCP connection, if any yet."""
    return socket_owner(port, client.getsockname()[1], pids)


def _ask_readyz(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = conn.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return conn  # kept open: the process that answered still holds its end


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_two_processes_both_answer_and_stop_cleanly(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    """On PostgreSQL + Redis two processes serve; on the suite's SQLite backend the same
    command is refused, naming what is missing (each backend checks what it must do)."""
    if not (ON_POSTGRES and TEST_REDIS_URL):
        code, answer = _serve_json(settings_env, tmp_path, "--workers", "2")
        assert code == 1 and answer["field"] == "workers"
        assert str(answer["error"]).startswith("--workers 2 needs PostgreSQL (GENGATE_")
        return
    server: LiveServer = start_server(settings_env, tmp_path, args=["serve", "--workers", "2"])
    conns: list[socket.socket] = []
    try:
        port = int(server.base_url.rsplit(":", 1)[1])
        wait_until(lambda: len(set(STARTED.findall(server.log()))) == 2, what="two processes")
        pids = sorted({int(p) for p in STARTED.findall(server.log())})
        assert server.process.pid not in pids
        assert all(_alive(pid) for pid in pids)
        # The kernel hands each new connection to one of the processes: open connections
        # (each answered) until both processes have answered one.
        answered: set[int] = set()
        deadline = time.monotonic() + 20
        while answered != set(pids) and time.monotonic() < deadline:
            conn = _ask_readyz(port)
            conns.append(conn)
            owner = _server_socket_owner(port, conn, pids)
            if owner is not None:
                answered.add(owner)
        assert answered == set(pids), f"only {answered} of {pids} answered {len(conns)} calls"
    finally:
        for conn in conns:
            conn.close()
        server.stop()
    assert server.process.returncode == 0, server.log()
    wait_until(lambda: not any(_alive(pid) for pid in pids), timeout=10, what="children exit")
    assert "Traceback" not in server.log()
