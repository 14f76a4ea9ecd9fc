"""Connect an MCP client: ready-to-copy configuration for this server's MCP endpoint."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.deps import RuntimeDep
from app.console.session import UserDep
from app.console.templating import render
from app.jobs.views import base_url_of
from mcp_server.server import MCP_PATH

router = APIRouter(prefix="/console", include_in_schema=False)
# Placeholders only: the page never holds a real key (the signed-in one is not even known).
KEY_PLACEHOLDER = "<your API key>"
KEY_VARIABLE = "${GENGATE_API_KEY}"


@router.get("/mcp")
async def connect_page(request: Request, user: UserDep, runtime: RuntimeDep) -> Response:
    url = base_url_of(runtime, str(request.base_url)) + MCP_PATH
    http_config = {
        "mcpServers": {
            "gengate": {
                "type": "http",
                "url": url,
                "headers": {"Authorization": f"Bearer {KEY_PLACEHOLDER}"},
            }
        }
    }
    remote_command = f'npx mcp-remote {url} --header "Authorization: Bearer {KEY_VARIABLE}"'
    remote_config = {
        "mcpServers": {
            "gengate": {
                "command": "npx",
                "args": ["mcp-remote", url, "--header", f"Authorization: Bearer {KEY_VARIABLE}"],
                "env": {"GENGATE_API_KEY": KEY_PLACEHOLDER},
            }
        }
    }
    return render(
        request,
        "connect.html",
        {
            "url": url,
            "http_config": json.dumps(http_config, indent=2),
            "remote_command": remote_command,
            "remote_config": json.dumps(remote_config, indent=2),
        },
        user=user,
    )
