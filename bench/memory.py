"""The memory stage: resident memory of an idle API process and of an idle worker.

The API is `gengate serve` as an operator runs it (one process, its workers embedded) on
PostgreSQL and Redis; it answers a few calls that render nothing (recordInfo, the model
list, a page of tasks), then its RSS is read once it has settled. Then one `gengate worker`
on the same database, idle, the same way. Targets (issue 11): API < 150 MB, worker < 120 MB.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench import db, gengate
from bench.gengate import Gengate
from bench.servers import BIN, BenchError, Server, running, serve_command, stop

DB_NAME = db.database_name("memory")
API_TARGET_MB = 150
WORKER_TARGET_MB = 120
CALLS = 3  # of each read-only call, before the reading
SETTLE_WINDOW_S = 1.0  # RSS counts as settled when it moved less than SETTLE_MB over this
SETTLE_MB = 0.5
SETTLE_TIMEOUT_S = 15.0
SAMPLE_S = 0.1


@contextmanager
def serve_api(work: Path, redis_prefix: str, log_dir: Path) -> Iterator[tuple[Server, Gengate]]:
    """`gengate serve`, workers embedded, on a fresh database of its own."""
    var_dir = work / "gengate-memory"
    var_dir.mkdir()
    env = {
        **gengate.make_env(db.reset_database(DB_NAME), var_dir, redis_prefix),
        "GENGATE_LOG_LEVEL": "WARNING",
    }
    prepared = gengate.prepare(env)
    with running(
        "gengate-memory",
        "",
        prepared.with_workers(True),
        log_dir,
        command=serve_command,
    ) as server:
        yield server, prepared


def measure_idle(gg: Gengate, server: Server, log_dir: Path) -> dict[str, Any]:
    with httpx.Client(base_url=server.url, headers=gg.auth, timeout=10) as client:
        for _ in range(CALLS):
            for path in (
                gengate.RECORD_PATH + "task-that-does-not-exist",  # 404 of recordInfo
                "/api/v1/models",
                "/v1/tasks",
                "/readyz",
            ):
                answer = client.get(path)
                if answer.status_code >= 500:
                    raise BenchError(f"GET {path} answered {answer.status_code}: {answer.text}")
    api_mb, api_settle_s = settled_rss_mb(server.proc)
    with _worker(gg, log_dir) as worker:
        worker_mb, worker_settle_s = settled_rss_mb(worker)
    notes = (
        f"RSS once settled (< {SETTLE_MB} MB over {SETTLE_WINDOW_S:g} s): `gengate serve` "
        f"(workers embedded) {api_mb:.1f} MB after {CALLS} rounds of read-only calls, "
        f"`gengate worker` {worker_mb:.1f} MB idle; PostgreSQL + Redis"
    )
    return {
        "api_idle_rss_mb": round(api_mb, 1),
        "worker_idle_rss_mb": round(worker_mb, 1),
        "api_settle_s": round(api_settle_s, 1),
        "worker_settle_s": round(worker_settle_s, 1),
        "errors": 0,
        "notes": notes,
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for process {pid}")


def settled_rss_mb(proc: subprocess.Popen[bytes]) -> tuple[float, float]:
    """(RSS once it stopped moving, seconds that took); BenchError if it never settles."""
    started = time.monotonic()
    samples: list[tuple[float, float]] = []
    while time.monotonic() - started < SETTLE_TIMEOUT_S:
        if proc.poll() is not None:
            raise BenchError(f"process {proc.pid} exited (code {proc.returncode})")
        now = time.monotonic()
        samples.append((now, rss_mb(proc.pid)))
        window = [mb for at, mb in samples if at >= now - SETTLE_WINDOW_S]
        if now - samples[0][0] >= SETTLE_WINDOW_S and max(window) - min(window) < SETTLE_MB:
            return window[-1], now - started
        time.sleep(SAMPLE_S)
    raise BenchError(f"RSS of process {proc.pid} still moving after {SETTLE_TIMEOUT_S:.0f} s")


@contextmanager
def _worker(gg: Gengate, log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = log_dir / "gengate-memory-worker.log"
    env = {**gg.env, "GENGATE_LOG_LEVEL": "INFO"}  # its "started" line tells it is up
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "gengate"), "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    server = Server("gengate-memory-worker", "", proc, log)
    try:
        deadline = time.monotonic() + 30
        while "started" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the worker did not start:\n{server.log_tail()}")
            time.sleep(SAMPLE_S)
        yield proc
    finally:
        stop(server)
