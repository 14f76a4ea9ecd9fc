"""OAuth codes and tokens: exchange, rotation, revocation, and who a token acts as.

- A grant binds a client to one API key: its account, tier and (some of) its scopes. A
  token works only while its grant stands and its key is enabled.
- Codes are single use: a second exchange of one revokes what the first issued (RFC 6749
  §4.1.2). Refresh tokens rotate: each refresh answers a new pair, and presenting a used
  refresh token revokes the grant (OAuth 2.1 §4.3.1).
- Codes and tokens are stored only as their SHA-256.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcp.server.auth.provider import AccessToken, AuthorizationCode, RefreshToken
from mcp.shared.auth import OAuthToken
from pydantic import AnyUrl
from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.errors import AuthenticationFailed, InvalidInput
from app.core.ids import now_ms
from app.keys.models import ApiKey
from app.keys.service import Principal, principal_of
from app.oauth.models import GrantToken, OAuthCode, OAuthGrant
from app.oauth.service import ACCESS_PREFIX, REFRESH_PREFIX, digest, new_secret


@dataclass(frozen=True)
class Lifetimes:
    access_s: int
    refresh_s: int


class IssuedCode(AuthorizationCode):
    grant_id: str


class IssuedRefreshToken(RefreshToken):
    token_id: str
    grant_id: str


class IssuedAccessToken(AccessToken):
    grant_id: str


def _of_grant(grant: OAuthGrant) -> dict[str, Any]:
    """What every issued code and token says of its grant, as the SDK's models name it."""
    return {
        "client_id": grant.client_id,
        "resource": grant.resource,
        "subject": grant.key_id,
        "grant_id": grant.id,
    }


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
    row = await session.get(OAuthCode, digest(code))
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
        code_challenge=row.code_challenge,
        redirect_uri=AnyUrl(row.redirect_uri),
        redirect_uri_provided_explicitly=row.redirect_uri_explicit,
        **_of_grant(grant),
    )


async def exchange_code(
    session: AsyncSession, *, code: IssuedCode, lifetimes: Lifetimes
) -> OAuthToken:
    """Spend the code (once, even under concurrent exchanges) for the first token pair.
    Raises InvalidInput when it was spent meanwhile."""
    spent = await session.execute(
        update(OAuthCode)
        .where(col(OAuthCode.id) == digest(code.code), col(OAuthCode.used_at).is_(None))
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
    access, refresh = new_secret(ACCESS_PREFIX), new_secret(REFRESH_PREFIX)
    scope_text = " ".join(scopes)
    for token, kind, lifetime_s in (
        (access, "access", lifetimes.access_s),
        (refresh, "refresh", lifetimes.refresh_s),
    ):
        session.add(
            GrantToken(
                id=digest(token),
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
            .where(col(GrantToken.id) == digest(token), col(GrantToken.kind) == kind)
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
        scopes=row.scopes.split(),
        expires_at=row.expires_at // 1000,
        token_id=row.id,
        **_of_grant(grant),
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
    # The access tokens issued before the rotation end with it, and the grant's expired
    # rows go (used refresh tokens stay until they expire, to recognise a replay).
    await session.execute(
        delete(GrantToken).where(
            col(GrantToken.grant_id) == token.grant_id,
            or_(col(GrantToken.kind) == "access", col(GrantToken.expires_at) <= now),
        )
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
        scopes=row.scopes.split(),
        expires_at=row.expires_at // 1000,
        **_of_grant(grant),
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
