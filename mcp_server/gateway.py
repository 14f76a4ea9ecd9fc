"""The `/api/mcp` endpoint in front of the SDK: metadata, API-key auth, transport choice.

- A plain GET (no `Accept: text/event-stream`) answers JSON metadata, without a key.
- Every other request needs `Authorization: Bearer <token>`: an API key (`sk_...`) or an
  OAuth access token issued for this endpoint (app.oauth), which acts as the key that
  approved it. A refusal is HTTP 401 with `WWW-Authenticate` naming the protected resource
  metadata (RFC 9728, as MCP authorization asks) and a JSON body, before the SDK sees
  anything.
- Clients that accept SSE get the SSE transport (progress notifications reach them);
  the rest, like the seed's curl examples, get plain JSON.
- Nothing escapes as an HTTP 500: an unexpected failure becomes a JSON-RPC error.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mcp_types.version import SUPPORTED_PROTOCOL_VERSIONS
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from app import __version__
from app.api.bodies import read_body_up_to, replaying
from app.core.errors import AuthenticationFailed, ServiceUnavailable
from app.core.outages import unavailable_on_outage
from app.db.engine import transaction
from app.keys.service import Principal, parse_bearer
from app.oauth.service import ACCESS_PREFIX, OAUTH_SCOPES
from app.oauth.tokens import authenticate_access_token
from app.oauth.urls import AUTHORIZATION_SERVER_PATH, PROTECTED_RESOURCE_PATH, oauth_urls
from app.runtime import Runtime
from mcp_server.context import SCOPE_KEY, Caller
from mcp_server.server import MCP_PATH, McpSurface

log = logging.getLogger("gengate.mcp")


class McpGateway:
    def __init__(self, surface: McpSurface) -> None:
        self._surface = surface
        self._metadata: dict[str, Any] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        runtime: Runtime = request.app.state.runtime
        wants_sse = "text/event-stream" in request.headers.get("accept", "")
        if request.method == "GET":
            # A stateless server sends nothing unprompted, so it offers no SSE stream: the
            # transport specification's answer to such a GET is 405.
            response = _refuse_stream() if wants_sse else JSONResponse(await self._describe())
            await response(scope, receive, send)
            return
        authorization = request.headers.get("authorization")
        urls = oauth_urls(runtime, str(request.base_url))
        try:
            principal = await _authenticate(runtime, authorization, urls.resource)
        except AuthenticationFailed as exc:
            challenge = (
                f'Bearer realm="gengate", resource_metadata="{urls.resource_metadata}", '
                f'scope="{" ".join(OAUTH_SCOPES)}"'
            )
            # RFC 6750: an error code only when a credential was presented.
            if authorization:
                challenge += ', error="invalid_token"'
            response = JSONResponse(
                exc.payload(), status_code=401, headers={"WWW-Authenticate": challenge}
            )
            await response(scope, receive, send)
            return
        except ServiceUnavailable as exc:
            retry_after = str(exc.details["retryAfter"])
            response = JSONResponse(
                exc.payload(), status_code=503, headers={"Retry-After": retry_after}
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[SCOPE_KEY] = Caller(
            runtime=runtime,
            principal=principal,
            request_id=request.headers.get("x-request-id"),
            base_url=urls.issuer,
        )
        if request.method == "POST":
            # Room for upload_image calls somewhat over the upload limit (base64 grows data
            # by a third), so they get the tool's own error naming the limit; a body far
            # larger is refused here before it is held in memory.
            limit = runtime.settings.upload_max_bytes * 4 + (1 << 20)
            try:
                body = await read_body_up_to(request, limit)
            except ClientDisconnect:
                return  # nobody is left to answer
            if body is None:
                too_large = f"invalid request: the body is over {limit} bytes"
                await _jsonrpc_error(-32600, too_large, 413)(scope, receive, send)
                return
            problem = _jsonrpc_problem(body)
            if problem is not None:
                await problem(scope, receive, send)
                return
            receive = replaying(body, receive)
        if wants_sse:
            manager = self._surface.sse_manager
        else:
            manager = self._surface.json_manager
            scope = _accepting_json(scope)
        await _guarded(manager.handle_request, scope, receive, send)

    async def _describe(self) -> dict[str, Any]:
        if self._metadata is None:
            listed = await self._surface.server.list_tools()
            self._metadata = {
                "name": "gengate",
                "version": __version__,
                "transport": "streamable-http",
                "endpoint": MCP_PATH,
                "stateless": True,
                "protocolVersions": list(SUPPORTED_PROTOCOL_VERSIONS),
                "auth": {
                    "type": "bearer",
                    "header": "Authorization",
                    "format": "Bearer sk_...",
                    "description": "The same API keys as the REST API, or an OAuth access "
                    "token for this endpoint (MCP authorization: see oauth)",
                },
                "oauth": {
                    "protectedResourceMetadata": PROTECTED_RESOURCE_PATH + MCP_PATH,
                    "authorizationServerMetadata": AUTHORIZATION_SERVER_PATH,
                },
                "tools": [{"name": t.name, "description": t.description} for t in listed],
            }
        return self._metadata


async def _authenticate(runtime: Runtime, header: str | None, resource: str) -> Principal:
    token = parse_bearer(header)
    # Before the SDK: an outage here must be an HTTP 503, not a JSON-RPC internal error.
    with unavailable_on_outage():
        if token.startswith(ACCESS_PREFIX):
            async with transaction(runtime.sessions) as session:
                return await authenticate_access_token(session, token=token, resource=resource)
        return await runtime.keys.authenticate_with(runtime.sessions, token=token)


def _refuse_stream() -> JSONResponse:
    return JSONResponse(
        {"error": "this MCP server is stateless and offers no event stream; POST requests"},
        status_code=405,
        headers={"Allow": "GET, POST"},
    )


def _jsonrpc_problem(body: bytes) -> JSONResponse | None:
    """A short JSON-RPC error for what the SDK would answer at length or not at all: bodies
    not JSON, batches (not part of MCP since 2025-06-18) and null ids."""
    try:
        message = json.loads(body)
    except ValueError as exc:
        return _jsonrpc_error(-32700, f"parse error: the body is not valid JSON ({exc})")
    except RecursionError:
        return _jsonrpc_error(-32700, "parse error: the body nests too deep")
    if isinstance(message, list):
        return _jsonrpc_error(-32600, "invalid request: batches are not supported")
    if not isinstance(message, dict):
        return _jsonrpc_error(-32600, "invalid request: expected a JSON-RPC object")
    if "id" in message and message["id"] is None:
        return _jsonrpc_error(-32600, "invalid request: id must be a string or a number")
    return None


def _jsonrpc_error(code: int, message: str, status: int = 400) -> JSONResponse:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status)


def _accepting_json(scope: Scope) -> Scope:
    """The JSON transport insists on `Accept: application/json`; curl sends `*/*` or nothing."""
    headers = [(k, v) for k, v in scope["headers"] if k != b"accept"]
    headers.append((b"accept", b"application/json"))
    return {**scope, "headers": headers}


async def _guarded(app: Any, scope: Scope, receive: Receive, send: Send) -> None:
    started = False

    async def tracking_send(message: Message) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            started = True
        await send(message)

    try:
        await app(scope, receive, tracking_send)
    except Exception:
        log.exception("MCP request failed")
        if started:
            raise
        body = {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32603, "message": "internal error"},
        }
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})
