"""`make cluster` (deploy/cluster.py): two API processes and two workers behind HAProxy,
media on an S3-compatible server it starts; a task created through the load balancer runs
on a worker and its result is served by either API process; Ctrl-C / SIGTERM stops every
part it started.

A cluster needs PostgreSQL and Redis, so this test uses them on both suite runs: a database
of its own on the local server (GENGATE_FAULTS_POSTGRES_URL names the server, as for the
fault tests) and its own Redis prefix.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support.backends import TEST_REDIS_URL
from tests.support.postgres import SERVER_URL

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = TEST_REDIS_URL or os.environ.get("GENGATE_FAULTS_REDIS_URL", "redis://127.0.0.1:6379/0")
READY = re.compile(r"cluster ready: (http://\S+)")
API_PORTS = re.compile(r"API processes on 127\.0\.0\.1:(\d+), (\d+)")
CREATE = {"model": "gpt-image-2-text-to-image", "input": {"prompt": "A red bicycle"}}

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cluster_database() -> Iterator[str]:
    name = f"gengate_cluster_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{SERVER_URL}/{name}"
    finally:
        with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(
    pattern: re.Pattern[str], log: Path, process: subprocess.Popen[bytes]
) -> re.Match[str]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = pattern.search(log.read_text(errors="replace"))
        if found:
            return found
        assert process.poll() is None, log.read_text(errors="replace")
        time.sleep(0.2)
    raise AssertionError(f"no {pattern.pattern!r} within 120 s:\n{log.read_text()}")


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_success(client: httpx.Client, task_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        data = client.get("/api/v1/jobs/recordInfo", params={"taskId": task_id}).json()["data"]
        if data["state"] != "waiting":
            return dict(data)
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} still waiting after 60 s")


def test_cluster_serves_through_the_load_balancer_and_stops_cleanly(
    cluster_database: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENGATE_", "AWS_"))}
    env |= {
        "GENGATE_DATABASE_URL": cluster_database,
        "GENGATE_REDIS_URL": REDIS_URL,
        "GENGATE_REDIS_PREFIX": f"cluster-{uuid.uuid4().hex[:8]}",
        "GENGATE_VAR_DIR": str(tmp_path / "var"),
        "GENGATE_PORT": str(port),
    }
    log = tmp_path / "cluster.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "deploy.cluster"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        base_url = _wait_for(READY, log, process).group(1)
        assert base_url == f"http://127.0.0.1:{port}"
        api_ports = [int(p) for p in _wait_for(API_PORTS, log, process).groups()]
        key = (tmp_path / "var" / "dev-api-key").read_text().strip()
        assert key in log.read_text(), "the new development key is printed, as by make run"

        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
            created = client.post("/api/v1/jobs/createTask", json=CREATE)
            assert created.status_code == 200, created.text
            data = _wait_success(client, created.json()["data"]["taskId"])
            assert data["state"] == "success", data
            url = str(data["resultJson"]).split('"resultUrls":["', 1)[1].split('"', 1)[0]
            assert url.startswith(base_url + "/media/")
            through_balancer = client.get(url)
            assert through_balancer.status_code == 200
            assert through_balancer.content
        # One process stored it (its worker wrote it to the shared store); each serves it.
        path = url.removeprefix(base_url)
        for api_port in api_ports:
            direct = httpx.get(f"http://127.0.0.1:{api_port}{path}", timeout=10)
            assert direct.status_code == 200
            assert direct.content == through_balancer.content
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode == 0, log.read_text()
    assert "cluster stopped" in log.read_text()
    assert not _listening(port)
    assert not any(_listening(p) for p in api_ports)
