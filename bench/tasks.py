"""The v1 tasks stage: `GET /v1/tasks` on one key with 1,000,000 tasks.

The tasks are written straight into PostgreSQL (INSERT ... SELECT over generate_series, on
two connections), for the key `gengate.prepare` made: five models, all four statuses, a
year of `created_at`, 1 to 4 result files on one task in 20; then VACUUM ANALYZE, the state
autovacuum leaves a long-lived table in: the pages read the history's indexes alone, which
needs the visibility map (without it, page 1,001 of 100 visits 100,100 heap rows). What
counts: the median latency of sequential requests (one at a time, after a warm-up) for
page 1, page 1,001 of 100, and a filtered page (model + status + a date range), beside the
bare PK SELECT (bench.baseline's `GET /select`, started for the purpose on a table of the
same database) measured the same way in the same run. Every answer is checked: 200, the
page's size, and a `total` that agrees with a count made in SQL.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from bench import db, gengate
from bench.gengate import Gengate
from bench.servers import BenchError, Server, running

DB_NAME = db.database_name("tasks")
TASKS = 1_000_000
HISTORY_DAYS = 365
MODELS = [  # (model, media type, price), in the proportions of the list: images first
    ("gpt-image-2-text-to-image", "image", 10),
    ("gpt-image-2-text-to-image", "image", 10),
    ("gpt-image-2-image-to-image", "image", 10),
    ("image-upscale", "image", 4),
    ("seedance-2.0-text-to-video", "video", 40),
    ("seedance-2.0-image-to-video", "video", 40),
]
BASELINE_ROWS = 100_000
SEED_CONNECTIONS = 2
WARMUP = 20
SAMPLES = 200
TASKS_PATH = "/v1/tasks"
FILTER_MODEL = "gpt-image-2-text-to-image"
FILTER_STATUS = 2  # completed
# A quarter, months before the newest tasks: the page and the count both seek into the
# history, and more than TOTAL_EXACT_LIMIT (10,000) tasks match, so the count is capped.
FILTER_ENDS_DAYS_AGO, FILTER_DAYS = 120, 91
# The rule: `total` is exact up to 10,000 matching tasks, a lower bound past that.
EXACT_TOTAL_UP_TO = 10_000
ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def serve_api(work: Path, redis_prefix: str, log_dir: Path) -> Iterator[tuple[Server, Gengate]]:
    """gengate's API without workers, on a fresh database of its own, dropped afterwards
    (it takes more than 1 GiB)."""
    var_dir = work / "gengate-tasks"
    var_dir.mkdir()
    prepared = gengate.prepare(gengate.make_env(db.reset_database(DB_NAME), var_dir, redis_prefix))
    env = prepared.with_workers(False)
    try:
        with running("gengate-tasks", "app.main:create_app", env, log_dir, factory=True) as server:
            yield server, prepared
    finally:
        with psycopg.connect(db.url("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB_NAME))
            )


# --- seeding -----------------------------------------------------------------------------


def seed(gg: Gengate) -> dict[str, Any]:
    """TASKS tasks of the key, their result files, the baseline's rows; then VACUUM ANALYZE."""
    db_url = gg.env["GENGATE_DATABASE_URL"]
    now = int(time.time() * 1000)
    first = now - HISTORY_DAYS * 86_400_000
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        row = conn.execute("SELECT id, account_id FROM api_key LIMIT 1").fetchone()
        if row is None:
            raise BenchError("no API key in the tasks database")
        key_id, account_id = row
        started = time.monotonic()
        params = _tasks_params(key_id, account_id, first, now)
        with ThreadPoolExecutor(SEED_CONNECTIONS) as pool:
            list(pool.map(lambda part: _insert_tasks(db_url, params, part), _parts()))
        tasks_s = time.monotonic() - started
        conn.execute(_MEDIA_SQL, {"account": account_id})
        media_s = time.monotonic() - started - tasks_s
        vacuum_started = time.monotonic()
        conn.execute("VACUUM ANALYZE task")
        conn.execute("VACUUM ANALYZE media_file")
        vacuum_s = time.monotonic() - vacuum_started
        seconds = time.monotonic() - started
        _seed_baseline(conn)
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM task), (SELECT count(*) FROM media_file),"
            " pg_total_relation_size('task')"
        ).fetchone()
    assert counts is not None
    tasks, files, task_bytes = counts
    if tasks != TASKS:
        raise BenchError(f"seeded {tasks} tasks, wanted {TASKS}")
    notes = (
        f"{tasks:,} tasks + {files:,} result files in {seconds:.1f} s (tasks {tasks_s:.1f} s, "
        f"files {media_s:.1f} s, VACUUM ANALYZE {vacuum_s:.1f} s); task table with its "
        f"indexes {task_bytes / 2**20:,.0f} MiB; {os.cpu_count()} CPUs"
    )
    return {
        "seconds": round(seconds, 1),
        "insert_seconds": round(tasks_s, 1),
        "media_seconds": round(media_s, 1),
        "vacuum_seconds": round(vacuum_s, 1),
        "tasks": tasks,
        "result_files": files,
        "task_mib": round(task_bytes / 2**20),
        "notes": notes,
    }


