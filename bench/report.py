"""The printed table, the ratios against the targets, and `bench/results/latest.json`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.memory import API_TARGET_MB, WORKER_TARGET_MB

Results = dict[str, dict[str, Any]]  # phase id -> the dict its phase function returned


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None  # None: a phase it needs did not run
    goal: str
    passed: bool | None
    ms: bool = False  # a latency in milliseconds, not a ratio
    mb: bool = False  # a size in MiB, not a ratio


def _ratio(results: Results, num: str, den: str) -> float | None:
    a, b = results.get(num, {}).get("rps"), results.get(den, {}).get("rps")
    return a / b if a is not None and b else None


def targets(results: Results) -> list[Target]:
    create = _ratio(results, "createTask", "insert")
    record = _ratio(results, "recordInfo", "select")
    repeat = _ratio(results, "recordInfoRepeat", "select")
    mcp = _ratio(results, "mcpCreate", "createTask")
    pickup = results.get("pickup", {}).get("p50_ms")
    pickup_pg = results.get("pickupPg", {}).get("p50_ms")
    return [
        Target("createTask / bare INSERT (req/s)", create, ">= 30%", _check(create, 0.30, True)),
        Target(
            "recordInfo, one task again / bare PK SELECT (req/s)",
            repeat,
            ">= 50%",
            _check(repeat, 0.50, True),
        ),
        Target(
            "recordInfo, a stream of tasks / bare PK SELECT (req/s)",
            record,
            ">= 40%",
            _check(record, 0.40, True),
        ),
        Target(
            "pickup on an idle system, median", pickup, "< 50 ms", _check(pickup, 50, False), True
        ),
        Target(
            "pickup without Redis (NOTIFY, `gengate worker`), median",
            pickup_pg,
            "< 50 ms",
            _check(pickup_pg, 50, False),
            True,
        ),
        Target(
            "MCP generate_image / REST createTask (req/s)", mcp, ">= 60%", _check(mcp, 0.60, True)
        ),
        *_memory_targets(results),
        *_tasks_targets(results),
        *_floor_context(results),
        *_callbacks_context(results),
    ]


def _memory_targets(results: Results) -> list[Target]:
    """Idle RSS of one API process (`gengate serve`, workers embedded) and of one worker."""
    if "memory" not in results:
        return []
    phase = results["memory"]
    api, worker = phase.get("api_idle_rss_mb"), phase.get("worker_idle_rss_mb")
    return [
        Target(
            "API process idle RSS (gengate serve, workers embedded)",
            api,
            f"< {API_TARGET_MB} MB",
            _check(api, API_TARGET_MB, False),
            mb=True,
        ),
        Target(
            "worker process idle RSS (gengate worker)",
            worker,
            f"< {WORKER_TARGET_MB} MB",
            _check(worker, WORKER_TARGET_MB, False),
            mb=True,
        ),
    ]


def _tasks_targets(results: Results) -> list[Target]:
    """GET /v1/tasks on 1,000,000 tasks of one key, sequential medians, and beside them the
    bare PK SELECT measured the same way in the same run."""
    pages = [
        ("tasksPage1", "GET /v1/tasks page 1 (1,000,000 tasks), median"),
        ("tasksDeep", "GET /v1/tasks page 1,001 of 100, median"),
        ("tasksFiltered", "GET /v1/tasks model + status + dates, median"),
    ]
    found = [
        Target(name, p50 := results[phase].get("p50_ms"), "< 50 ms", _check(p50, 50, False), True)
        for phase, name in pages
        if phase in results
    ]
    if "tasksSelect" in results:
        p50 = results["tasksSelect"].get("p50_ms")
        found.append(Target("context: bare PK SELECT, sequential median", p50, "-", None, True))
    return found


def _floor_context(results: Results) -> list[Target]:
    """Not targets: how far the same PK SELECT gets through each layer of the stack."""
    layers = [
        ("floorRaw", "FastAPI + raw psycopg"),
        ("floorCore", "FastAPI + SQLAlchemy Core"),
        ("floorSession", "FastAPI + SQLAlchemy session"),
        ("recordInfo", "gengate recordInfo"),
    ]
    return [
        Target(f"context: {name} / bare PK SELECT", _ratio(results, phase, "select"), "-", None)
        for phase, name in layers
        if phase in results
    ]


def _callbacks_context(results: Results) -> list[Target]:
    """Not a target: how close delivering a burst of callbacks comes to the pool's floor."""
    phase = results.get("callbacks", {})
    floor, took = phase.get("floor_seconds"), phase.get("seconds")
    if "callbacks" not in results:
        return []
    ratio = floor / took if floor and took else None
    return [Target("context: callbacks, floor / time to deliver all", ratio, "-", None)]


def _check(value: float | None, limit: float, at_least: bool) -> bool | None:
    if value is None:
        return None
    return value >= limit if at_least else value < limit


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, int | float) else "-"


def _notes(result: dict[str, Any]) -> str:
    if "error" in result:
        return "[red]FAILED[/red] " + escape(result["error"])
    return escape(str(result.get("notes", "")))


def _shown(t: Target) -> str:
    if t.value is None:
        return "-"
    if t.ms:
        return f"{t.value:.1f} ms"
    if t.mb:
        return f"{t.value:.1f} MB"
    return f"{t.value:.1%}"


def print_report(console: Console, results: Results) -> list[Target]:
    table = Table(title="gengate bench (127.0.0.1, wrk -t2 -c32, one API process unless named)")
    for column in ("phase", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors", "notes"):
        table.add_column(column, justify="left" if column in ("phase", "notes") else "right")
    for result in results.values():
        table.add_row(
            result["title"],
            _num(result.get("rps"), ",.0f"),
            _num(result.get("p50_ms"), ".2f"),
            _num(result.get("p90_ms"), ".2f"),
            _num(result.get("p99_ms"), ".2f"),
            _num(result.get("errors"), "d"),
            _notes(result),
        )
    console.print(table)

    checks = targets(results)
    ratios = Table(title="targets")
    for column in ("measure", "value", "target", "result"):
        ratios.add_column(column)
    for t in checks:
        verdict = {True: "[green]PASS[/green]", False: "[red]FAIL[/red]", None: "-"}[t.passed]
        ratios.add_row(t.name, _shown(t), t.goal, verdict)
    console.print(ratios)
    return checks


def write_json(path: Path, meta: dict[str, Any], results: Results, checks: list[Target]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**meta, "phases": results, "targets": [asdict(t) for t in checks]}
    path.write_text(json.dumps(payload, indent=2) + "\n")
