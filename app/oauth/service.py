"""OAuth for MCP clients: client registration and the user's consent.

The rules live here and in app.oauth.tokens (codes, tokens, rotation, revocation);
app.oauth.provider adapts them to the `mcp` SDK's provider protocol, whose handlers parse
the HTTP requests (PKCE, redirect URI and client checks included).

- Every registered client is public (`token_endpoint_auth_method` "none"): MCP clients are
  desktop and browser apps that cannot keep a secret, and PKCE is their proof. RFC 7591
  lets a server substitute registered values; the registration answer says so.
- `/authorize` keeps the request (`open_request`) until the signed-in user approves it
  with some of their key's scopes (a grant and a code) or denies it.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from mcp.server.auth.provider import AuthorizationParams, construct_redirect_uri
from mcp.shared.auth import OAuthClientInformationFull
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.errors import InvalidInput, NotFound
from app.core.ids import new_id, now_ms
from app.keys.scopes import Scope
from app.keys.service import Principal, hash_key
from app.oauth.models import OAuthClient, OAuthCode, OAuthGrant, OAuthRequest

# What an MCP client may be granted: the tools read and create tasks; managing keys is a
# REST matter, and OAuth tokens are for the MCP endpoint only.
OAUTH_SCOPES: tuple[str, ...] = (Scope.TASKS_READ.value, Scope.TASKS_CREATE.value)
CODE_LIFETIME_MS = 5 * 60_000
REQUEST_LIFETIME_MS = 15 * 60_000
ACCESS_PREFIX, REFRESH_PREFIX, CODE_PREFIX = "gga_", "ggr_", "ggc_"
CLIENT_ID_MAX = 64  # the column's width; ours are UUIDs
# RFC 7636 §4.2: BASE64URL(SHA-256(verifier)) without padding.
S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
# Custom schemes a native app may not claim: they would run in the browser itself.
_FORBIDDEN_SCHEMES = frozenset({"javascript", "data", "file", "vbscript", "blob", "about"})


@dataclass(frozen=True)
class PendingAuthorization:
    """What the consent page shows."""

    client_id: str
    client_name: str
    redirect_host: str
    requested_scopes: frozenset[str] | None


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    # The same SHA-256 as API keys: 256 random bits need no salt or slow hash.
    return hash_key(secret)


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_redirect_uri(uri: str) -> None:
    """https anywhere, http only to a loopback host, or a native app's own scheme (RFC 8252).
    Raises InvalidInput naming the URI."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    allowed = "https, http to localhost/127.0.0.1/[::1], or an app's own scheme"
    if scheme in _FORBIDDEN_SCHEMES or not scheme or parts.fragment:
        raise InvalidInput(
            f"redirect_uri {uri!r} is not allowed", field="redirect_uris", allowed=allowed
        )
    if scheme == "http" and not _is_loopback(parts.hostname):
        raise InvalidInput(
            f"redirect_uri {uri!r} is plain http to a host that is not loopback",
            field="redirect_uris",
            allowed=allowed,
        )


async def register_client(session: AsyncSession, *, client: OAuthClientInformationFull) -> None:
    """Store a dynamically registered client, made public (no secret). Raises InvalidInput
    for a redirect URI that is not allowed."""
    for uri in client.redirect_uris or []:
        check_redirect_uri(str(uri))
    client.token_endpoint_auth_method = "none"  # noqa: S105 (a method name)
    client.client_secret = None
    client.client_secret_expires_at = None
    session.add(
        OAuthClient(
            id=client.client_id,
            name=(client.client_name or "")[:200] or None,
            registration=client.model_dump_json(exclude_none=True),
            created_at=now_ms(),
        )
    )
    await session.flush()


async def find_client(
    session: AsyncSession, *, client_id: str
) -> OAuthClientInformationFull | None:
    if len(client_id) > CLIENT_ID_MAX:
        return None
    row = await session.get(OAuthClient, client_id)
    if row is None:
        return None
    return OAuthClientInformationFull.model_validate_json(row.registration)


