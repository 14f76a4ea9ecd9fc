"""The OAuth endpoints, served by the `mcp` SDK's handlers over our provider.

- `/.well-known/oauth-protected-resource` and `.../api/mcp` (RFC 9728),
  `/.well-known/oauth-authorization-server` (RFC 8414);
- `/register` (RFC 7591), `/authorize` (code + PKCE S256), `/token`, `/revoke` (RFC 7009):
  the SDK's paths, which MCP clients also assume when they find no metadata.

The SDK builds its metadata once from a fixed issuer; ours depends on the request when no
public URL is configured, so every handler is built per request (they are plain objects).
Revocation is the SDK's logic with a request model that lets public clients omit the
secret they do not have.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mcp.server.auth.errors import stringify_pydantic_error
from mcp.server.auth.handlers.authorize import AuthorizationHandler
from mcp.server.auth.handlers.metadata import MetadataHandler, ProtectedResourceMetadataHandler
from mcp.server.auth.handlers.register import RegistrationHandler
from mcp.server.auth.handlers.revoke import RevocationErrorResponse, RevocationRequest
from mcp.server.auth.handlers.token import TokenHandler
from mcp.server.auth.json_response import PydanticJSONResponse
from mcp.server.auth.middleware.client_auth import AuthenticationError, ClientAuthenticator
from mcp.server.auth.routes import (
    AUTHORIZATION_PATH,
    REGISTRATION_PATH,
    REVOCATION_PATH,
    TOKEN_PATH,
    build_metadata,
)
from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
from mcp.server.transport_security import (
    DEFAULT_MAX_REQUEST_BODY_SIZE,
    RequestBodyLimitMiddleware,
)
from mcp.shared.auth import OAuthMetadata, ProtectedResourceMetadata
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from pydantic import AnyHttpUrl, ValidationError
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, request_response
from starlette.types import ASGIApp

from app.oauth.provider import GengateOAuthProvider
from app.oauth.service import OAUTH_SCOPES
from app.oauth.tokens import IssuedAccessToken, IssuedRefreshToken
from app.oauth.urls import (
    AUTHORIZATION_SERVER_PATH,
    PROTECTED_RESOURCE_PATH,
    OAuthUrls,
    oauth_urls,
)
from app.runtime import Runtime
from mcp_server.server import MCP_PATH

REGISTRATION = ClientRegistrationOptions(
    enabled=True, valid_scopes=list(OAUTH_SCOPES), default_scopes=list(OAUTH_SCOPES)
)
Endpoint = Callable[[Request], Awaitable[Response]]


def _urls(request: Request) -> tuple[Runtime, OAuthUrls]:
    runtime: Runtime = request.app.state.runtime
    return runtime, oauth_urls(runtime, str(request.base_url))


def _provider(request: Request) -> GengateOAuthProvider:
    runtime, urls = _urls(request)
    return GengateOAuthProvider(runtime, resource=urls.resource)


async def authorization_server_metadata(request: Request) -> Response:
    _runtime, urls = _urls(request)
    built = build_metadata(
        AnyHttpUrl(urls.issuer), None, REGISTRATION, RevocationOptions(enabled=True)
    )
    # Validated again: the SDK renders a path-less issuer with a trailing slash, and clients
    # compare issuers as strings; every client is public.
    metadata = OAuthMetadata.model_validate(
        {
            **built.model_dump(mode="json", exclude_none=True),
            "issuer": urls.issuer,
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
        }
    )
    return await MetadataHandler(metadata).handle(request)


async def protected_resource_metadata(request: Request) -> Response:
    _runtime, urls = _urls(request)
    metadata = ProtectedResourceMetadata(
        resource=urls.resource,
        authorization_servers=[urls.issuer],
        scopes_supported=list(OAUTH_SCOPES),
        resource_name="gengate MCP",
    )
    return await ProtectedResourceMetadataHandler(metadata).handle(request)


async def authorize(request: Request) -> Response:
    return await AuthorizationHandler(_provider(request)).handle(request)


async def token(request: Request) -> Response:
    provider = _provider(request)
    return await TokenHandler(provider, ClientAuthenticator(provider)).handle(request)


async def register(request: Request) -> Response:
    return await RegistrationHandler(_provider(request), options=REGISTRATION).handle(request)


class _PublicRevocationRequest(RevocationRequest):
    # The SDK's model requires client_secret, which a public client does not have
    # (RFC 7009 §2.1 asks only for its client_id).
    client_secret: str | None = None


async def revoke(request: Request) -> Response:
    """RFC 7009, as the SDK's RevocationHandler but for public clients: an unknown token or
    another client's is answered 200 and left alone."""
    provider = _provider(request)
    try:
        client = await ClientAuthenticator(provider).authenticate_request(request)
    except AuthenticationError as exc:
        refusal = RevocationErrorResponse(
            error="unauthorized_client", error_description=exc.message
        )
        return PydanticJSONResponse(status_code=401, content=refusal)
    try:
        asked = _PublicRevocationRequest.model_validate(dict(await request.form()))
    except ValidationError as exc:
        refusal = RevocationErrorResponse(
            error="invalid_request", error_description=stringify_pydantic_error(exc)
        )
        return PydanticJSONResponse(status_code=400, content=refusal)
    token: IssuedAccessToken | IssuedRefreshToken | None = await provider.load_access_token(
        asked.token
    ) or await provider.load_refresh_token(client, asked.token)
    if token is not None and token.client_id == client.client_id:
        await provider.revoke_token(token)
    return Response(status_code=200, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _cors(endpoint: Endpoint, methods: list[str], *, limit_body: bool) -> ASGIApp:
    """As the SDK wraps its routes: browser-based clients (MCP Inspector) may call these."""
    app: ASGIApp = request_response(endpoint)
    if limit_body:
        app = RequestBodyLimitMiddleware(app, DEFAULT_MAX_REQUEST_BODY_SIZE)
    return CORSMiddleware(
        app, allow_origins="*", allow_methods=methods, allow_headers=[MCP_PROTOCOL_VERSION_HEADER]
    )


def oauth_routes() -> list[BaseRoute]:
    get, post = ["GET", "OPTIONS"], ["POST", "OPTIONS"]
    return [
        Route(
            PROTECTED_RESOURCE_PATH,
            _cors(protected_resource_metadata, get, limit_body=False),
            methods=get,
        ),
        Route(
            PROTECTED_RESOURCE_PATH + MCP_PATH,
            _cors(protected_resource_metadata, get, limit_body=False),
            methods=get,
        ),
        Route(
            AUTHORIZATION_SERVER_PATH,
            _cors(authorization_server_metadata, get, limit_body=False),
            methods=get,
        ),
        # No CORS for the authorization endpoint: browsers are sent there, not scripts.
        Route(
            AUTHORIZATION_PATH,
            RequestBodyLimitMiddleware(request_response(authorize), DEFAULT_MAX_REQUEST_BODY_SIZE),
            methods=["GET", "POST"],
        ),
        Route(TOKEN_PATH, _cors(token, post, limit_body=True), methods=post),
        Route(REGISTRATION_PATH, _cors(register, post, limit_body=True), methods=post),
        Route(REVOCATION_PATH, _cors(revoke, post, limit_body=True), methods=post),
    ]
