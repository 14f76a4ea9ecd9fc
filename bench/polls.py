"""The polls stage: the upstream polls a second one `gengate worker` sustains, and its memory
with 10,000 tasks an upstream holds.

A fake ModelArk (tests/fakes/slow_modelark.py, a process of its own) answers every poll after
50 ms, `queued` for ever, and holds any task it is asked about. The tasks are written straight
into the database as a `Pending` submit leaves them (generating, the channel and the upstream
id recorded) and are all due: 10,000 tasks polled every second are far more than one worker
can poll, so it runs flat out. What counts: the polls the fake answered a second over a window,
against two baselines of the same run: the floor of the poll pool (polls at once / 50 ms) and
the fake's own rate at that many connections (wrk); beside them the worker's CPU, and its RSS
against the same worker's idle RSS, taken before the tasks were written.
"""

from __future__ import annotations

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
from bench.loadgen import LUA_DIR, ensure_wrk
from bench.servers import BIN, BenchError, Server, free_port, stop

DB_NAME = db.database_name("polls")
ROOT = Path(__file__).resolve().parent.parent
TASKS = 10_000
LATENCY_S = 0.05
# GENGATE_POLL_CONCURRENCY's default, stated so the floor is computed from what the worker runs.
POLL_CONCURRENCY = 100
POLL_INTERVAL_S = 1.0  # every task due again long before the worker comes back to it
WARMUP_S = 5.0
WINDOW_S = 15.0
FAKE_WRK_S = 5
CHANNEL = "ark"
MODEL = "seedance-2.0-text-to-video"
KEY_ENV = "BENCH_ARK_KEY"
API_KEY = "ark-bench-key-0123456789"
TASKS_PATH = "/api/v3/contents/generations/tasks/"
STATS_PATH = "/fake/stats"
POLL_S = 0.1


@contextmanager
def serve_fake(work: Path, redis_prefix: str, log_dir: Path) -> Iterator[tuple[Server, Gengate]]:
    """The slow fake ModelArk, and a fresh gengate database whose channel file sends the
    video model to it (every other model stays on the local renderer)."""
    with _fake(log_dir) as server:
        var_dir = work / "gengate-polls"
        var_dir.mkdir()
        channels = _channel_file(work / "polls-channels.toml", server.url)
        env = {
            **gengate.make_env(db.reset_database(DB_NAME), var_dir, redis_prefix),
            "GENGATE_CHANNELS_PATH": str(channels),
            "GENGATE_POLL_CONCURRENCY": str(POLL_CONCURRENCY),
            KEY_ENV: API_KEY,
        }
        yield server, gengate.prepare(env)


