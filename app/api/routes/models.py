from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.api.deps import PrincipalDep, RuntimeDep
from app.api.envelope import Envelope, error_responses, ok
from app.catalog.schemas import ModelRead

router = APIRouter(prefix="/api/v1/models", tags=["models"], responses=error_responses(400, 401))


@router.get("", summary="The model catalog: inputs, their JSON Schema and price rules")
async def list_models(
    runtime: RuntimeDep,
    _principal: PrincipalDep,
    media_type: Annotated[Literal["image", "video"] | None, Query(alias="mediaType")] = None,
) -> Envelope[list[ModelRead]]:
    return ok([ModelRead.of(m) for m in runtime.catalog.list(media_type)])
