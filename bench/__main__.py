"""`make bench`: gengate against a bare Starlette + psycopg baseline on the same PostgreSQL.

Stages run one after the other, each with ONE uvicorn process under test unless it says
otherwise; a phase is a small function `(bench, server) -> result dict` run while its
stage's server is up. The memory stage (bench/memory.py) runs `gengate serve` (workers
embedded) and then one `gengate worker`, and reads their idle RSS; the gengate-2 stage runs
`gengate serve --workers 2` for createTask and recordInfo on two API processes. The
callbacks stage (bench/callbacks.py) also runs one `gengate worker` and a receiver process;
the tasks stage (bench/tasks.py) starts the baseline beside gengate for one of its phases.
Exit code 0 whatever the targets say; non-zero only when the bench itself broke.

Settings (environment), so a bench can run beside other work on the same servers:
  BENCH_DATABASE_PREFIX  the name of the bench's main PostgreSQL database and the prefix of
                         every other one it creates and drops (`<prefix>_pickup`,
                         `_pickup_pg`, `_callbacks`, `_polls`, `_tasks`, `_memory`, `_two`); default
                         `gengate_bench`. The server is postgres@127.0.0.1:5432.
  BENCH_REDIS_URL        the Redis of every gengate under test; default
                         redis://127.0.0.1:6379/0 (the callbacks stage: /3). Keys go under a
                         prefix of the run's own and are deleted at the end.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from rich.console import Console

from bench import callbacks, db, gengate, loadgen, memory, polls, report, tasks
from bench.gengate import Gengate
from bench.servers import (
    BIN,
    BenchError,
    Server,
    running,
    serve_command,
    stop,
    wait_all_answering,
)

DB_NAME = db.database_name()
PICKUP_DB_NAME = db.database_name("pickup")
PICKUP_PG_DB_NAME = db.database_name("pickup_pg")
TWO_DB_NAME = db.database_name("two")
PICKUP_SAMPLES = 30
PICKUP_WARMUP = 1
RESULTS = Path(__file__).parent / "results" / "latest.json"
ROOT = Path(__file__).resolve().parent.parent  # the repository: `bench` is importable from it
LOG_DIR = RESULTS.parent / "logs"  # one log per server under test, kept after the run

console = Console(width=None if sys.stdout.isatty() else 150)


@dataclass
class Bench:
    work: Path
    db_url: str
    redis_prefix: str
    body_file: Path
    mcp_body_file: Path
    gengates: dict[str, Gengate] = field(default_factory=dict)  # stage name -> its gengate
    results: report.Results = field(default_factory=dict)  # the phases run so far


Phase = Callable[[Bench, Server], dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    name: str
    start: Callable[[Bench], AbstractContextManager[Server]]
    phases: list[tuple[str, str, Phase]]  # (id, title, function)


# --- servers -----------------------------------------------------------------------------


def start_baseline(bench: Bench) -> AbstractContextManager[Server]:
    env = {**os.environ, "BENCH_DATABASE_URL": bench.db_url, "PYTHONPATH": str(ROOT)}
    return running("baseline", "bench.baseline:app", env, LOG_DIR)


@contextmanager
def _gengate(
    bench: Bench, name: str, db_url: str, workers: bool, **settings: str
) -> Iterator[Server]:
    var_dir = bench.work / name
    var_dir.mkdir()
    prepared = gengate.prepare(gengate.make_env(db_url, var_dir, bench.redis_prefix))
    bench.gengates[name] = prepared
    env = {**prepared.with_workers(workers), **settings}
    with running(name, "app.main:create_app", env, LOG_DIR, factory=True) as server:
        yield server


def start_floor(bench: Bench) -> AbstractContextManager[Server]:
    env = {**os.environ, "BENCH_DATABASE_URL": bench.db_url, "PYTHONPATH": str(ROOT)}
    return running("floor", "bench.floor:app", env, LOG_DIR)


def start_gengate_api(bench: Bench) -> AbstractContextManager[Server]:
    """recordInfo's answers from memory off: this stage's read phase is a stream of
    different tasks, each read from the database (the cached stage reads one repeatedly)."""
    return _gengate(
        bench, "gengate", bench.db_url, workers=False, GENGATE_TASK_VIEW_CACHE_SECONDS="0"
    )


def start_gengate_cached(bench: Bench) -> AbstractContextManager[Server]:
    """The gengate stage's database and key again, recordInfo's memory on (the default)."""
    env = bench.gengates["gengate"].with_workers(False)
    return running("gengate-cached", "app.main:create_app", env, LOG_DIR, factory=True)


@contextmanager
def start_gengate_callbacks(bench: Bench) -> Iterator[Server]:
    with callbacks.serve_api(bench.work, bench.redis_prefix, LOG_DIR) as (server, prepared):
        bench.gengates["gengate-callbacks"] = prepared
        yield server


@contextmanager
def start_gengate_polls(bench: Bench) -> Iterator[Server]:
    with polls.serve_fake(bench.work, bench.redis_prefix, LOG_DIR) as (server, prepared):
        bench.gengates["gengate-polls"] = prepared
        yield server


@contextmanager
def start_gengate_tasks(bench: Bench) -> Iterator[Server]:
    with tasks.serve_api(bench.work, bench.redis_prefix, LOG_DIR) as (server, prepared):
        bench.gengates["gengate-tasks"] = prepared
        yield server


@contextmanager
def start_gengate_two(bench: Bench) -> Iterator[Server]:
    """`gengate serve --workers 2`, no embedded workers, like the one-process stage but on a
    database of its own (recordInfo reads back tasks of its own key only)."""
    var_dir = bench.work / "gengate-2"
    var_dir.mkdir()
    env = gengate.make_env(db.reset_database(TWO_DB_NAME), var_dir, bench.redis_prefix)
    prepared = gengate.prepare({**env, "GENGATE_LOG_LEVEL": "WARNING"})  # no access log
    bench.gengates["gengate-2"] = prepared
    command = functools.partial(serve_command, workers=2)
    # As the one-process stage: every read of the stream from the database.
    env = {**prepared.with_workers(False), "GENGATE_TASK_VIEW_CACHE_SECONDS": "0"}
    with running("gengate-2", "", env, LOG_DIR, command=command) as server:
        wait_all_answering(server, 2)
        yield server


@contextmanager
def start_gengate_memory(bench: Bench) -> Iterator[Server]:
    with memory.serve_api(bench.work, bench.redis_prefix, LOG_DIR) as (server, prepared):
        bench.gengates["gengate-memory"] = prepared
        yield server


def start_gengate_workers(bench: Bench) -> AbstractContextManager[Server]:
    # A database of its own: the throughput phases left thousands of queued tasks behind.
    return _gengate(bench, "gengate-workers", db.reset_database(PICKUP_DB_NAME), workers=True)


@contextmanager
def start_pickup_pg(bench: Bench) -> Iterator[Server]:
    """No Redis: the API (no workers) and one `gengate worker` process, whose wake-ups travel
    through PostgreSQL NOTIFY/LISTEN. The phase's warm-up task waits out the worker's start."""
    var_dir = bench.work / "pickup-pg"
    var_dir.mkdir()
    env = gengate.make_env(db.reset_database(PICKUP_PG_DB_NAME), var_dir, bench.redis_prefix)
    del env["GENGATE_REDIS_URL"]
    prepared = bench.gengates["pickup-pg"] = gengate.prepare(env)
    api = prepared.with_workers(False)
    with running("pickup-pg", "app.main:create_app", api, LOG_DIR, factory=True) as server:
        log = LOG_DIR / "pickup-pg-worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [str(BIN / "gengate"), "worker"], env=api, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            yield server
        finally:
            stop(Server("pickup-pg-worker", "", worker, log))


# --- phases ------------------------------------------------------------------------------


def baseline_insert(bench: Bench, server: Server) -> dict[str, Any]:
    return loadgen.load(f"{server.url}/insert", "post.lua", [str(bench.body_file)])


def baseline_select(bench: Bench, server: Server) -> dict[str, Any]:
    ids = _sample(bench.db_url, "bench_item", bench.work / "item-ids.txt")
    return loadgen.load(server.url, "get_ids.lua", [str(ids), "/select?id="])


def _floor(layer: str) -> Phase:
    def phase(bench: Bench, server: Server) -> dict[str, Any]:
        ids = _sample(bench.db_url, "bench_item", bench.work / "item-ids.txt")
        return loadgen.load(server.url, "get_ids.lua", [str(ids), f"/{layer}?id="])

    return phase


def _gengate_create(stage: str, one_process: str | None = None) -> Phase:
    """createTask under load; with `one_process`, the notes compare with that phase."""

    def phase(bench: Bench, server: Server) -> dict[str, Any]:
        headers = bench.gengates[stage].auth
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
            gengate.create_task(client)  # one checked answer before the load
        url = server.url + gengate.CREATE_PATH
        result = loadgen.load(url, "post.lua", [str(bench.body_file)], headers)
        return _against(result, bench, one_process)

    return phase


def _gengate_record(stage: str, one_process: str | None = None) -> Phase:
    def phase(bench: Bench, server: Server) -> dict[str, Any]:
        db_url = bench.gengates[stage].env["GENGATE_DATABASE_URL"]
        ids = _sample(db_url, "task", bench.work / f"{stage}-task-ids.txt")
        headers = bench.gengates[stage].auth
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
            task_id = ids.read_text().split()[0]
            gengate.checked_data(client.get(gengate.RECORD_PATH + task_id), taskId=task_id)
        result = loadgen.load(server.url, "get_ids.lua", [str(ids), gengate.RECORD_PATH], headers)
        return _against(result, bench, one_process)

    return phase


def _against(result: dict[str, Any], bench: Bench, one_process: str | None) -> dict[str, Any]:
    base = bench.results.get(one_process or "", {}).get("rps")
    if base:
        result["notes"] = f"{result['rps'] / base:.2f}x the one-process rate"
    return result


gengate_create = _gengate_create("gengate")
gengate_record = _gengate_record("gengate")


def gengate_record_repeat(bench: Bench, server: Server) -> dict[str, Any]:
    """One task read over and over, as a client polling it does."""
    db_url = bench.gengates["gengate"].env["GENGATE_DATABASE_URL"]
    task_id = _sample(db_url, "task", bench.work / "cached-task-ids.txt").read_text().split()[0]
    one = bench.work / "cached-task-id.txt"
    one.write_text(f"{task_id}\n")
    headers = bench.gengates["gengate"].auth
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        gengate.checked_data(client.get(gengate.RECORD_PATH + task_id), taskId=task_id)
    return loadgen.load(server.url, "get_ids.lua", [str(one), gengate.RECORD_PATH], headers)


def memory_idle(bench: Bench, server: Server) -> dict[str, Any]:
    return memory.measure_idle(bench.gengates["gengate-memory"], server, LOG_DIR)


def gengate_mcp_create(bench: Bench, server: Server) -> dict[str, Any]:
    headers = bench.gengates["gengate"].auth
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        gengate.mcp_create_task(client)  # one checked answer before the load
    url = server.url + gengate.MCP_PATH
    return loadgen.load(url, "post.lua", [str(bench.mcp_body_file)], headers)


def _pickup(stage: str) -> Phase:
    def phase(bench: Bench, server: Server) -> dict[str, Any]:
        return pickup(bench.gengates[stage], server)

    return phase


def pickup(gg: Gengate, server: Server) -> dict[str, Any]:
    """Sequential createTask on an idle system: how long until a worker starts the task."""
    pickups: list[int] = []
    e2e: list[int] = []
    failed = 0
    with (
        httpx.Client(base_url=server.url, headers=gg.auth, timeout=10) as client,
        psycopg.connect(gg.env["GENGATE_DATABASE_URL"], autocommit=True) as conn,
    ):
        for i in range(PICKUP_WARMUP + PICKUP_SAMPLES):
            task_id = gengate.create_task(client)
            started = db.wait_task(conn, task_id, finished=False, timeout=10)
            finished = db.wait_task(conn, task_id, finished=True, timeout=60)
            if i < PICKUP_WARMUP:
                continue
            assert started.started_at is not None and finished.completed_at is not None
            pickups.append(started.started_at - started.created_at)
            if finished.status == "success":
                e2e.append(finished.completed_at - finished.created_at)
            else:
                failed += 1
    e2e_p50, e2e_p90 = _p(e2e, 50), _p(e2e, 90)
    notes = f"n={len(pickups)}; create → success p50 {e2e_p50} ms, p90 {e2e_p90} ms"
    if failed:
        notes += f"; {failed} ended in fail"
    return {
        "p50_ms": statistics.median(pickups),
        "p90_ms": _p(pickups, 90),
        "e2e_p50_ms": e2e_p50,
        "e2e_p90_ms": e2e_p90,
        "samples": len(pickups),
        "errors": failed,
        "notes": notes,
    }


def callbacks_at_once(bench: Bench, server: Server) -> dict[str, Any]:
    return callbacks.deliver_at_once(bench.gengates["gengate-callbacks"], server, LOG_DIR)


def polls_sustained(bench: Bench, server: Server) -> dict[str, Any]:
    return polls.sustain_polls(bench.gengates["gengate-polls"], server, bench.work, LOG_DIR)


def tasks_seed(bench: Bench, server: Server) -> dict[str, Any]:
    return tasks.seed(bench.gengates["gengate-tasks"])


def tasks_select(bench: Bench, server: Server) -> dict[str, Any]:
    return tasks.measure_baseline(bench.gengates["gengate-tasks"], LOG_DIR)


def _tasks_page(params: Callable[[], dict[str, Any]]) -> Phase:
    def phase(bench: Bench, server: Server) -> dict[str, Any]:
        return tasks.measure_page(bench.gengates["gengate-tasks"], server, params())

    return phase


STAGES = [
    Stage(
        "memory",
        start_gengate_memory,
        [("memory", "memory: idle RSS of `gengate serve` and of `gengate worker`", memory_idle)],
    ),
    Stage(
        "baseline",
        start_baseline,
        [
            ("insert", "bare INSERT (POST /insert)", baseline_insert),
            ("select", "bare PK SELECT (GET /select)", baseline_select),
        ],
    ),
    Stage(
        "floor",
        start_floor,
        [
            ("floorRaw", "floor: FastAPI + raw psycopg SELECT", _floor("raw")),
            ("floorCore", "floor: FastAPI + SQLAlchemy Core SELECT", _floor("core")),
            ("floorSession", "floor: FastAPI + SQLAlchemy session SELECT", _floor("session")),
        ],
    ),
    Stage(
        "gengate",
        start_gengate_api,
        [
            ("createTask", "gengate POST createTask", gengate_create),
            ("recordInfo", "gengate GET recordInfo, a stream of tasks", gengate_record),
            ("mcpCreate", "gengate MCP tools/call generate_image", gengate_mcp_create),
        ],
    ),
    Stage(
        "gengate-cached",
        start_gengate_cached,
        [("recordInfoRepeat", "gengate GET recordInfo, one task again", gengate_record_repeat)],
    ),
    Stage(
        "gengate-2",
        start_gengate_two,
        [
            (
                "createTask2",
                "gengate POST createTask, 2 API processes",
                _gengate_create("gengate-2", one_process="createTask"),
            ),
            (
                "recordInfo2",
                "gengate GET recordInfo, 2 API processes",
                _gengate_record("gengate-2", one_process="recordInfo"),
            ),
        ],
    ),
    Stage(
        "tasks",
        start_gengate_tasks,
        [
            ("tasksSeed", "v1 tasks: seed 1,000,000 tasks of one key (SQL)", tasks_seed),
            ("tasksSelect", "v1 tasks: bare PK SELECT, sequential", tasks_select),
            ("tasksPage1", "v1 tasks: GET /v1/tasks page 1", _tasks_page(dict)),
            (
                "tasksDeep",
                "v1 tasks: GET /v1/tasks page 1,001 of 100",
                _tasks_page(lambda: {"page": 1001, "pageSize": 100}),
            ),
            (
                "tasksFiltered",
                "v1 tasks: GET /v1/tasks model + status + dates",
                _tasks_page(tasks.filtered_params),
            ),
        ],
    ),
    Stage(
        "gengate-workers",
        start_gengate_workers,
        [("pickup", "pickup, idle: create → started", _pickup("gengate-workers"))],
    ),
    Stage(
        "pickup-pg",
        start_pickup_pg,
        [
            (
                "pickupPg",
                "pickup, idle, no Redis (NOTIFY, a `gengate worker`): create → started",
                _pickup("pickup-pg"),
            )
        ],
    ),
    Stage(
        "callbacks",
        start_gengate_callbacks,
        [
            (
                "callbacks",
                "callbacks: 1,000 tasks finishing at once, receiver answering after 1 s",
                callbacks_at_once,
            )
        ],
    ),
    Stage(
        "polls",
        start_gengate_polls,
        [
            (
                "polls",
                "polls: one gengate worker, 10,000 tasks held upstream, answers after 50 ms",
                polls_sustained,
            )
        ],
    ),
]


# --- helpers -----------------------------------------------------------------------------


def _sample(db_url: str, table: str, path: Path) -> Path:
    if db.write_sample_ids(db_url, table, path) == 0:
        raise BenchError(f"no rows in {table} to read back (did the write phase run?)")
    return path


def _p(values: list[int], pct: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


# --- main --------------------------------------------------------------------------------


def run_stage(stage: Stage, bench: Bench, results: report.Results) -> bool:
    """Run one stage's phases; record each result or error. Return False if any broke."""
    ok = True
    try:
        with stage.start(bench) as server:
            for phase_id, title, phase in stage.phases:
                console.print(f"[bold]{title}[/bold] …")
                try:
                    results[phase_id] = {"title": title, **phase(bench, server)}
                except Exception as exc:
                    ok = False
                    results[phase_id] = {"title": title, "error": _describe(exc)}
    except Exception as exc:
        ok = False
        for phase_id, title, _ in stage.phases:
            results.setdefault(phase_id, {"title": title, "error": _describe(exc)})
    return ok


