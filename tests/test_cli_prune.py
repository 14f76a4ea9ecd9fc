"""`gengate prune`: a dry run counts what would go, a run deletes exactly that; both print
the counts (one JSON object with `--json`); a retention under a day is refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from typer.testing import CliRunner

from app.cli import app
from app.core.config import Settings
from app.core.ids import now_ms
from app.maintenance.jobs import claim_job
from app.maintenance.pruner import LEASE_MS, RETENTION_JOB
from app.maintenance.retention import DAY_MS
from app.runtime import Runtime
from tests.conftest import make_customer
from tests.support.apps import running_app, runtime_of
from tests.support.retention import Books, age_task, books_of, finished_task

runner = CliRunner()
T = TypeVar("T")
COUNTS = ("tasks", "files", "bytes", "deliveries", "request_groups")


def _json(*args: str) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, ["--json", *args])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON object, got: {result.stdout!r}"
    return json.loads(lines[0])  # type: ignore[no-any-return]


def _error(*args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = runner.invoke(app, ["--json", *args])
    assert result.stderr == ""
    (line,) = result.stdout.strip().splitlines()
    return result.exit_code, json.loads(line)


async def _old_and_new_tasks(settings: Settings) -> str:
    """Two tasks finished 10 days ago and one finished now; the account's id."""
    async with running_app(settings) as (application, client):
        runtime = runtime_of(application)
        customer = await make_customer(runtime)
        for prompt in ("old one", "old two"):
            task_id = await finished_task(client, customer, prompt)
            await age_task(runtime, task_id, finished_ms_ago=10 * DAY_MS)
        await finished_task(client, customer, "new")
        return customer.account.id


async def _using_runtime(settings: Settings, fn: Callable[[Runtime], Awaitable[T]]) -> T:
    runtime = await Runtime.start(settings)
    try:
        return await fn(runtime)
    finally:
        await runtime.close()


def _books(settings: Settings, account_id: str) -> Books:
    return asyncio.run(_using_runtime(settings, lambda runtime: books_of(runtime, account_id)))


def test_dry_run_then_prune(settings: Settings) -> None:
    account_id = asyncio.run(_old_and_new_tasks(settings))
    books = _books(settings, account_id)

    planned = _json("prune", "--dry-run", "--older-than-days", "7")
    assert planned["dry_run"] is True and planned["older_than_days"] == 7
    assert (planned["tasks"], planned["files"], planned["deliveries"]) == (2, 2, 0)
    assert planned["bytes"] > 0 and planned["complete"] is True
    assert _json("prune", "--dry-run", "--older-than-days", "7") | {"cutoff": 0} == planned | {
        "cutoff": 0
    }

    done = _json("prune", "--older-than-days", "7")
    assert done["dry_run"] is False and done["complete"] is True
    assert {k: done[k] for k in COUNTS} == {k: planned[k] for k in COUNTS}
    assert all(
        v == 0 for v in (_json("prune", "--dry-run", "--older-than-days", "7")[k] for k in COUNTS)
    )
    assert _books(settings, account_id) == books


def test_the_setting_is_the_default_and_people_get_a_line(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_old_and_new_tasks(settings))
    monkeypatch.setenv("GENGATE_RETENTION_DAYS", "30")
    nothing = runner.invoke(app, ["prune", "--dry-run"])
    assert nothing.exit_code == 0 and nothing.stderr == "", nothing.output
    assert nothing.stdout.startswith("would delete 0 tasks, 0 files (0 bytes), 0 callback")
    monkeypatch.setenv("GENGATE_RETENTION_DAYS", "5")
    done = runner.invoke(app, ["prune"])
    assert done.exit_code == 0 and done.stderr == "", done.output
    assert done.stdout.startswith("deleted 2 tasks, 2 files (")


@pytest.mark.parametrize(
    ("env", "args", "text", "field"),
    [
        (
            {},
            ["prune", "--older-than-days", "0"],
            "--older-than-days must be at least 1",
            "older_than_days",
        ),
        ({}, ["prune", "--dry-run"], "retention is off", "older_than_days"),
        (
            {"GENGATE_RETENTION_DAYS": "0"},
            ["prune", "--dry-run"],
            "invalid settings: GENGATE_RETENTION_DAYS",
            None,
        ),
    ],
)
def test_refusals(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    args: list[str],
    text: str,
    field: str | None,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, payload = _error(*args)
    assert code != 0 and text in payload["error"] and payload["field"] == field, payload


def test_a_prune_a_worker_is_running_is_refused(settings: Settings) -> None:
    async def held_by_a_worker(runtime: Runtime) -> None:
        async with runtime.sessions() as session:
            claimed = await claim_job(
                session,
                name=RETENTION_JOB,
                owner="worker",
                now=now_ms(),
                lease_ms=LEASE_MS,
                only_if_due=True,
            )
            await session.commit()
        assert claimed

    asyncio.run(_using_runtime(settings, held_by_a_worker))
    code, payload = _error("prune", "--older-than-days", "1")
    assert code == 1 and "already running" in payload["error"]
    assert _json("prune", "--dry-run", "--older-than-days", "1")["tasks"] == 0  # reads only