async def open_request(
    session: AsyncSession,
    *,
    client: OAuthClientInformationFull,
    params: AuthorizationParams,
    resource: str,
) -> str:
    """Keep an authorization request until the user decides; returns its id (for the
    consent page's URL). Raises InvalidInput when the request names another resource
    (field `resource`), a malformed `code_challenge` or a scope an MCP client cannot have
    (field `scope`)."""
    if params.resource is not None and params.resource.rstrip("/") != resource:
        raise InvalidInput(
            f"this server issues tokens only for {resource}", field="resource", allowed=[resource]
        )
    if not S256_CHALLENGE.fullmatch(params.code_challenge):
        raise InvalidInput(
            "code_challenge must be the S256 challenge: 43 base64url characters",
            field="code_challenge",
        )
    scopes = params.scopes
    if scopes is not None:
        beyond = sorted(set(scopes) - set(OAUTH_SCOPES))
        if beyond:
            raise InvalidInput(
                f"unknown scope {', '.join(beyond)}", field="scope", allowed=list(OAUTH_SCOPES)
            )
    request_id = secrets.token_urlsafe(32)
    now = now_ms()
    # Requests nobody decided on go when the next one comes, so they do not pile up.
    await session.execute(delete(OAuthRequest).where(col(OAuthRequest.expires_at) <= now))
    session.add(
        OAuthRequest(
            id=digest(request_id),
            client_id=client.client_id,
            redirect_uri=str(params.redirect_uri),
            redirect_uri_explicit=params.redirect_uri_provided_explicitly,
            scopes=" ".join(scopes) if scopes is not None else None,
            code_challenge=params.code_challenge,
            state=params.state,
            resource=resource,
            created_at=now,
            expires_at=now + REQUEST_LIFETIME_MS,
        )
    )
    await session.flush()
    return request_id


async def _pending(session: AsyncSession, request_id: str) -> tuple[OAuthRequest, OAuthClient]:
    row = (
        await session.execute(
            select(OAuthRequest, OAuthClient)
            .join(OAuthClient, col(OAuthClient.id) == col(OAuthRequest.client_id))
            .where(col(OAuthRequest.id) == digest(request_id))
        )
    ).one_or_none()
    if row is None or row[0].expires_at <= now_ms():
        raise NotFound(
            "authorization request not found or expired: start again from the MCP client",
            field="request",
        )
    return row[0], row[1]


async def pending_authorization(session: AsyncSession, *, request_id: str) -> PendingAuthorization:
    """The request the consent page asks about. Raises NotFound (unknown or expired)."""
    request, client = await _pending(session, request_id)
    return PendingAuthorization(
        client_id=client.id,
        client_name=client.name or "an unnamed MCP client",
        redirect_host=urlsplit(request.redirect_uri).netloc or request.redirect_uri,
        requested_scopes=frozenset(request.scopes.split()) if request.scopes is not None else None,
    )


def grantable_scopes(principal: Principal) -> list[str]:
    """The scopes a signed-in key can hand to an MCP client, in a stable order."""
    return [scope for scope in OAUTH_SCOPES if scope in principal.scopes]


async def approve_authorization(
    session: AsyncSession, *, request_id: str, principal: Principal, scopes: list[str]
) -> str:
    """Grant the client `scopes` of the signed-in key; returns the client's redirect URI
    with a fresh code and the state. Raises NotFound (request gone) or InvalidInput (no
    scope, or one the key or the request does not have: field `scope`)."""
    request, _client = await _pending(session, request_id)
    allowed = set(grantable_scopes(principal))
    if request.scopes is not None:
        allowed &= set(request.scopes.split())
    chosen = [scope for scope in OAUTH_SCOPES if scope in scopes]
    if not chosen or set(scopes) - allowed:
        raise InvalidInput(
            "pick at least one scope, among those offered", field="scope", allowed=sorted(allowed)
        )
    now = now_ms()
    grant = OAuthGrant(
        id=new_id("grant"),
        client_id=request.client_id,
        key_id=principal.key_id,
        scopes=" ".join(chosen),
        resource=request.resource,
        created_at=now,
    )
    code = new_secret(CODE_PREFIX)
    # Spent and expired codes are kept only as long as a replay could matter.
    await session.execute(
        delete(OAuthCode).where(col(OAuthCode.expires_at) <= now - CODE_LIFETIME_MS)
    )
    session.add(grant)
    await session.flush()
    session.add(
        OAuthCode(
            id=digest(code),
            grant_id=grant.id,
            redirect_uri=request.redirect_uri,
            redirect_uri_explicit=request.redirect_uri_explicit,
            code_challenge=request.code_challenge,
            expires_at=now + CODE_LIFETIME_MS,
        )
    )
    await session.delete(request)
    await session.flush()
    return construct_redirect_uri(request.redirect_uri, code=code, state=request.state)


async def deny_authorization(session: AsyncSession, *, request_id: str) -> str:
    """Drop the request; returns the client's redirect URI with error=access_denied.
    Raises NotFound."""
    request, _client = await _pending(session, request_id)
    await session.delete(request)
    await session.flush()
    return construct_redirect_uri(
        request.redirect_uri,
        error="access_denied",
        error_description="the user denied the request",
        state=request.state,
    )
