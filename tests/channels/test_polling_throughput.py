"""Polling keeps up: 2,000 tasks an upstream holds, on a fake that answers every request after
50 ms, are all polled to completion by one worker, none polled later than twice its backoff.

A task's backoff is the `poll_after_s` its last answer asked for (the channel's
`poll_interval_seconds` for ModelArk), counted from the moment that answer came: the worker
cannot poll sooner than that, so "on time" is a gap of one backoff (plus the worker's own
bookkeeping) between an answer and the next poll, and the test allows two. The tasks start as
if a burst of submits had each been answered with `Pending` one backoff before the test: all
due at once, so the first round must also be done within a backoff.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update
from sqlmodel import col

from app.accounts.models import Account
from app.core.config import Settings
from app.core.ids import new_id, now_ms
from app.credits.models import LedgerEntry, LedgerKind
from app.jobs.models import Task, TaskStatus
from app.media.models import MediaFile
from app.providers.local_video import render_video
from app.runtime import Runtime
from tests.channels.support import VIDEO, channel_app, channel_file, modelark_channel
from tests.conftest import make_customer
from tests.fakes.modelark import Script
from tests.fakes.slow_modelark import Poll, SlowModelArk, running_slow_modelark
from tests.support.apps import eventually, runtime_of, worker_running

KEY = "ark-test-key-0123456789"
TASKS = 2000
LATENCY_S = 0.05
BACKOFF_S = 1.0
# Answered queued, running, then succeeded: three polls each.
SCRIPT = Script(queued_polls=1, running_polls=1)
POLLS = 3
CHANNEL = "ark"


@pytest.fixture(autouse=True)
def _ark_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_ARK_KEY", KEY)


@pytest.fixture
def slow_ark() -> Iterator[SlowModelArk]:
    clip = render_video("held", width=32, height=32, duration_s=0.5, fps=8)
    script = Script(queued_polls=1, running_polls=1, video=clip)
    with running_slow_modelark(KEY, delay_s=LATENCY_S, script=script) as fake:
        yield fake


async def _hold_tasks(runtime: Runtime, fake: SlowModelArk) -> dict[str, int]:
    """Put TASKS tasks in the state a Pending submit leaves them in (generating, sent to the
    channel, the upstream id recorded, due for a poll, their credits held); returns each
    task's due time by upstream id."""
    model = runtime.catalog.get(VIDEO)
    normalized = model.normalize({"prompt": "a lighthouse at dusk"})
    price = model.price(normalized)
    customer = await make_customer(runtime, credits=TASKS * price)
    upstream_ids = fake.hold(TASKS)
    now = now_ms()
    tasks: list[dict[str, Any]] = []
    holds: list[dict[str, Any]] = []
    for index, upstream_id in enumerate(upstream_ids):
        task_id = new_id("task")
        tasks.append(
            {
                "id": task_id,
                "account_id": customer.account.id,
                "api_key_id": _key_id(customer.account.id),
                "model": model.id,
                "media_type": model.media_type,
                "input_json": json.dumps(normalized, separators=(",", ":")),
                "status": TaskStatus.GENERATING.value,
                "progress": 0,
                "price": price,
                "provider": model.provider,
                "channel": CHANNEL,
                "upstream_id": upstream_id,
                "attempts": 1,
                "polls": 0,
                "due_at": now,
                "deadline_at": now + model.timeout_seconds * 1000,
                "created_at": now - int(BACKOFF_S * 1000),
                "started_at": now - int(BACKOFF_S * 1000),
                "updated_at": now,
            }
        )
        holds.append(
            {
                "account_id": customer.account.id,
                "kind": LedgerKind.HOLD.value,
                "amount": -price,
                "balance_after": (TASKS - index - 1) * price,
                "task_id": task_id,
                "created_at": now,
            }
        )
    async with runtime.sessions() as session:
        key_id = await _only_key(session, customer.account.id)
        for task in tasks:
            task["api_key_id"] = key_id
        await session.execute(insert(Task), tasks)
        await session.execute(insert(LedgerEntry), holds)
        await session.execute(
            update(Account).where(col(Account.id) == customer.account.id).values(balance=0)
        )
        await session.commit()
    return {upstream_id: now for upstream_id in upstream_ids}


def _key_id(_account_id: str) -> str:
    return ""  # filled in from the database before the insert


async def _only_key(session: Any, account_id: str) -> str:
    from app.keys.models import ApiKey

    key_id: str = (
        await session.execute(select(col(ApiKey.id)).where(col(ApiKey.account_id) == account_id))
    ).scalar_one()
    return key_id


async def _count(runtime: Runtime, *where: Any) -> int:
    async with runtime.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Task).where(*where)) or 0)


def _late_polls(polls: dict[str, list[Poll]], due_at_ms: dict[str, int]) -> list[str]:
    """Every poll that came later than twice its backoff after the answer before it."""
    late: list[str] = []
    for upstream_id, due_ms in due_at_ms.items():
        # The first poll's "answer before" is the submit's, one backoff before it was due.
        answered_at = due_ms / 1000 - BACKOFF_S
        for number, poll in enumerate(polls.get(upstream_id, []), start=1):
            waited = poll.arrived_at - answered_at
            if waited > 2 * BACKOFF_S:
                late.append(f"{upstream_id} poll {number}: {waited:.2f} s after the answer")
            answered_at = poll.answered_at
    return late


async def test_two_thousand_held_tasks_are_polled_to_completion_on_time(
    settings: Settings, tmp_path: Path, slow_ark: SlowModelArk
) -> None:
    path = channel_file(
        tmp_path / "channels.toml",
        modelark_channel(CHANNEL, slow_ark.base_url, poll_interval_seconds=BACKOFF_S),
    )
    async with channel_app(settings, path, workers_in_process=False) as (app, _client):
        runtime = runtime_of(app)
        due_at_ms = await _hold_tasks(runtime, slow_ark)
        started = time.monotonic()
        async with worker_running(runtime):

            async def all_finished() -> bool:
                return await _count(runtime, col(Task.status).in_(["queued", "generating"])) == 0

            await eventually(all_finished, within_s=45, interval_s=0.25, what="every task")
        took = time.monotonic() - started
        succeeded = await _count(runtime, col(Task.status) == TaskStatus.SUCCESS.value)
        async with runtime.sessions() as session:
            settled = await session.scalar(
                select(func.count())
                .select_from(LedgerEntry)
                .where(col(LedgerEntry.kind) == LedgerKind.SETTLE.value)
            )
            stored = await session.scalar(select(func.count()).select_from(MediaFile))
    polls = dict(slow_ark.polls)
    print(f"\n{TASKS} tasks, {sum(len(p) for p in polls.values())} polls in {took:.1f} s")
    assert (succeeded, settled, stored) == (TASKS, TASKS, TASKS)
    # Each task was polled exactly as often as its upstream needed: none twice at once.
    assert sorted({len(p) for p in polls.values()}) == [POLLS]
    assert len(polls) == TASKS
    late = _late_polls(polls, due_at_ms)
    assert not late, f"{len(late)} polls late, e.g. {late[:5]}"
