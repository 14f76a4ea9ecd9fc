"""Keys: the account's API keys; create one with scopes (its secret shown once), revoke."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import SessionDep
from app.console.session import ConsoleUser, CsrfUserDep, UserDep
from app.console.templating import render
from app.core.errors import AppError
from app.keys.models import ApiKey
from app.keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from app.keys.scopes import Scope
from app.keys.service import create_api_key_for, list_api_keys_for, revoke_api_key_for

router = APIRouter(prefix="/console", include_in_schema=False)
SCOPES = [scope.value for scope in Scope]


@router.get("/keys")
async def keys_page(
    request: Request,
    user: UserDep,
    session: SessionDep,
    revoked: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    keys = await list_api_keys_for(session, principal=user.principal)
    message = None
    if revoked:
        name = next((k.prefix for k in keys if k.id == revoked and k.disabled), None)
        message = f"Key {name}… revoked." if name else None
    return await _page(request, user, session, keys=keys, message=message)


@router.post("/keys")
async def create_key(
    request: Request,
    user: CsrfUserDep,
    session: SessionDep,
    name: Annotated[str, Form(max_length=400)] = "",
    scopes: Annotated[list[str], Form(max_length=10)] = [],  # noqa: B006 - FastAPI copies it
) -> Response:
    try:
        if not scopes:
            return await _page(
                request, user, session, error="scopes: pick at least one scope", status=400
            )
        wanted = ApiKeyCreate(name=name.strip(), scopes=scopes)
        key, plain = await create_api_key_for(
            session, principal=user.principal, name=wanted.name, scopes=wanted.scopes
        )
    except ValidationError as invalid:
        return await _page(request, user, session, error=_first_problem(invalid), status=400)
    except AppError as refused:
        return await _page(request, user, session, error=refused.message, status=refused.status)
    created = ApiKeyCreated(**ApiKeyRead.of(key).model_dump(), key=plain)
    return await _page(request, user, session, created=created)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(
    user: CsrfUserDep, session: SessionDep, key_id: Annotated[str, Path(max_length=40)]
) -> Response:
    key = await revoke_api_key_for(session, principal=user.principal, key_id=key_id)
    return RedirectResponse(f"/console/keys?revoked={key.id}", status_code=303)


def _first_problem(invalid: ValidationError) -> str:
    error = invalid.errors()[0]
    field = ".".join(str(part) for part in error["loc"][:1]) or "request"
    return f"{field}: {error['msg']}"


async def _page(
    request: Request,
    user: ConsoleUser,
    session: AsyncSession,
    *,
    keys: list[ApiKey] | None = None,
    status: int = 200,
    **context: Any,
) -> Response:
    if keys is None:
        keys = await list_api_keys_for(session, principal=user.principal)
    return render(
        request,
        "keys.html",
        {
            "keys": [ApiKeyRead.of(k) for k in reversed(keys)],  # newest first
            "scopes": SCOPES,
            "own_scopes": user.principal.scopes,
            "own_key_id": user.principal.key_id,
            "created": None,
            **context,
        },
        user=user,
        status_code=status,
    )
