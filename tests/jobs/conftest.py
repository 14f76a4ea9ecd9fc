from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.core.config import Settings
from tests.support.apps import running_app


@pytest.fixture
async def idle_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app without workers: created tasks stay queued until a test runs a worker."""
    async with running_app(settings.model_copy(update={"workers_in_process": False})) as pair:
        yield pair


def t2i(prompt: str = "a red bicycle", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-image-2-text-to-image", "input": {"prompt": prompt, **extra}}