def _describe(exc: Exception) -> str:
    if not isinstance(exc, BenchError):
        traceback.print_exc()
    message = f"{type(exc).__name__}: {exc}"
    console.print(f"[red]{message}[/red]", highlight=False)
    return message


def _check_settings() -> str | None:
    """What is wrong with BENCH_DATABASE_PREFIX or BENCH_REDIS_URL, if anything."""
    problem = db.check_prefix()
    if problem:
        return problem
    if not gengate.REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        return "BENCH_REDIS_URL must be a redis://, rediss:// or unix:// URL"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    names = [stage.name for stage in STAGES]
    parser.add_argument("--stage", action="append", choices=names, help="run only these stages")
    chosen = parser.parse_args().stage or names
    problem = _check_settings()
    if problem:
        console.print(f"[red]{problem}[/red]", highlight=False)
        return 2
    started = time.time()
    loadgen.ensure_wrk()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    results: report.Results = {}
    ok = True
    with tempfile.TemporaryDirectory(prefix="gengate-bench-") as tmp:
        work = Path(tmp)
        body_file = work / "body.json"
        body_file.write_text(json.dumps(gengate.CREATE_BODY))
        mcp_body_file = work / "mcp-body.json"
        mcp_body_file.write_text(json.dumps(gengate.MCP_CREATE_BODY))
        bench = Bench(
            work=work,
            db_url=db.reset_database(DB_NAME),
            redis_prefix=f"bench-{secrets.token_hex(6)}",
            body_file=body_file,
            mcp_body_file=mcp_body_file,
            results=results,
        )
        try:
            for stage in (s for s in STAGES if s.name in chosen):
                ok = run_stage(stage, bench, results) and ok
        finally:
            gengate.cleanup_redis(bench.redis_prefix)
    checks = report.print_report(console, results)
    meta = {
        "started_at": int(started),
        "seconds": round(time.time() - started, 1),
        "cpus": os.cpu_count(),
        "wrk": {"threads": loadgen.THREADS, "connections": loadgen.CONNECTIONS},
        "duration_s": loadgen.DURATION_S,
        "warmup_s": loadgen.WARMUP_S,
    }
    report.write_json(RESULTS, meta, results, checks)
    console.print(f"wrote {RESULTS} ({meta['seconds']} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
