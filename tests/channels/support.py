"""An app whose models run on channels of fake upstreams (and the local renderer)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from app.catalog.catalog import load_catalog
from app.core.config import Settings
from tests.support.apps import running_app

VIDEO = "seedance-2.0-text-to-video"
IMAGE = "gpt-image-2-text-to-image"


def channel_file(path: Path, *channels: dict[str, Any]) -> Path:
    """Write a channel file of `channels`; every model no channel names runs locally."""
    named = {m for c in channels for m in c["models"]}
    local = [m for m in load_catalog(None).ids if m not in named]
    lines: list[str] = []
    for channel in [*channels, {"name": "local", "adapter": "local", "models": local}]:
        if not channel["models"]:
            continue
        lines.append("[[channel]]")
        for key, value in channel.items():
            lines.append(f"{key} = {_toml(value)}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + " }"
    return str(value)


def modelark_channel(name: str, base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "adapter": "modelark",
        "base_url": base_url,
        "api_key_env": "TEST_ARK_KEY",
        "models": [VIDEO],
        "upstream_models": {VIDEO: "seedance-2-0-pro"},
        "poll_interval_seconds": 0.05,
        **extra,
    }


@asynccontextmanager
async def channel_app(
    settings: Settings, path: Path, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    updated = settings.model_copy(
        update={
            "channels_path": path,
            "allow_private_urls": True,
            "max_attempts": 3,
            **overrides,
        }
    )
    async with running_app(updated) as pair:
        yield pair
