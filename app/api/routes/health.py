import asyncio
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import RuntimeDep
from app.core.errors import OUTAGE_RETRY_AFTER_S
from app.runtime import Runtime

router = APIRouter(tags=["ops"])

# Load balancers and orchestrators give up on a probe after a second or two; a database
# that hangs (rather than refusing) must not make /readyz hang with it.
READY_CHECK_TIMEOUT_S = 1.5


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database (and Redis, when configured) answer",
    description="200 when every dependency answered within "
    f"{READY_CHECK_TIMEOUT_S:g} s; otherwise 503 naming what is `unavailable` or `timeout`.",
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    probes: dict[str, Callable[[Runtime], Awaitable[object]]] = {"database": _ping_database}
    if runtime.redis is not None:
        probes["redis"] = _ping_redis
    outcomes = await asyncio.gather(*(_check(probe, runtime) for probe in probes.values()))
    checks = dict(zip(probes, outcomes, strict=True))
    ready = all(v == "ok" for v in checks.values())
    headers = None if ready else {"Retry-After": str(OUTAGE_RETRY_AFTER_S)}
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
        headers=headers,
    )


async def _check(probe: Callable[[Runtime], Awaitable[object]], runtime: Runtime) -> str:
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
            await probe(runtime)
    except TimeoutError:
        return "timeout"
    except Exception:
        return "unavailable"
    return "ok"


async def _ping_database(runtime: Runtime) -> None:
    async with runtime.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _ping_redis(runtime: Runtime) -> None:
    assert runtime.redis is not None
    await runtime.redis.ping()  # type: ignore[misc]
