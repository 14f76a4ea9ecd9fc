"""The bench's own PostgreSQL databases: reset, sample ids, watch one task."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
# Every database the bench makes (and drops) is named from this prefix, so a bench can run
# beside another one, or beside a test run, on the same PostgreSQL.
DATABASE_PREFIX = os.environ.get("BENCH_DATABASE_PREFIX") or "gengate_bench"
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,39}")
POLL_INTERVAL_S = 0.005  # resolution of the wait only: pickup comes from the row's own times


def check_prefix() -> str | None:
    """Why BENCH_DATABASE_PREFIX cannot name databases, or None when it can."""
    if _NAME.fullmatch(DATABASE_PREFIX):
        return None
    return (
        f"BENCH_DATABASE_PREFIX must be 1-40 lowercase letters, digits or underscores, not "
        f"starting with a digit: got {DATABASE_PREFIX!r}"
    )


def database_name(stage: str = "") -> str:
    """The database of one stage: the prefix, then `_<stage>` (the main one: the prefix)."""
    return f"{DATABASE_PREFIX}_{stage}" if stage else DATABASE_PREFIX


def url(dbname: str) -> str:
    return f"{PG_SERVER}/{dbname}"


def reset_database(dbname: str) -> str:
    """Drop and create `dbname`; return its URL."""
    with psycopg.connect(url("postgres"), autocommit=True) as conn:
        name = sql.Identifier(dbname)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    return url(dbname)


def write_sample_ids(db_url: str, table: str, path: Path, limit: int = 5000) -> int:
    """Write up to `limit` random ids of `table` to `path`, one a line; return how many."""
    query = sql.SQL("SELECT id FROM {} ORDER BY random() LIMIT %s").format(sql.Identifier(table))
    with psycopg.connect(db_url) as conn:
        ids = [row[0] for row in conn.execute(query, (limit,))]
    path.write_text("".join(f"{i}\n" for i in ids))
    return len(ids)


@dataclass(frozen=True)
class TaskTimes:
    status: str
    created_at: int
    started_at: int | None
    completed_at: int | None


def _times(conn: psycopg.Connection, task_id: str) -> TaskTimes | None:
    row = conn.execute(
        "SELECT status, created_at, started_at, completed_at FROM task WHERE id = %s",
        (task_id,),
    ).fetchone()
    return TaskTimes(*row) if row else None


def wait_task(
    conn: psycopg.Connection, task_id: str, *, finished: bool, timeout: float
) -> TaskTimes:
    """Poll until the task has started (or, with `finished`, reached success/fail)."""
    deadline = time.monotonic() + timeout
    while True:
        times = _times(conn, task_id)
        if times is not None:
            if finished and times.status in ("success", "fail"):
                return times
            if not finished and times.started_at is not None:
                return times
        if time.monotonic() > deadline:
            what = "finish" if finished else "start"
            raise TimeoutError(f"task {task_id} did not {what} within {timeout:.0f} s: {times}")
        time.sleep(POLL_INTERVAL_S)
