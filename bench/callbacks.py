"""The callbacks stage: 1,000 tasks finish at once, one `gengate worker` calls them all back.

The API (no workers) creates the tasks with a callback URL and cancels them, so every
delivery is due before the worker starts; then one `gengate worker` process delivers them to
a receiver (a process of its own) that answers each after 1 s. What counts: the time until
the receiver has answered all of them, against the floor set by the delivery pool
(tasks / deliveries at once x the receiver's delay), and that none arrived twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench import db, gengate
from bench.gengate import Gengate
from bench.servers import BIN, BenchError, Server, free_port, running, stop

DB_NAME = db.database_name("callbacks")
# A Redis database of its own (the other stages use 0) unless BENCH_REDIS_URL names the one
# every stage uses; under the run's key prefix either way.
REDIS_URL = os.environ.get("BENCH_REDIS_URL") or "redis://127.0.0.1:6379/3"
TASKS = 1000
RECEIVER_DELAY_S = 1.0
# The defaults of GENGATE_CALLBACK_CONCURRENCY and _PER_HOST_CONCURRENCY, stated so the
# floor below is computed from what the worker runs with. One receiver: the host cap binds.
CONCURRENCY = 100
PER_HOST_CONCURRENCY = 50
CLIENT_CONCURRENCY = 32  # creates and cancels in flight while preparing
DELIVER_TIMEOUT_S = 300.0
POLL_S = 0.05
ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def serve_api(work: Path, redis_prefix: str, log_dir: Path) -> Iterator[tuple[Server, Gengate]]:
    """The gengate API without workers, on a fresh database, allowed to call back loopback."""
    var_dir = work / "gengate-callbacks"
    var_dir.mkdir()
    env = {
        **gengate.make_env(db.reset_database(DB_NAME), var_dir, redis_prefix),
        "GENGATE_REDIS_URL": REDIS_URL,
        "GENGATE_OUTBOUND_ALLOWLIST": json.dumps(["127.0.0.1/32"]),
        "GENGATE_CALLBACK_CONCURRENCY": str(CONCURRENCY),
        "GENGATE_CALLBACK_PER_HOST_CONCURRENCY": str(PER_HOST_CONCURRENCY),
    }
    prepared = gengate.prepare(env)
    try:
        with running(
            "gengate-callbacks",
            "app.main:create_app",
            prepared.with_workers(False),
            log_dir,
            factory=True,
        ) as server:
            yield server, prepared
    finally:
        gengate.cleanup_redis(redis_prefix, url=REDIS_URL)


def deliver_at_once(gg: Gengate, server: Server, log_dir: Path) -> dict[str, Any]:
    with _receiver(log_dir) as receiver_url:
        callback = f"{receiver_url}/hook"
        task_ids = asyncio.run(_finish_tasks(server.url, gg.auth, callback))
        started = time.time()
        with _worker(gg.env, log_dir) as worker:
            stats = _wait_all_answered(receiver_url, worker)
            stored = _wait_all_recorded(gg.env["GENGATE_DATABASE_URL"], worker)
    floor_s = TASKS / min(CONCURRENCY, PER_HOST_CONCURRENCY) * RECEIVER_DELAY_S
    total_s = stats["last_answered_at"] - started
    # From the first request's arrival: what the pool did, without the process start.
    delivering_s = stats["last_answered_at"] - (stats["first_answered_at"] - RECEIVER_DELAY_S)
    twice = stats["received"] - stats["distinct"]
    missing = len(task_ids) - stats["distinct"]
    notes = (
        f"{stats['distinct']} delivered in {total_s:.1f} s from worker start, "
        f"{delivering_s:.1f} s from the first arrival; floor {floor_s:.0f} s "
        f"({TASKS} / {min(CONCURRENCY, PER_HOST_CONCURRENCY)} at once x {RECEIVER_DELAY_S:g} s); "
        f"{twice} twice, {missing} missing; attempts recorded {stored['attempts']}"
    )
    return {
        "rps": TASKS / total_s,
        "errors": twice + missing,
        "seconds": round(total_s, 2),
        "delivering_seconds": round(delivering_s, 2),
        "floor_seconds": floor_s,
        "received": stats["received"],
        "distinct": stats["distinct"],
        **stored,
        "notes": notes,
    }


async def _finish_tasks(base_url: str, auth: dict[str, str], callback: str) -> list[str]:
    """Create TASKS tasks calling back `callback`, then cancel them all (each cancel queues
    its callback): with no worker running, every delivery is due at once."""
    limit = asyncio.Semaphore(CLIENT_CONCURRENCY)
    body = {**gengate.CREATE_BODY, "callBackUrl": callback}
    async with httpx.AsyncClient(base_url=base_url, headers=auth, timeout=30) as client:

        async def create() -> str:
            async with limit:
                answer = await client.post(gengate.CREATE_PATH, json=body)
            if answer.status_code != 200:
                raise BenchError(f"createTask answered {answer.status_code}: {answer.text[:300]}")
            task_id: str = answer.json()["data"]["taskId"]
            return task_id

        async def cancel(task_id: str) -> None:
            async with limit:
                answer = await client.post("/api/v1/jobs/cancel", params={"taskId": task_id})
            if answer.status_code != 200:
                raise BenchError(f"cancel answered {answer.status_code}: {answer.text[:300]}")

        task_ids = await asyncio.gather(*(create() for _ in range(TASKS)))
        await asyncio.gather(*(cancel(t) for t in task_ids))
    return list(task_ids)


@contextmanager
def _receiver(log_dir: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (log_dir / "callbacks-receiver.log").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver", str(port), str(RECEIVER_DELAY_S)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _poll(lambda: _stats(url) is not None, proc, timeout=10, what="the receiver to listen")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def _worker(env: dict[str, str], log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = log_dir / "gengate-callbacks-worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "gengate"), "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        stop(Server("worker", "", proc, log))


def _wait_all_answered(url: str, worker: subprocess.Popen[bytes]) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def all_answered() -> bool:
        found.update(_stats(url) or {})
        return bool(found.get("received", 0) >= TASKS)

    _poll(all_answered, worker, timeout=DELIVER_TIMEOUT_S, what=f"{TASKS} callbacks")
    return found


def _wait_all_recorded(db_url: str, worker: subprocess.Popen[bytes]) -> dict[str, int]:
    """Every delivery settled in the database (the last answers are recorded just after)."""
    counts: dict[str, int] = {}
    with psycopg.connect(db_url, autocommit=True) as conn:

        def settled() -> bool:
            rows = conn.execute(
                "SELECT status, count(*) FROM callback_delivery GROUP BY status"
            ).fetchall()
            counts.clear()
            counts.update({f"deliveries_{status}": n for status, n in rows})
            row = conn.execute("SELECT count(*) FROM callback_attempt").fetchone()
            counts["attempts"] = row[0] if row else 0
            return counts.get("deliveries_delivered", 0) == TASKS

        _poll(settled, worker, timeout=30, what="the deliveries to be recorded")
    return counts


def _stats(url: str) -> dict[str, Any] | None:
    try:
        answer = httpx.get(f"{url}/stats", timeout=2)
    except httpx.TransportError:
        return None
    stats: dict[str, Any] = answer.json()
    return stats


def _poll(done: Any, proc: subprocess.Popen[bytes], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None:
            raise BenchError(f"exited (code {proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL_S)
