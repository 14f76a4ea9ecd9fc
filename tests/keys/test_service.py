import pytest
from sqlalchemy import select

from app.accounts.service import create_account
from app.core.errors import AuthenticationFailed, InvalidInput, PermissionDenied
from app.keys.models import ApiKey
from app.keys.service import (
    KEY_PATTERN,
    authenticate,
    create_api_key,
    create_api_key_for,
    hash_key,
    parse_bearer,
    revoke_api_key,
)
from app.runtime import Runtime


async def test_key_shape_and_storage(runtime: Runtime) -> None:
    async with runtime.sessions() as s:
        account = await create_account(s, name="a")
        key, plain = await create_api_key(s, account_id=account.id, name="k", tier="free")
        await s.commit()
    assert plain.startswith("sk_") and len(plain) >= 3 + 32 and KEY_PATTERN.fullmatch(plain)
    async with runtime.sessions() as s:
        stored = (await s.execute(select(ApiKey).where(ApiKey.id == key.id))).scalar_one()
    assert stored.key_hash == hash_key(plain) and plain not in stored.key_hash
    assert stored.prefix == plain[:11]
    assert set(stored.scopes.split()) == {"tasks:read", "tasks:create", "keys:manage"}


async def test_authenticate_reasons(runtime: Runtime) -> None:
    async with runtime.sessions() as s:
        account = await create_account(s, name="a")
        key, plain = await create_api_key(s, account_id=account.id, name="k", tier="pro")
        await s.commit()
    async with runtime.sessions() as s:
        principal = await authenticate(s, token=plain)
        assert (principal.account_id, principal.tier) == (account.id, "pro")
        for token, reason in [
            ("sk_short", "invalid API key format"),
            ("pk_" + "a" * 40, "invalid API key format"),
            ("sk_" + "a" * 43, "unknown API key"),
        ]:
            with pytest.raises(AuthenticationFailed) as caught:
                await authenticate(s, token=token)
            assert caught.value.details["reason"] == reason
        await revoke_api_key(s, key_id=key.id)
        await s.commit()
    async with runtime.sessions() as s:
        with pytest.raises(AuthenticationFailed) as caught:
            await authenticate(s, token=plain)
    assert caught.value.details["reason"] == "API key is disabled"


def test_parse_bearer() -> None:
    assert parse_bearer("Bearer sk_abc") == "sk_abc"
    assert parse_bearer("bearer   sk_abc ") == "sk_abc"
    for header, reason in [
        (None, "missing API key"),
        ("", "missing API key"),
        ("Basic abc", "expected 'Authorization: Bearer sk_...'"),
        ("Bearer", "expected 'Authorization: Bearer sk_...'"),
    ]:
        with pytest.raises(AuthenticationFailed) as caught:
            parse_bearer(header)
        assert caught.value.details["reason"] == reason


async def test_last_used_is_recorded(runtime: Runtime) -> None:
    async with runtime.sessions() as s:
        account = await create_account(s, name="a")
        key, plain = await create_api_key(s, account_id=account.id, name="k", tier="free")
        await s.commit()
    assert key.last_used_at is None
    async with runtime.sessions() as s:
        await authenticate(s, token=plain)
        await s.commit()
    async with runtime.sessions() as s:
        assert (await s.get(ApiKey, key.id)).last_used_at is not None  # type: ignore[union-attr]


async def test_a_key_cannot_mint_more_power_than_it_has(runtime: Runtime) -> None:
    async with runtime.sessions() as s:
        account = await create_account(s, name="a")
        _k, plain = await create_api_key(
            s, account_id=account.id, name="k", tier="free", scopes=["keys:manage", "tasks:read"]
        )
        principal = await authenticate(s, token=plain)
        with pytest.raises(PermissionDenied):
            await create_api_key_for(s, principal=principal, name="x", scopes=["tasks:create"])
        child, _ = await create_api_key_for(s, principal=principal, name="x", scopes=None)
        assert child.tier == "free" and set(child.scopes.split()) == {"keys:manage", "tasks:read"}
        with pytest.raises(InvalidInput) as caught:
            await create_api_key(s, account_id=account.id, name="k", tier="free", scopes=["root"])
        assert caught.value.details["field"] == "scopes"
