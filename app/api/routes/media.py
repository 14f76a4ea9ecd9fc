"""Downloads of stored results through signed, expiring URLs (no API key: the signature is it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from app.api.deps import RuntimeDep, SessionDep
from app.api.envelope import error_responses
from app.core.errors import NotFound
from app.core.ids import now_ms
from app.media.service import open_media
from app.media.storage import LocalMediaStore

router = APIRouter(tags=["media"])

_MEDIA_TYPES: dict[str, Any] = {
    kind: {} for kind in ("image/png", "image/jpeg", "image/webp", "video/mp4")
}


def _stat_stored(store: LocalMediaStore, path: str) -> tuple[Path, os.stat_result]:
    try:
        absolute = store.absolute(path)
        return absolute, absolute.stat()
    except (ValueError, OSError) as exc:
        # The row outlived its file (deleted, or the root moved): same answer as a bad link.
        raise NotFound("media not found") from exc


@router.get(
    "/media/{file_ref}",
    summary="Download a stored result through a signed URL",
    response_class=FileResponse,
    responses={200: {"content": _MEDIA_TYPES}, **error_responses(400, 404)},
)
async def download_media(
    file_ref: Annotated[str, PathParam(description="<file id>.<extension> from the task")],
    exp: Annotated[int, Query(description="expiry, epoch seconds")],
    sig: Annotated[str, Query(max_length=128, description="signature of id and expiry")],
    session: SessionDep,
    runtime: RuntimeDep,
) -> FileResponse:
    now_s = now_ms() // 1000
    media = await open_media(
        session, file_ref=file_ref, exp=exp, sig=sig, secret=runtime.signing_secret, now_s=now_s
    )
    store = runtime.media_store
    path, stat_result = await anyio.to_thread.run_sync(_stat_stored, store, media.path)
    headers = {
        "ETag": f'"{media.sha256}"',
        # Private: the URL is a credential, so shared caches must not keep or serve it.
        "Cache-Control": f"private, max-age={max(0, exp - now_s)}",
        "X-Content-Type-Options": "nosniff",
    }
    return FileResponse(
        path, media_type=media.content_type, headers=headers, stat_result=stat_result
    )
