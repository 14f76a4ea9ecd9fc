"""Schemathesis, every check and the stateful phase, against a live server's /openapi.json.

Schema-valid requests must be accepted, schema-invalid ones refused, and nothing may answer
5xx or disagree with the document (statuses, headers, bodies, Allow on 405).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.config import Settings
from app.runtime import Runtime
from tests.conftest import Customer, make_customer
from tests.support.server import LiveServer, start_server

CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture
def live(settings_env: dict[str, str], tmp_path: Path) -> Iterator[LiveServer]:
    # Tasks only queue: the fuzzer tests the API, and rendering hundreds of them would only
    # slow it down.
    server = start_server({**settings_env, "GENGATE_WORKERS_IN_PROCESS": "false"}, tmp_path)
    yield server
    server.stop()


async def _rich_customer(settings: Settings) -> Customer:
    runtime = await Runtime.start(settings)
    try:
        return await make_customer(runtime, credits=10**12, tier="pro")
    finally:
        await runtime.close()


async def test_the_api_agrees_with_its_schema(
    live: LiveServer, settings: Settings, tmp_path: Path
) -> None:
    customer = await _rich_customer(settings)
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{live.base_url}/openapi.json",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        "25",
        "--generation-database",
        "none",
        "--seed",
        "20261130",
        "-H",
        f"Authorization: {customer.headers['Authorization']}",
    ]
    run = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    assert "Server error" not in run.stdout
    assert not re.search(r'HTTP/1\.1" 5\d\d', live.log())
