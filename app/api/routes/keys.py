from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam

from app.api.deps import SessionDep, require_scope
from app.api.envelope import Envelope, error_responses, ok
from app.core.text import SafeText
from app.keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from app.keys.scopes import Scope
from app.keys.service import Principal, create_api_key_for, list_api_keys, revoke_api_key

router = APIRouter(prefix="/api/v1/keys", tags=["keys"], responses=error_responses(401, 403))

KeyManagerDep = Annotated[Principal, Depends(require_scope(Scope.KEYS_MANAGE))]


@router.get("", summary="The account's API keys (never the secrets)")
async def read_keys(session: SessionDep, principal: KeyManagerDep) -> Envelope[list[ApiKeyRead]]:
    keys = await list_api_keys(session, account_id=principal.account_id)
    return ok([ApiKeyRead.of(k) for k in keys])


@router.post(
    "",
    summary="Create an API key; the secret is in this response only",
    responses=error_responses(400),
)
async def create_key(
    body: ApiKeyCreate, session: SessionDep, principal: KeyManagerDep
) -> Envelope[ApiKeyCreated]:
    key, plain = await create_api_key_for(
        session, principal=principal, name=body.name, scopes=body.scopes
    )
    return ok(ApiKeyCreated(**ApiKeyRead.of(key).model_dump(), key=plain))


@router.delete("/{key_id}", summary="Revoke an API key", responses=error_responses(400, 404))
async def delete_key(
    key_id: Annotated[SafeText, PathParam(max_length=40)],
    session: SessionDep,
    principal: KeyManagerDep,
) -> Envelope[ApiKeyRead]:
    key = await revoke_api_key(session, key_id=key_id, account_id=principal.account_id)
    return ok(ApiKeyRead.of(key))
