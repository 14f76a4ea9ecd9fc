"""API keys: issue, authenticate, list, revoke.

A key is `sk_` + 43 URL-safe characters (256 random bits). Only its SHA-256 is stored:
with that much entropy a salted slow hash adds nothing, and an indexed lookup by hash
reveals nothing about any stored key through timing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.accounts.models import Account
from app.core.errors import AuthenticationFailed, InvalidInput, NotFound, PermissionDenied
from app.core.ids import new_id, now_ms
from app.db.hooks import announce_after_commit
from app.keys.models import ApiKey
from app.keys.scopes import ALL_SCOPES, Scope

KEY_PATTERN = re.compile(r"sk_[A-Za-z0-9_-]{32,128}")
PREFIX_LENGTH = 11  # "sk_" + 8 characters: enough to tell keys apart on a screen
# Writing last_used_at on every request would turn each read into a write.
LAST_USED_RESOLUTION_MS = 60_000
# The announce_after_commit topic of a revocation; its payload is the key's hash.
KEY_REVOKED = "key_revoked"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the authenticated key and its account."""

    key_id: str
    account_id: str
    tier: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        """Raises PermissionDenied when the key lacks `scope`."""
        if scope not in self.scopes:
            raise PermissionDenied(f"this API key lacks the scope {scope}", scope=scope)


def generate_key() -> str:
    return "sk_" + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def normalize_scopes(scopes: Iterable[str] | None) -> frozenset[str]:
    """Raises InvalidInput naming the unknown scopes and the allowed ones."""
    if scopes is None:
        return ALL_SCOPES
    wanted = frozenset(scopes)
    unknown = wanted - ALL_SCOPES
    if unknown:
        raise InvalidInput(
            f"unknown scope {', '.join(sorted(unknown))}",
            field="scopes",
            allowed=sorted(ALL_SCOPES),
        )
    return wanted


async def create_api_key(
    session: AsyncSession,
    *,
    account_id: str,
    name: str,
    tier: str,
    scopes: Iterable[str] | None = None,
) -> tuple[ApiKey, str]:
    """Issue a key; the plain key is returned here and never again. Raises NotFound."""
    if await session.get(Account, account_id) is None:
        raise NotFound("account not found")
    plain = generate_key()
    key = ApiKey(
        id=new_id("key"),
        account_id=account_id,
        name=name,
        prefix=plain[:PREFIX_LENGTH],
        key_hash=hash_key(plain),
        tier=tier,
        scopes=" ".join(sorted(normalize_scopes(scopes))),
        created_at=now_ms(),
    )
    session.add(key)
    await session.flush()
    return key, plain


def parse_bearer(authorization: str | None) -> str:
    """The key from an `Authorization: Bearer sk_...` header. Raises AuthenticationFailed."""
    if not authorization:
        raise AuthenticationFailed("missing API key")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed("expected 'Authorization: Bearer sk_...'")
    return token


async def authenticate(session: AsyncSession, *, token: str) -> Principal:
    """Resolve a presented key. Raises AuthenticationFailed with the reason.

    Reads the database every time; request paths use app.keys.cache.KeyCache instead.
    """
    if not KEY_PATTERN.fullmatch(token):
        raise AuthenticationFailed("invalid API key format")
    key = await find_key(session, hash_key(token))
    if key is None:
        raise AuthenticationFailed("unknown API key")
    if key.disabled:
        raise AuthenticationFailed("API key is disabled")
    now = now_ms()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION_MS:
        await touch_key(session, key_id=key.id, now_ms=now)
    return principal_of(key)


async def find_key(session: AsyncSession, digest: str) -> ApiKey | None:
    """The key with this SHA-256, or None."""
    key = (
        await session.execute(select(ApiKey).where(col(ApiKey.key_hash) == digest))
    ).scalar_one_or_none()
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        return None
    return key


async def touch_key(session: AsyncSession, *, key_id: str, now_ms: int) -> None:
    """Record that a key was used (callers throttle this to LAST_USED_RESOLUTION_MS)."""
    await session.execute(
        update(ApiKey).where(col(ApiKey.id) == key_id).values(last_used_at=now_ms)
    )


def principal_of(key: ApiKey) -> Principal:
    return Principal(
        key_id=key.id,
        account_id=key.account_id,
        tier=key.tier,
        scopes=frozenset(key.scopes.split()),
    )


async def list_api_keys(session: AsyncSession, *, account_id: str | None = None) -> list[ApiKey]:
    stmt = select(ApiKey).order_by(col(ApiKey.created_at))
    if account_id is not None:
        stmt = stmt.where(col(ApiKey.account_id) == account_id)
    return list((await session.execute(stmt)).scalars())


async def revoke_api_key(
    session: AsyncSession, *, key_id: str, account_id: str | None = None
) -> ApiKey:
    """Disable a key for good. `account_id` limits it to that account's keys. Raises NotFound."""
    key = await session.get(ApiKey, key_id)
    if key is None or (account_id is not None and key.account_id != account_id):
        raise NotFound("key not found")
    if not key.disabled:
        key.disabled = True
        key.revoked_at = now_ms()
        await session.flush()
    # Also for an already disabled key: a cache elsewhere may still hold it as enabled.
    announce_after_commit(session, KEY_REVOKED, key.key_hash)
    return key


async def create_api_key_for(
    session: AsyncSession, *, principal: Principal, name: str, scopes: Iterable[str] | None
) -> tuple[ApiKey, str]:
    """A key made by a key: same account and tier, at most the maker's scopes.

    Raises PermissionDenied when the maker lacks keys:manage or asks for a scope it lacks.
    """
    principal.require(Scope.KEYS_MANAGE)
    wanted = principal.scopes if scopes is None else normalize_scopes(scopes)
    beyond = wanted - principal.scopes
    if beyond:
        raise PermissionDenied(
            f"a key cannot grant scopes it lacks: {', '.join(sorted(beyond))}", field="scopes"
        )
    return await create_api_key(
        session, account_id=principal.account_id, name=name, tier=principal.tier, scopes=wanted
    )


async def list_api_keys_for(session: AsyncSession, *, principal: Principal) -> list[ApiKey]:
    """The caller's account's keys, oldest first. Raises PermissionDenied (keys:manage)."""
    principal.require(Scope.KEYS_MANAGE)
    return await list_api_keys(session, account_id=principal.account_id)


async def revoke_api_key_for(session: AsyncSession, *, principal: Principal, key_id: str) -> ApiKey:
    """Revoke one of the caller's account's keys. Raises PermissionDenied (keys:manage),
    NotFound."""
    principal.require(Scope.KEYS_MANAGE)
    return await revoke_api_key(session, key_id=key_id, account_id=principal.account_id)