def _parts() -> list[tuple[int, int]]:
    """TASKS split in SEED_CONNECTIONS ranges of g, each inserted on a connection of its own."""
    bounds = [1 + TASKS * i // SEED_CONNECTIONS for i in range(SEED_CONNECTIONS + 1)]
    return [(lo, hi - 1) for lo, hi in pairwise(bounds)]


def _insert_tasks(db_url: str, params: dict[str, Any], part: tuple[int, int]) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        # The rows reference the one account and key that exist: skip the per-row foreign
        # key triggers, as a restore does.
        conn.execute("SET session_replication_role = replica")
        conn.execute(_TASKS_SQL, {**params, "lo": part[0], "hi": part[1]})


# The task ids sort as new_id's do (12 hex digits of the creation ms, then 16 more), so id
# order is creation order, as in a real history. Status by g % 20: 80 % completed, 10 %
# failed, 5 % pending, 5 % processing.
_TASKS_SQL = """
INSERT INTO task (id, account_id, api_key_id, model, media_type, input_json, status, progress,
    price, fail_code, fail_msg, provider, channel, upstream_id, attempts, polls, due_at,
    deadline_at, created_at, updated_at, started_at, completed_at)
SELECT 'task_' || lpad(to_hex(created), 12, '0') || lpad(to_hex(g), 16, '0'),
    %(account)s, %(key)s, (%(models)s::text[])[m], (%(media)s::text[])[m],
    '{"prompt": "a benchmark task number ' || g || '", "aspect_ratio": "1:1"}',
    status, CASE WHEN done THEN 100 ELSE 0 END, (%(prices)s::bigint[])[m],
    CASE WHEN status = 'fail' THEN 'provider_error' END,
    CASE WHEN status = 'fail' THEN 'the upstream answered 500' END,
    'local', 'local', CASE WHEN status <> 'queued' THEN 'up-' || g END,
    CASE WHEN status = 'queued' THEN 0 ELSE 1 END, 0,
    created, created + 86400000, created,
    created + CASE WHEN done THEN 30000 ELSE 0 END,
    CASE WHEN status <> 'queued' THEN created + 1000 END,
    CASE WHEN done THEN created + 30000 END
FROM (
    SELECT g, created, 1 + (g / 20) %% %(model_count)s AS m, status,
        status IN ('success', 'fail') AS done
    FROM (
        SELECT g, %(first)s::bigint + (g::bigint * %(span)s::bigint) / %(tasks)s AS created,
            CASE g %% 20 WHEN 0 THEN 'queued' WHEN 1 THEN 'generating'
                WHEN 2 THEN 'fail' WHEN 3 THEN 'fail' ELSE 'success' END AS status
        FROM generate_series(%(lo)s, %(hi)s) AS g
    ) AS s
) AS t
"""


def _tasks_params(key_id: str, account_id: str, first: int, now: int) -> dict[str, Any]:
    return {
        "account": account_id,
        "key": key_id,
        "first": first,
        "span": now - first,
        "tasks": TASKS,
        "models": [m for m, _, _ in MODELS],
        "media": [t for _, t, _ in MODELS],
        "prices": [p for _, _, p in MODELS],
        "model_count": len(MODELS),
    }


# 1 to 4 files on every task whose g % 20 is 4 (a completed one): one task in each run of
# 20, so every page shows some. The task's g is the last 16 hex digits of its id.
_MEDIA_SQL = """
INSERT INTO media_file (id, task_id, account_id, kind, position, path, content_type,
    size_bytes, sha256, width, height, duration_ms, created_at)
SELECT 'media_' || substr(t.id, 6, 12) || lpad(to_hex(t.g), 12, '0') || lpad(to_hex(p), 4, '0'),
    t.id, %(account)s, 'result', p,
    'results/' || t.id || '/' || p || CASE WHEN t.video THEN '.mp4' ELSE '.png' END,
    CASE WHEN t.video THEN 'video/mp4' ELSE 'image/png' END,
    1048576, md5(t.id || p) || md5(p || t.id), 1024, 1024,
    CASE WHEN t.video THEN 5000 END, t.completed_at
FROM (
    SELECT id, completed_at, media_type = 'video' AS video,
        ('x' || right(id, 16))::bit(64)::bigint AS g
    FROM task
) AS t, generate_series(0, 3) AS p
WHERE t.g %% 20 = 4 AND p <= (t.g / 20) %% 4
"""


def _seed_baseline(conn: psycopg.Connection) -> None:
    """BASELINE_ROWS rows for bench.baseline's PK SELECT, in this database."""
    body = json.dumps(gengate.CREATE_BODY)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS bench_item (id text PRIMARY KEY, payload text NOT NULL,"
        " created_at bigint NOT NULL)"
    )
    conn.execute(
        "INSERT INTO bench_item (id, payload, created_at)"
        " SELECT md5(g::text), %s, g FROM generate_series(1, %s) AS g",
        (body, BASELINE_ROWS),
    )
    conn.execute("VACUUM ANALYZE bench_item")


# --- the measured requests ---------------------------------------------------------------


def measure_baseline(gg: Gengate, log_dir: Path) -> dict[str, Any]:
    """bench.baseline's PK SELECT on this database's bench_item, one request at a time."""
    db_url = gg.env["GENGATE_DATABASE_URL"]
    with psycopg.connect(db_url) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM bench_item ORDER BY random() LIMIT 50")]
    if not ids:
        raise BenchError("no rows in bench_item (did the seed phase run?)")
    env = {**os.environ, "BENCH_DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)}
    with (
        running("baseline-tasks", "bench.baseline:app", env, log_dir) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):

        def one(i: int) -> httpx.Response:
            return client.get("/select", params={"id": ids[i % len(ids)]})

        return _sequential(one, _check_status)


def measure_page(gg: Gengate, server: Server, params: dict[str, Any]) -> dict[str, Any]:
    """GET /v1/tasks with `params`, one request at a time; every answer checked against SQL."""
    expected = _expected_page(gg, params)
    with httpx.Client(base_url=server.url, headers=gg.auth, timeout=30) as client:
        result = _sequential(
            lambda _: client.get(TASKS_PATH, params=params),
            lambda answer: _check_page(answer, expected),
        )
    shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "no parameters"
    return {**result, "notes": f"{shown}; {result['notes']}; {expected.describe()}"}


def _sequential(
    request: Callable[[int], httpx.Response], check: Callable[[httpx.Response], None]
) -> dict[str, Any]:
    """WARMUP then SAMPLES requests one after the other; each answer goes through `check`."""
    times: list[float] = []
    for i in range(WARMUP + SAMPLES):
        started = time.perf_counter()
        answer = request(i)
        elapsed_ms = (time.perf_counter() - started) * 1000
        check(answer)
        if i >= WARMUP:
            times.append(elapsed_ms)
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    p50 = statistics.median(times)
    return {
        "p50_ms": round(p50, 2),
        "p90_ms": round(cuts[89], 2),
        "p95_ms": round(cuts[94], 2),
        "p99_ms": round(cuts[98], 2),
        "mean_ms": round(statistics.fmean(times), 2),
        "samples": len(times),
        "errors": 0,
        "notes": f"sequential, n={len(times)} after {WARMUP}; p95 {cuts[94]:.1f} ms",
    }


def _check_status(answer: httpx.Response) -> None:
    if answer.status_code != 200:
        what = f"{answer.request.method} {answer.request.url}"
        raise BenchError(f"{what} answered {answer.status_code}: {answer.text[:300]}")


@dataclass(frozen=True)
class _Expected:
    """A page as SQL sees it: its task ids, and how many tasks match the filter."""

    ids: list[str]
    matching: int
    page: int
    size: int
    with_assets: int

    def describe(self) -> str:
        return (
            f"{self.matching:,} tasks match, the page holds {len(self.ids)} "
            f"({self.with_assets} with result files)"
        )


def _expected_page(gg: Gengate, params: dict[str, Any]) -> _Expected:
    where = ["api_key_id = (SELECT id FROM api_key LIMIT 1)"]
    args: dict[str, Any] = {}
    if "model" in params:
        where.append("model = %(model)s")
        args["model"] = params["model"]
    if "status" in params:
        where.append("status = %(status)s")
        args["status"] = ["queued", "generating", "success", "fail"][params["status"]]
    if "start" in params:
        where.append("created_at >= %(start)s")
        args["start"] = _day_ms(params["start"])
    if "end" in params:
        where.append("created_at < %(end)s")
        args["end"] = _day_ms(params["end"]) + 86_400_000
    page, size = int(params.get("page", 1)), int(params.get("pageSize", 20))
    offset = (page - 1) * size
    condition = " AND ".join(where)
    with psycopg.connect(gg.env["GENGATE_DATABASE_URL"]) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                f"SELECT id FROM task WHERE {condition} ORDER BY created_at DESC, id DESC"
                f" OFFSET {offset} LIMIT {size}",
                args,
            )
        ]
        row = conn.execute(f"SELECT count(*) FROM task WHERE {condition}", args).fetchone()
        files = conn.execute(
            "SELECT count(DISTINCT task_id) FROM media_file WHERE task_id = ANY(%s)", (ids,)
        ).fetchone()
    assert row is not None and files is not None
    if len(ids) != size:
        raise BenchError(f"the seeded tasks fill {len(ids)} of the {size} places on {params}")
    return _Expected(ids, int(row[0]), page, size, int(files[0]))


