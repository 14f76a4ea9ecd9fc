"""A worker SIGKILLed after the upstream took the job and before we recorded it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from app.channels.attempts import list_attempts
from app.core.config import Settings
from app.jobs.models import Task
from app.runtime import Runtime
from tests.channels.support import VIDEO, channel_app, channel_file, modelark_channel
from tests.conftest import make_customer
from tests.fakes.modelark import Canned, running_modelark
from tests.support.apps import eventually, runtime_of, wait_for_terminal
from tests.support.server import LiveServer, start_server

KEY = "ark-test-key-0123456789"


def _kill(worker: LiveServer) -> None:
    os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)


async def _channel_of(runtime: Runtime, task_id: str) -> str | None:
    async with runtime.sessions() as session:
        task = await session.get(Task, task_id)
        return task.channel if task is not None else None


async def test_a_job_the_upstream_may_hold_is_never_submitted_twice(
    settings: Settings,
    settings_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_ARK_KEY", KEY)
    with running_modelark(KEY) as ark:
        # The upstream takes the job, but its answer never reaches the worker.
        ark.fail_next(Canned(hang=True, method="POST"))
        path = channel_file(tmp_path / "channels.toml", modelark_channel("ark", ark.base_url))
        env = {
            **settings_env,
            "TEST_ARK_KEY": KEY,
            "GENGATE_CHANNELS_PATH": str(path),
            "GENGATE_ALLOW_PRIVATE_URLS": "true",
            "GENGATE_LEASE_SECONDS": "1",
        }
        overrides = {"workers_in_process": False}
        async with channel_app(settings, path, **overrides) as (app, client):
            runtime = runtime_of(app)
            customer = await make_customer(runtime)
            before = customer.account.balance
            response = await client.post(
                "/api/v1/jobs/createTask",
                json={"model": VIDEO, "input": {"prompt": "a lighthouse"}},
                headers=customer.headers,
            )
            task_id = response.json()["data"]["taskId"]
            workers = [start_server(env, tmp_path, args=["worker"], ready_path=None)]
            try:
                await eventually(
                    lambda: _as_true(ark.on("POST")), what="the upstream to receive the job"
                )
                assert await _channel_of(runtime, task_id) == "ark"  # marked before sending
                _kill(workers[0])
                workers.append(start_server(env, tmp_path, args=["worker"], ready_path=None))
                data = await wait_for_terminal(client, customer.headers, task_id)
            finally:
                for worker in workers:
                    worker.stop()
            assert data["failCode"] == "provider_error", data
            assert "did not send it again" in data["failMsg"]
            assert len(ark.on("POST")) == 1
            async with runtime.sessions() as session:
                attempts = await list_attempts(session, task_id=task_id)
                account = await session.get(type(customer.account), customer.account.id)
            assert account is not None and account.balance == before
            assert [(a.channel, a.outcome) for a in attempts] == [("ark", "interrupted")]


async def _as_true(value: object) -> bool:
    return bool(value)
