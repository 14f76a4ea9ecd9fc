"""A real gengate server process for MCP tests, and an account with a key on it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from app.core.config import Settings
from app.runtime import Runtime
from tests.conftest import Customer, make_customer
from tests.support.server import LiveServer, start_server


@dataclass
class McpTarget:
    server: LiveServer
    customer: Customer

    @property
    def url(self) -> str:
        return self.server.base_url + "/api/mcp"

    def rpc(
        self, method: str, params: dict[str, Any] | None = None, **headers: str
    ) -> httpx.Response:
        """One JSON-RPC call the way curl makes it: no Accept header, just the key."""
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params is not None:
            body["params"] = params
        return httpx.post(
            self.url,
            content=json.dumps(body),
            headers={
                **self.customer.headers,
                "Content-Type": "application/json",
                **{k.replace("_", "-"): v for k, v in headers.items()},
            },
            timeout=30,
        )

    def call(self, tool: str, arguments: dict[str, Any], **headers: str) -> dict[str, Any]:
        response = self.rpc("tools/call", {"name": tool, "arguments": arguments}, **headers)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()["result"]
        return result

    @asynccontextmanager
    async def client(self, mode: str) -> AsyncIterator[Client]:
        http = create_mcp_http_client(headers=self.customer.headers)
        transport = streamable_http_client(self.url, http_client=http)
        async with Client(transport, mode=mode) as client:  # type: ignore[arg-type]
            yield client


async def _customer(settings: Settings, **kwargs: Any) -> Customer:
    runtime = await Runtime.start(settings)
    try:
        return await make_customer(runtime, **kwargs)
    finally:
        await runtime.close()


@pytest.fixture
def server_env(settings_env: dict[str, str]) -> dict[str, str]:
    """Override to change the server's settings in a test module."""
    return settings_env


@pytest.fixture
def live(server_env: dict[str, str], tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(server_env, tmp_path)
    yield server
    server.stop()


@pytest.fixture
async def target(live: LiveServer, settings: Settings) -> McpTarget:
    return McpTarget(live, await _customer(settings, tier="pro"))


def payload_text(result: dict[str, Any]) -> Any:
    """The JSON in a result's first text block (the seed's `indent=1` formatting)."""
    text = result["content"][0]["text"]
    assert text == json.dumps(json.loads(text), indent=1, ensure_ascii=False)
    return json.loads(text)
