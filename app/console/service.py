"""Console sessions: sign in with an API key, find the signed-in key, sign out.

The browser holds a random token; the table holds its SHA-256, the key it was exchanged for
and the session's CSRF token. The API key itself is never stored or sent back.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.console.models import ConsoleSession
from app.core.ids import now_ms
from app.keys.models import ApiKey
from app.keys.service import Principal, authenticate, principal_of


@dataclass(frozen=True)
class SignedIn:
    """A session just opened: `token` goes into the cookie and nowhere else."""

    token: str
    principal: Principal
    csrf_token: str


def hash_session_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def sign_in(session: AsyncSession, *, api_key: str, lifetime_s: int) -> SignedIn:
    """Exchange an API key for a session. Raises AuthenticationFailed (unknown, malformed
    or revoked key)."""
    principal = await authenticate(session, token=api_key)
    token = secrets.token_urlsafe(32)
    now = now_ms()
    # A key's expired sessions go when it signs in again, so they do not pile up.
    await session.execute(
        delete(ConsoleSession).where(
            col(ConsoleSession.key_id) == principal.key_id, col(ConsoleSession.expires_at) <= now
        )
    )
    row = ConsoleSession(
        id=hash_session_token(token),
        key_id=principal.key_id,
        account_id=principal.account_id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + lifetime_s * 1000,
    )
    session.add(row)
    await session.flush()
    return SignedIn(token=token, principal=principal, csrf_token=row.csrf_token)


async def find_session(
    session: AsyncSession, *, token: str
) -> tuple[ConsoleSession, Principal] | None:
    """The live session of a cookie token with its key's principal, or None when unknown,
    expired or its key was revoked (such a session is deleted on the way)."""
    row = (
        await session.execute(
            select(ConsoleSession, ApiKey)
            .join(ApiKey, col(ApiKey.id) == col(ConsoleSession.key_id))
            .where(col(ConsoleSession.id) == hash_session_token(token))
        )
    ).one_or_none()
    if row is None:
        return None
    console_session, key = row
    if key.disabled or console_session.expires_at <= now_ms():
        await end_session(session, session_id=console_session.id)
        return None
    return console_session, principal_of(key)


async def end_session(session: AsyncSession, *, session_id: str) -> None:
    """Sign out: the session's row is deleted, so its cookie no longer opens anything."""
    await session.execute(delete(ConsoleSession).where(col(ConsoleSession.id) == session_id))
