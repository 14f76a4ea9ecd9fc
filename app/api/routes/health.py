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
    summary="The database answers (Redis, when configured, is reported)",
    description=f"200 when the database answered within {READY_CHECK_TIMEOUT_S:g} s, else "
    "503; each check says `ok`, `unavailable` or `timeout`. Redis away answers 200 with "
    "status `degraded`: the process keeps serving without it (rate limits count per process).",
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    probes: dict[str, Callable[[Runtime], Awaitable[object]]] = {"database": _ping_database}
    if runtime.redis is not None:
        probes["redis"] = _ping_redis
    outcomes = await asyncio.gather(*(_check(probe, runtime) for probe in probes.values()))
    checks = dict(zip(probes, outcomes, strict=True))
    if checks["database"] != "ok":
        return JSONResponse(
            {"status": "unavailable", "checks": checks},
            status_code=503,
            headers={"Retry-After": str(OUTAGE_RETRY_AFTER_S)},
        )
    # Without Redis the process still serves (limits counted in process, wake-ups found by
    # the scan), so it stays in the load balancer's rotation and only says it is degraded.
    degraded = any(v != "ok" for v in checks.values())
    return JSONResponse({"status": "degraded" if degraded else "ready", "checks": checks})


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
