"""Request dependencies as `Annotated` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.text import NO_NUL_PATTERN
from app.db.engine import transaction
from app.jobs.service import REQUEST_ID_MAX
from app.keys.service import Principal, parse_bearer
from app.runtime import Runtime


# async, as every dependency here: FastAPI runs a plain `def` in a worker thread.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed before the response is sent. A hot route
    opens `transaction` itself instead: a dependency that yields costs FastAPI an exit
    stack and an anyio cancel scope per request."""
    async with transaction(runtime.sessions) as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

# Declared for OpenAPI's "Authorize" button; the checks themselves are ours (auto_error
# would answer 403 for a missing header instead of the 401 the contract asks for).
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer sk_...")


async def get_principal(
    request: Request,
    runtime: RuntimeDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from the key cache; the database only on a miss, in a transaction of its
    own (so a route that needs no database, such as a recordInfo answered from memory,
    opens none)."""
    token = parse_bearer(request.headers.get("authorization"))
    return await runtime.keys.authenticate_with(runtime.sessions, token=token)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_scope(scope: str) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    async def dependency(principal: PrincipalDep) -> Principal:
        principal.require(scope)
        return principal

    return dependency


RequestIdHeader = Annotated[
    str | None,
    Header(
        alias="X-Request-Id",
        min_length=1,
        max_length=REQUEST_ID_MAX,
        pattern=NO_NUL_PATTERN,
        description="Idempotency key, unique per API key: a replay answers what the first "
        "request created",
    ),
]