def sustain_polls(gg: Gengate, fake: Server, work: Path, log_dir: Path) -> dict[str, Any]:
    """Measure the fake alone, then one worker polling TASKS held tasks through it."""
    fake_alone = _fake_rate(fake.url, _write_upstream_ids(work / "polls-upstream-ids.txt"))
    db_url = gg.env["GENGATE_DATABASE_URL"]
    polled_by_wrk = _stats(fake.url)["polls"]
    with _worker(gg.env, log_dir) as (worker, log):
        _wait(lambda: "started" in log.read_text(errors="replace"), worker, "the worker")
        time.sleep(1.0)  # past its first scans, with nothing to do
        idle_mb, _ = _memory_mb(worker)
        _hold_tasks(db_url)
        _wait(lambda: _stats(fake.url)["polls"] > polled_by_wrk, worker, "the first polls")
        time.sleep(WARMUP_S)
        before, cpu_before, fake_cpu_before = _stats(fake.url), _cpu_s(worker), _cpu_s(fake.proc)
        started = time.monotonic()
        _sleep_watching(worker, WINDOW_S)
        after, cpu_after, fake_cpu_after = _stats(fake.url), _cpu_s(worker), _cpu_s(fake.proc)
        seconds = time.monotonic() - started
        rss_mb, peak_mb = _memory_mb(worker)
    polls = after["polls"] - before["polls"]
    worker_cpu = (cpu_after - cpu_before) / seconds
    result = {
        "rps": polls / seconds,
        "errors": _tasks_ended(db_url),
        "polls": polls,
        "seconds": round(seconds, 2),
        "tasks": TASKS,
        "floor_rps": POLL_CONCURRENCY / LATENCY_S,
        "fake_rps": fake_alone["rps"],
        "fake_p50_ms": fake_alone["p50_ms"],
        "rss_mb": round(rss_mb, 1),
        "idle_rss_mb": round(idle_mb, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "worker_cpu_share": round(worker_cpu, 3),
        "worker_cpu_ms_per_poll": round(1000 * worker_cpu * seconds / max(polls, 1), 2),
        "fake_cpu_share": round((fake_cpu_after - fake_cpu_before) / seconds, 3),
    }
    return {**result, "notes": _notes(result)}


def _notes(r: dict[str, Any]) -> str:
    return (
        f"{r['rps']:,.0f} polls/s over {r['seconds']:.0f} s, {r['tasks']:,} tasks held; "
        f"floor {r['floor_rps']:,.0f}/s ({POLL_CONCURRENCY} at once / "
        f"{LATENCY_S * 1000:.0f} ms), the fake alone {r['fake_rps']:,.0f}/s at "
        f"{POLL_CONCURRENCY} connections; worker RSS {r['rss_mb']:.0f} MB (peak "
        f"{r['peak_rss_mb']:.0f}, idle {r['idle_rss_mb']:.0f}), CPU "
        f"{r['worker_cpu_share']:.0%} of a core ({r['worker_cpu_ms_per_poll']:.1f} ms a poll); "
        f"fake CPU {r['fake_cpu_share']:.0%}; {r['errors']} tasks ended (none should)"
    )


# --- the fake upstream -------------------------------------------------------------------


@contextmanager
def _fake(log_dir: Path) -> Iterator[Server]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = log_dir / "polls-slow-modelark.log"
    command = [sys.executable, "-m", "tests.fakes.slow_modelark", "--port", str(port)]
    command += ["--delay", str(LATENCY_S), "--adopt", "--queued-polls", str(10**9)]
    command += ["--api-key", API_KEY]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    server = Server("slow-modelark", url, proc, log)
    try:
        _wait(lambda: _stats(url, missing_ok=True) is not None, proc, "the fake to listen")
        yield server
    finally:
        stop(server)


def _stats(url: str, *, missing_ok: bool = False) -> Any:
    try:
        answer = httpx.get(url + STATS_PATH, timeout=5)
    except httpx.TransportError:
        if missing_ok:
            return None
        raise
    return answer.json()


def _fake_rate(url: str, ids: Path) -> dict[str, Any]:
    """The fake's own rate, driven by wrk with as many connections as the poll pool."""
    command = [ensure_wrk(), "-t2", f"-c{POLL_CONCURRENCY}", f"-d{FAKE_WRK_S}s"]
    command += ["--timeout", "10s", "-H", f"Authorization: Bearer {API_KEY}"]
    command += ["-s", str(LUA_DIR / "get_ids.lua"), url, "--", str(ids), TASKS_PATH]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            raw = json.loads(line.removeprefix("BENCH_JSON "))
            if raw["non200"] or raw["socket_errors"] or raw["timeouts"]:
                raise BenchError(f"the fake failed requests under wrk: {raw}")
            return {
                "rps": raw["requests"] / (raw["duration_us"] / 1e6),
                "p50_ms": raw["p50_us"] / 1000,
                "requests": raw["requests"],
            }
    raise BenchError(f"wrk printed no result (exit {done.returncode}):\n{done.stdout}{done.stderr}")


def _channel_file(path: Path, base_url: str) -> Path:
    from app.catalog.catalog import load_catalog

    others = [m for m in load_catalog().ids if m != MODEL]
    path.write_text(
        "[[channel]]\n"
        f'name = "{CHANNEL}"\nadapter = "modelark"\nbase_url = "{base_url}"\n'
        f'api_key_env = "{KEY_ENV}"\nmodels = ["{MODEL}"]\n'
        f"poll_interval_seconds = {POLL_INTERVAL_S}\n\n"
        '[[channel]]\nname = "local"\nadapter = "local"\n'
        f"models = {json.dumps(others)}\n"
    )
    return path


def _write_upstream_ids(path: Path) -> Path:
    """The upstream ids of the held tasks (as _hold_tasks names them), for wrk."""
    path.write_text("".join(f"cgt-bench-{n}\n" for n in range(1, TASKS + 1)))
    return path


# --- the tasks and the worker --------------------------------------------------------------


def _hold_tasks(db_url: str) -> None:
    """TASKS tasks as a `Pending` submit leaves them, all due now, in one statement; the
    fake holds whatever it is asked about, so their upstream ids need no setting up there."""
    now = int(time.time() * 1000)
    body = {"prompt": "a benchmark", "aspect_ratio": "16:9", "resolution": "720p"}
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT id, account_id FROM api_key LIMIT 1").fetchone()
        if row is None:
            raise BenchError("no API key in the polls database")
        key_id, account_id = row
        conn.execute(
            """
            INSERT INTO task (id, account_id, api_key_id, model, media_type, input_json,
                status, progress, price, provider, channel, upstream_id, attempts, polls,
                due_at, deadline_at, created_at, updated_at, started_at)
            SELECT 'task_' || lpad(to_hex(%(now)s::bigint), 12, '0') || lpad(to_hex(g), 16, '0'),
                %(account)s, %(key)s, %(model)s, 'video', %(input)s, 'generating', 0, 40,
                'local', %(channel)s, 'cgt-bench-' || g, 1, 0, %(now)s, %(deadline)s,
                %(now)s, %(now)s, %(now)s
            FROM generate_series(1, %(tasks)s) AS g
            """,
            {
                "now": now,
                "deadline": now + 24 * 3600 * 1000,
                "account": account_id,
                "key": key_id,
                "model": MODEL,
                "input": json.dumps(body),
                "channel": CHANNEL,
                "tasks": TASKS,
            },
        )


def _tasks_ended(db_url: str) -> int:
    """Tasks that left `generating`: none should (the fake never finishes one)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM task WHERE status <> 'generating'").fetchone()
    return int(row[0]) if row else 0


@contextmanager
def _worker(env: dict[str, str], log_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log = log_dir / "gengate-polls-worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "gengate"), "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc, log
    finally:
        stop(Server("worker", "", proc, log))


def _cpu_s(proc: subprocess.Popen[bytes]) -> float:
    """User + system CPU seconds the process has used so far."""
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _memory_mb(proc: subprocess.Popen[bytes]) -> tuple[float, float]:
    """(resident set size now, its peak), in MiB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def _sleep_watching(proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the worker exited (code {proc.returncode}) while polling")
        time.sleep(POLL_S)


def _wait(done: Any, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None:
            raise BenchError(f"exited (code {proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL_S)
