"""The in-process key cache: served from memory, dropped on revocation here and elsewhere."""

import asyncio

import httpx
import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from app.cli import app as cli
from app.core.config import Settings
from app.core.errors import AuthenticationFailed
from app.keys.cache import KeyCache
from app.keys.models import ApiKey
from app.keys.service import hash_key
from app.runtime import Runtime
from tests.conftest import make_customer
from tests.support.apps import eventually, running_app, runtime_of
from tests.support.backends import TEST_REDIS_URL

# Without Redis nothing reaches the other process; a short TTL keeps that case quick.
_NO_REDIS_TTL = {"key_cache_seconds": 0.5}


async def test_a_cached_key_is_served_until_dropped(runtime: Runtime) -> None:
    customer = await make_customer(runtime)
    cache = KeyCache(ttl_s=3600)
    async with runtime.sessions() as s:
        principal = await cache.authenticate(s, token=customer.key)
        await s.commit()
    async with runtime.sessions() as s:  # disabled behind the cache's back: not seen yet
        await s.execute(
            update(ApiKey).where(ApiKey.id == principal.key_id).values(disabled=True)  # type: ignore[arg-type]
        )
        await s.commit()
    async with runtime.sessions() as s:
        assert await cache.authenticate(s, token=customer.key) == principal
    cache.drop(hash_key(customer.key))
    async with runtime.sessions() as s:
        with pytest.raises(AuthenticationFailed) as caught:
            await cache.authenticate(s, token=customer.key)
    assert caught.value.details["reason"] == "API key is disabled"


async def test_an_expired_entry_is_read_again(runtime: Runtime) -> None:
    customer = await make_customer(runtime)
    cache = KeyCache(ttl_s=0)
    async with runtime.sessions() as s:
        principal = await cache.authenticate(s, token=customer.key)
        await s.execute(
            update(ApiKey).where(ApiKey.id == principal.key_id).values(disabled=True)  # type: ignore[arg-type]
        )
        await s.commit()
    async with runtime.sessions() as s:
        with pytest.raises(AuthenticationFailed):
            await cache.authenticate(s, token=customer.key)


def _shared(settings: Settings) -> Settings:
    return settings if TEST_REDIS_URL else settings.model_copy(update=_NO_REDIS_TTL)


async def _status(client: httpx.AsyncClient, key: str) -> int:
    answer = await client.get("/api/v1/account", headers={"Authorization": f"Bearer {key}"})
    return answer.status_code


async def test_revocation_reaches_another_instance(settings: Settings) -> None:
    """Two API processes on one database (and Redis): a revocation through one is refused
    at once there and, through the keys channel, promptly by the other (with Redis well
    inside its 60 s TTL; without Redis within the TTL)."""
    shared = _shared(settings)
    async with running_app(shared) as (app_a, client_a), running_app(shared) as (_, client_b):
        customer = await make_customer(runtime_of(app_a))
        async with runtime_of(app_a).sessions() as s:
            key = (await s.execute(ApiKey.__table__.select())).first()  # type: ignore[attr-defined]
        assert await _status(client_a, customer.key) == 200
        assert await _status(client_b, customer.key) == 200  # now cached in B
        revoked = await client_a.delete(f"/api/v1/keys/{key.id}", headers=customer.headers)
        assert revoked.status_code == 200
        assert await _status(client_a, customer.key) == 401  # at once where it was revoked

        async def refused_by_b() -> bool:
            return await _status(client_b, customer.key) == 401

        await eventually(refused_by_b, within_s=10, what="instance B to refuse the key")


async def test_cli_revocation_reaches_a_running_instance(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`gengate keys revoke` runs in a process of its own; it announces through Redis."""
    if not TEST_REDIS_URL:
        monkeypatch.setenv("GENGATE_KEY_CACHE_SECONDS", "0.5")
    async with running_app(_shared(settings)) as (app, client):
        customer = await make_customer(runtime_of(app))
        async with runtime_of(app).sessions() as s:
            key = (await s.execute(ApiKey.__table__.select())).first()  # type: ignore[attr-defined]
        assert await _status(client, customer.key) == 200
        result = await asyncio.to_thread(CliRunner().invoke, cli, ["keys", "revoke", key.id])
        assert result.exit_code == 0, result.output

        async def refused() -> bool:
            return await _status(client, customer.key) == 401

        await eventually(refused, within_s=10, what="the app to refuse the revoked key")
