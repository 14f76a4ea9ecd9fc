"""One real `gengate serve` (embedded workers, offline renderer) for the client tests; each
test has an account and key of its own."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Customer
from tests.support.console import ConsoleServer, console_serving

IMAGE_MODEL = "gpt-image-2-text-to-image"
VIDEO_MODEL = "seedance-2.0-text-to-video"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_DEFAULT_LIMITS = {"query_per_minute": 6000, "max_active_tasks": 100, "window_seconds": 60}
TIERS = {
    "standard": {"create_per_minute": 600, **_DEFAULT_LIMITS},
    "one-create": {"create_per_minute": 1, **_DEFAULT_LIMITS},  # the second create is a 429
}


@pytest.fixture(scope="package")
def live(
    template_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleServer]:
    env = {
        # Long enough to see a task queued and generating, short enough for a fast suite.
        "GENGATE_LOCAL_DELAY_MS": "300",
        "GENGATE_TIERS": json.dumps(TIERS),
    }
    with console_serving(template_database_url, tmp_path_factory.mktemp("client"), env=env) as live:
        yield live


@pytest.fixture
def customer(live: ConsoleServer) -> Customer:
    return live.customer(credits=10_000)


def server_asset(live: ConsoleServer, customer: Customer, task_id: str) -> list[dict]:  # type: ignore[type-arg]
    """The server's own record of a task's result files (GET /v1/tasks, /v1/assets)."""
    with httpx.Client(base_url=live.base_url, headers=customer.headers) as http:
        task = http.get(f"/v1/tasks/{task_id}")
        assert task.status_code == 200, task.text
        assets = []
        for asset_id in task.json()["response"]["assets"]:
            answer = http.get(f"/v1/assets/{asset_id}")
            assert answer.status_code == 200, answer.text
            assets.append(answer.json())
    return assets


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_mp4(data: bytes) -> bool:
    return data[4:8] == b"ftyp"
