"""One gengate behind another: a `kie` channel whose upstream is a real second gengate.

The upstream runs in its own process on its own SQLite database (two gengates sharing one
database would share one queue). A relay between the two can hold the upstream's answers,
which is how a worker is killed after the upstream took the job and before we recorded it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from app.channels.attempts import list_attempts
from app.core.config import Settings
from app.db.migrate import upgrade_database
from app.jobs.models import Task
from app.runtime import Runtime
from tests.channels.support import IMAGE, channel_app, channel_file
from tests.conftest import Customer, make_customer
from tests.support.apps import eventually, runtime_of, wait_for_terminal
from tests.support.server import LiveServer, start_server


@dataclass
class Upstream:
    server: LiveServer
    key: str
    database: Path

    def tasks(self) -> int:
        with sqlite3.connect(self.database) as db:
            return int(db.execute("SELECT count(*) FROM task").fetchone()[0])


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[Upstream]:
    workdir = tmp_path / "upstream"
    workdir.mkdir()
    database = workdir / "upstream.db"
    url = f"sqlite+aiosqlite:///{database}"
    await asyncio.to_thread(upgrade_database, url)
    env = {
        "GENGATE_ENV": "test",
        "GENGATE_DATABASE_URL": url,
        "GENGATE_VAR_DIR": str(workdir / "var"),
        "GENGATE_SIGNING_SECRET": "upstream-secret-" + uuid.uuid4().hex,
        "GENGATE_ALLOWED_HOSTS": '["127.0.0.1", "localhost"]',
        "GENGATE_SCAN_INTERVAL_SECONDS": "0.2",
    }
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        env="test",
        database_url=url,
        var_dir=workdir / "var",
        signing_secret=env["GENGATE_SIGNING_SECRET"],
        redis_url=None,
    )
    runtime = await Runtime.start(settings)
    try:
        customer = await make_customer(runtime, credits=100_000)
    finally:
        await runtime.close()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GENGATE_")}
    server = start_server({**clean, **env}, workdir)
    try:
        yield Upstream(server, customer.key, database)
    finally:
        server.stop()


class Relay:
    """Forwards requests to the upstream; while `holding`, keeps each answer back (the
    upstream has done the work, the caller hears nothing)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.base_url = ""
        self.holding = threading.Event()
        self.released = threading.Event()
        self.forwarded: list[str] = []


@contextmanager
def relaying(target: str) -> Iterator[Relay]:
    relay = Relay(target)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            answer = httpx.request(
                self.command, relay.target + self.path, headers=headers, content=body
            )
            relay.forwarded.append(f"{self.command} {self.path.split('?')[0]}")
            if relay.holding.is_set():
                relay.released.wait(30)
                return
            self.send_response(answer.status_code)
            self.send_header("Content-Type", answer.headers.get("content-type", ""))
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = _serve

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    relay.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield relay
    finally:
        relay.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def kie_channel(base_url: str) -> dict[str, object]:
    return {
        "name": "upstream-gengate",
        "adapter": "kie",
        "base_url": base_url,
        "api_key_env": "TEST_UPSTREAM_KEY",
        "models": [IMAGE],
        "idempotent_submit": True,
        "poll_interval_seconds": 0.1,
    }


async def _create(client: httpx.AsyncClient, customer: Customer) -> str:
    response = await client.post(
        "/api/v1/jobs/createTask",
        json={"model": IMAGE, "input": {"prompt": "a lighthouse", "quality": "low"}},
        headers=customer.headers,
    )
    assert response.status_code == 200, response.text
    task_id: str = response.json()["data"]["taskId"]
    return task_id


async def test_a_task_runs_on_a_second_gengate_and_is_served_by_ours(
    settings: Settings, tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_UPSTREAM_KEY", upstream.key)
    path = channel_file(tmp_path / "channels.toml", kie_channel(upstream.server.base_url))
    async with channel_app(settings, path) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime)
        task_id = await _create(client, customer)
        data = await wait_for_terminal(client, customer.headers, task_id)
        assert data["state"] == "success", data
        url = httpx.URL(data["resultJson"].split('"')[3])
        assert url.host == "testserver"  # our own media, not the upstream's
        image = await client.get(str(url))
        assert image.content[:8] == b"\x89PNG\r\n\x1a\n"
        async with runtime.sessions() as session:
            attempts = [(a.kind, a.outcome) for a in await list_attempts(session, task_id=task_id)]
            task = await session.get(Task, task_id)
        assert attempts == [("submit", "accepted"), ("poll", "succeeded")]
        assert task is not None and task.upstream_cost is not None
        assert '"unit": "credits"' in task.upstream_cost
    assert upstream.tasks() == 1


def _kill(worker: LiveServer) -> None:
    os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)


async def test_a_worker_killed_before_recording_the_upstream_job_does_not_create_it_twice(
    settings: Settings,
    settings_env: dict[str, str],
    tmp_path: Path,
    upstream: Upstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_UPSTREAM_KEY", upstream.key)
    with relaying(upstream.server.base_url) as relay:
        path = channel_file(tmp_path / "channels.toml", kie_channel(relay.base_url))
        env = {
            **settings_env,
            "TEST_UPSTREAM_KEY": upstream.key,
            "GENGATE_CHANNELS_PATH": str(path),
            "GENGATE_ALLOW_PRIVATE_URLS": "true",
            "GENGATE_LEASE_SECONDS": "1",
        }
        relay.holding.set()  # the upstream creates the task; its answer never comes back
        async with channel_app(settings, path, workers_in_process=False) as (app, client):
            customer = await make_customer(runtime_of(app))
            task_id = await _create(client, customer)
            workers = [start_server(env, tmp_path, args=["worker"], ready_path=None)]
            try:
                await eventually(
                    lambda: _as_true(upstream.tasks() == 1), what="the upstream to take the job"
                )
                _kill(workers[0])
                relay.holding.clear()
                workers.append(start_server(env, tmp_path, args=["worker"], ready_path=None))
                data = await wait_for_terminal(client, customer.headers, task_id)
            finally:
                for worker in workers:
                    worker.stop()
        assert data["state"] == "success", data
        # Sent twice with the same X-Request-Id: the upstream answered with the job it had.
        assert relay.forwarded.count("POST /api/v1/jobs/createTask") == 2
        assert upstream.tasks() == 1


async def _as_true(value: bool) -> bool:
    return value
