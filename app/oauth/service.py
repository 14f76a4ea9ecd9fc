"""OAuth for MCP clients: registration, consent, codes, token rotation and revocation.

The rules live here; app.oauth.provider adapts them to the `mcp` SDK's provider protocol,
whose handlers parse the HTTP requests (PKCE, redirect URI and client checks included).

- Every registered client is public (`token_endpoint_auth_method` "none"): MCP clients are
  desktop and browser apps that cannot keep a secret, and PKCE is their proof. RFC 7591
  lets a server substitute registered values; the registration answer says so.
- A grant binds a client to one API key: its account, tier and (some of) its scopes. A
  token works only while its grant stands and its key is enabled.
- Codes are single use: a second exchange of one revokes what the first issued (RFC 6749
  §4.1.2). Refresh tokens rotate: each refresh answers a new pair, and presenting a used
  refresh token revokes the grant (OAuth 2.1 §4.3.1).
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    RefreshToken,
    construct_redirect_uri,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyUrl
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.errors import AuthenticationFailed, InvalidInput, NotFound
from app.core.ids import new_id, now_ms
from app.keys.models import ApiKey
from app.keys.scopes import Scope
from app.keys.service import Principal, hash_key, principal_of
from app.oauth.models import GrantToken, OAuthClient, OAuthCode, OAuthGrant, OAuthRequest

# What an MCP client may be granted: the tools read and create tasks; managing keys is a
# REST matter, and OAuth tokens are for the MCP endpoint only.
OAUTH_SCOPES: tuple[str, ...] = (Scope.TASKS_READ.value, Scope.TASKS_CREATE.value)
CODE_LIFETIME_MS = 5 * 60_000
REQUEST_LIFETIME_MS = 15 * 60_000
ACCESS_PREFIX, REFRESH_PREFIX, CODE_PREFIX = "gga_", "ggr_", "ggc_"
# Custom schemes a native app may not claim: they would run in the browser itself.
_FORBIDDEN_SCHEMES = frozenset({"javascript", "data", "file", "vbscript", "blob", "about"})


@dataclass(frozen=True)
class Lifetimes:
    access_s: int
    refresh_s: int


@dataclass(frozen=True)
class PendingAuthorization:
    """What the consent page shows."""

    client_id: str
    client_name: str
    redirect_host: str
    requested_scopes: frozenset[str] | None


class IssuedCode(AuthorizationCode):
    grant_id: str


class IssuedRefreshToken(RefreshToken):
    token_id: str
    grant_id: str


class IssuedAccessToken(AccessToken):
    grant_id: str


def _secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def _digest(secret: str) -> str:
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
    row = await session.get(OAuthClient, client_id[:64])
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
    (field `resource`) or a scope an MCP client cannot have (field `scope`)."""
    if params.resource is not None and params.resource.rstrip("/") != resource:
        raise InvalidInput(
            f"this server issues tokens only for {resource}", field="resource", allowed=[resource]
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
    session.add(
        OAuthRequest(
            id=_digest(request_id),
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
            .where(col(OAuthRequest.id) == _digest(request_id))
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
    code = _secret(CODE_PREFIX)
    session.add(grant)
    await session.flush()
    session.add(
        OAuthCode(
            id=_digest(code),
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


async def _live_grant(session: AsyncSession, grant_id: str) -> tuple[OAuthGrant, ApiKey] | None:
    row = (
        await session.execute(
            select(OAuthGrant, ApiKey)
            .join(ApiKey, col(ApiKey.id) == col(OAuthGrant.key_id))
            .where(col(OAuthGrant.id) == grant_id)
        )
    ).one_or_none()
    if row is None or row[0].revoked_at is not None or row[1].disabled:
        return None
    return row[0], row[1]


async def find_code(session: AsyncSession, *, client_id: str, code: str) -> IssuedCode | None:
    """The code as the SDK's token handler checks it (PKCE, redirect URI, expiry), or None.
    A code used before revokes its grant: someone replays it."""
    row = await session.get(OAuthCode, _digest(code))
    if row is None:
        return None
    if row.used_at is not None:
        await revoke_grant(session, grant_id=row.grant_id)
        return None
    live = await _live_grant(session, row.grant_id)
    if live is None or live[0].client_id != client_id:
        return None
    grant = live[0]
    return IssuedCode(
        code=code,
        scopes=grant.scopes.split(),
        expires_at=row.expires_at / 1000,
        client_id=grant.client_id,
        code_challenge=row.code_challenge,
        redirect_uri=AnyUrl(row.redirect_uri),
        redirect_uri_provided_explicitly=row.redirect_uri_explicit,
        resource=grant.resource,
        subject=grant.key_id,
        grant_id=grant.id,
    )


async def exchange_code(
    session: AsyncSession, *, code: IssuedCode, lifetimes: Lifetimes
) -> OAuthToken:
    """Spend the code (once, even under concurrent exchanges) for the first token pair.
    Raises InvalidInput when it was spent meanwhile."""
    spent = await session.execute(
        update(OAuthCode)
        .where(col(OAuthCode.id) == _digest(code.code), col(OAuthCode.used_at).is_(None))
        .values(used_at=now_ms())
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidInput("authorization code was already used", field="code")
    return await _issue_pair(
        session, grant_id=code.grant_id, scopes=code.scopes, lifetimes=lifetimes
    )


async def _issue_pair(
    session: AsyncSession, *, grant_id: str, scopes: list[str], lifetimes: Lifetimes
) -> OAuthToken:
    now = now_ms()
    access, refresh = _secret(ACCESS_PREFIX), _secret(REFRESH_PREFIX)
    scope_text = " ".join(scopes)
    for token, kind, lifetime_s in (
        (access, "access", lifetimes.access_s),
        (refresh, "refresh", lifetimes.refresh_s),
    ):
        session.add(
            GrantToken(
                id=_digest(token),
                grant_id=grant_id,
                kind=kind,
                scopes=scope_text,
                created_at=now,
                expires_at=now + lifetime_s * 1000,
            )
        )
    await session.flush()
    return OAuthToken(
        access_token=access,
        expires_in=lifetimes.access_s,
        scope=scope_text,
        refresh_token=refresh,
    )


async def _token_row(
    session: AsyncSession, token: str, kind: str
) -> tuple[GrantToken, OAuthGrant, ApiKey] | None:
    row = (
        await session.execute(
            select(GrantToken, OAuthGrant, ApiKey)
            .join(OAuthGrant, col(OAuthGrant.id) == col(GrantToken.grant_id))
            .join(ApiKey, col(ApiKey.id) == col(OAuthGrant.key_id))
            .where(col(GrantToken.id) == _digest(token), col(GrantToken.kind) == kind)
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1], row[2])


async def find_refresh_token(
    session: AsyncSession, *, client_id: str, token: str
) -> IssuedRefreshToken | None:
    """The refresh token as the SDK checks it, or None (unknown, revoked, its key revoked,
    another client's). A used one revokes its grant: a rotated token came back."""
    if not token.startswith(REFRESH_PREFIX):
        return None
    found = await _token_row(session, token, "refresh")
    if found is None:
        return None
    row, grant, key = found
    if row.used_at is not None:
        await revoke_grant(session, grant_id=grant.id)
        return None
    if grant.revoked_at is not None or key.disabled or grant.client_id != client_id:
        return None
    return IssuedRefreshToken(
        token=token,
        client_id=grant.client_id,
        scopes=row.scopes.split(),
        expires_at=row.expires_at // 1000,
        resource=grant.resource,
        subject=grant.key_id,
        token_id=row.id,
        grant_id=grant.id,
    )


async def rotate_refresh_token(
    session: AsyncSession,
    *,
    token: IssuedRefreshToken,
    scopes: list[str],
    lifetimes: Lifetimes,
) -> OAuthToken:
    """Spend the refresh token for a new pair (with `scopes`, at most its own). A token
    spent meanwhile revokes the grant. Raises InvalidInput then."""
    now = now_ms()
    spent = await session.execute(
        update(GrantToken)
        .where(col(GrantToken.id) == token.token_id, col(GrantToken.used_at).is_(None))
        .values(used_at=now)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        await revoke_grant(session, grant_id=token.grant_id)
        raise InvalidInput("refresh token was already used", field="refresh_token")
    # The access tokens issued before the rotation end with it.
    await session.execute(
        update(GrantToken)
        .where(
            col(GrantToken.grant_id) == token.grant_id,
            col(GrantToken.kind) == "access",
            col(GrantToken.expires_at) > now,
        )
        .values(expires_at=now)
    )
    return await _issue_pair(session, grant_id=token.grant_id, scopes=scopes, lifetimes=lifetimes)


async def find_access_token(session: AsyncSession, *, token: str) -> IssuedAccessToken | None:
    """A live access token (for revocation), or None."""
    if not token.startswith(ACCESS_PREFIX):
        return None
    found = await _token_row(session, token, "access")
    if found is None:
        return None
    row, grant, key = found
    if grant.revoked_at is not None or key.disabled or row.expires_at <= now_ms():
        return None
    return IssuedAccessToken(
        token=token,
        client_id=grant.client_id,
        scopes=row.scopes.split(),
        expires_at=row.expires_at // 1000,
        resource=grant.resource,
        subject=grant.key_id,
        grant_id=grant.id,
    )


async def authenticate_access_token(
    session: AsyncSession, *, token: str, resource: str
) -> Principal:
    """The principal an access token acts as: its key's account and tier, the granted
    scopes (never more than the key's own). Raises AuthenticationFailed with the reason
    (unknown, expired, revoked, another resource's, key revoked)."""
    found = await _token_row(session, token, "access")
    if found is None:
        raise AuthenticationFailed("unknown access token")
    row, grant, key = found
    if grant.revoked_at is not None:
        raise AuthenticationFailed("access token was revoked")
    if key.disabled:
        raise AuthenticationFailed("the API key behind this access token was revoked")
    if row.expires_at <= now_ms():
        raise AuthenticationFailed("access token expired")
    if grant.resource != resource:
        raise AuthenticationFailed(f"access token is not for this resource ({resource})")
    principal = principal_of(key)
    scopes = principal.scopes & frozenset(row.scopes.split())
    return Principal(
        key_id=principal.key_id,
        account_id=principal.account_id,
        tier=principal.tier,
        scopes=scopes,
    )


async def revoke_grant(session: AsyncSession, *, grant_id: str) -> None:
    """End a grant and every token issued from it (idempotent)."""
    await session.execute(
        update(OAuthGrant)
        .where(col(OAuthGrant.id) == grant_id, col(OAuthGrant.revoked_at).is_(None))
        .values(revoked_at=now_ms())
    )
