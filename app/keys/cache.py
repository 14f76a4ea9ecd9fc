"""In-process cache of resolved API keys, so a request does not read its key from the database.

An entry maps a key's SHA-256 to its Principal and disabled flag and lives for a short TTL.
A revocation drops the entry at once in the process that committed it, and, through the
Redis channel `{prefix}:keys`, in every other process. Without Redis another process (the
`gengate keys revoke` CLI, a second API process on the same SQLite file) cannot reach this
one, so there the TTL bounds how long a revoked key still works (5 s by default).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import AuthenticationFailed
from app.db.engine import SessionFactory, transaction
from app.keys.service import (
    KEY_PATTERN,
    LAST_USED_RESOLUTION_MS,
    Principal,
    find_key,
    hash_key,
    principal_of,
    touch_key,
)

# A cache without bounds would let random tokens grow it; unknown keys are never stored and
# past this size the cache starts over (the database still answers every miss).
MAX_ENTRIES = 10_000


@dataclass(slots=True)
class _Entry:
    principal: Principal
    disabled: bool
    expires_at: float  # time.monotonic()
    touched_ms: int  # last_used_at as last written (or read)


class KeyCache:
    def __init__(self, *, ttl_s: float, publish: Callable[[str], None] | None = None) -> None:
        """`publish(key_hash)` tells other processes of a revocation (None: nobody to tell)."""
        self._ttl_s = ttl_s
        self._publish = publish
        self._entries: dict[str, _Entry] = {}
        # Bumped by every drop: a lookup that started before a revocation must not store
        # what it read (it may have read the key before the revocation committed).
        self._generation = 0

    async def authenticate_with(self, sessions: SessionFactory, *, token: str) -> Principal:
        """As `authenticate`, opening a transaction of its own only when the cache alone
        cannot answer (a miss, or the once-a-minute `last_used_at` write). Raises
        AuthenticationFailed."""
        entry = self._entry(token)
        if entry is not None and not self._touch_due(entry):
            return entry.principal
        async with transaction(sessions) as session:
            return await self.authenticate(session, token=token)

    async def authenticate(self, session: AsyncSession, *, token: str) -> Principal:
        """Resolve a presented key, from the cache when possible; `session` serves a miss
        and the once-a-minute `last_used_at` write. Raises AuthenticationFailed."""
        entry = self._entry(token)
        if entry is None:
            entry = await self._load(session, hash_key(token), time.monotonic())
            self._check(entry)
        if self._touch_due(entry):
            now_ms = int(time.time() * 1000)
            entry.touched_ms = now_ms  # before the await: one writer per key and minute
            await touch_key(session, key_id=entry.principal.key_id, now_ms=now_ms)
        return entry.principal

    def _entry(self, token: str) -> _Entry | None:
        """The key's unexpired cache entry, or None. Raises AuthenticationFailed for a
        malformed token or a disabled key."""
        if not KEY_PATTERN.fullmatch(token):
            raise AuthenticationFailed("invalid API key format")
        entry = self._entries.get(hash_key(token))
        if entry is None or entry.expires_at <= time.monotonic():
            return None
        self._check(entry)
        return entry

    @staticmethod
    def _check(entry: _Entry) -> None:
        if entry.disabled:
            raise AuthenticationFailed("API key is disabled")

    @staticmethod
    def _touch_due(entry: _Entry) -> bool:
        return int(time.time() * 1000) - entry.touched_ms > LAST_USED_RESOLUTION_MS

    async def _load(self, session: AsyncSession, digest: str, now: float) -> _Entry:
        generation = self._generation
        key = await find_key(session, digest)
        if key is None:
            self._entries.pop(digest, None)
            raise AuthenticationFailed("unknown API key")
        entry = _Entry(
            principal=principal_of(key),
            disabled=key.disabled,
            expires_at=now + self._ttl_s,
            touched_ms=key.last_used_at or 0,
        )
        if generation == self._generation:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[digest] = entry
        return entry

    def drop(self, key_hash: str) -> None:
        """Forget one key here (a revocation another process announced)."""
        self._generation += 1
        self._entries.pop(key_hash, None)

    def drop_all(self) -> None:
        """Forget every key (revocations may have been announced while nobody listened)."""
        self._generation += 1
        self._entries.clear()

    def revoked(self, key_hash: str) -> None:
        """A revocation committed here: forget the key and tell the other processes."""
        self.drop(key_hash)
        if self._publish is not None:
            self._publish(key_hash)