def _check_page(answer: httpx.Response, expected: _Expected) -> None:
    """200, the page SQL gives, and a total that is exact or a lower bound that says so."""
    _check_status(answer)
    body = answer.json()
    ids = [t["id"] for t in body["tasks"]]
    with_assets = sum(1 for t in body["tasks"] if t["response"]["assets"])
    total, estimate = body["total"], body.get("totalIsEstimate", False)
    problems = []
    if ids != expected.ids:
        problems.append(f"{len(ids)} tasks, not the {len(expected.ids)} SQL gives")
    if with_assets != expected.with_assets:
        problems.append(f"{with_assets} with assets, SQL says {expected.with_assets}")
    if (body["page"], body["pageSize"]) != (expected.page, expected.size):
        problems.append(f"page {body['page']} of {body['pageSize']}, not as asked")
    if estimate and expected.matching <= EXACT_TOTAL_UP_TO:
        problems.append(f"total given as an estimate, but only {expected.matching} match")
    shown = (expected.page - 1) * expected.size + len(ids)
    if estimate and not shown <= total <= expected.matching:
        problems.append(f"estimated total {total} outside [shown, {expected.matching}]")
    if not estimate and total != expected.matching:
        problems.append(f"total {total} given as exact, SQL counts {expected.matching}")
    if problems:
        raise BenchError(f"GET {answer.request.url}: " + "; ".join(problems))


def _day_ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


def filtered_params() -> dict[str, Any]:
    """model + status + a quarter that ended four months ago (the history is a year long)."""
    end = datetime.now(UTC).date() - timedelta(days=FILTER_ENDS_DAYS_AGO)
    start = end - timedelta(days=FILTER_DAYS - 1)
    return {
        "model": FILTER_MODEL,
        "status": FILTER_STATUS,
        "start": start.isoformat(),
        "end": end.isoformat(),
    }
