"""Downloads of stored files through signed, expiring URLs (no API key: the signature is it).

GET and HEAD answer alike (HEAD without the body), and byte ranges are served, one or several
(multipart/byteranges), so video players can seek and link checkers need not download.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from starlette.responses import MalformedRangeHeader

from app.api.deps import RuntimeDep, SessionDep
from app.api.envelope import error_responses
from app.core.errors import NotFound
from app.core.ids import now_ms
from app.media.service import open_media
from app.media.storage import LocalMediaStore

router = APIRouter(tags=["media"])

_MEDIA_TYPES: dict[str, Any] = {
    kind: {} for kind in ("image/png", "image/jpeg", "image/webp", "image/gif", "video/mp4")
}
_PATH = "/media/{file_ref}"


class MediaFileResponse(FileResponse):
    """Starlette's file response, but an unreadable Range header gets the whole file.

    RFC 9110 (14.2) lets a server ignore a range it cannot parse or whose unit it does not
    know, and that is what clients expect; Starlette answers 400 in plain text instead.
    Unsatisfiable ranges still get 416 with `Content-Range: bytes */<size>`.
    """

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []  # no range: the whole file, 200


def _stat_stored(store: LocalMediaStore, path: str) -> tuple[Path, os.stat_result]:
    try:
        absolute = store.absolute(path)
        return absolute, absolute.stat()
    except (ValueError, OSError) as exc:
        # The row outlived its file (deleted, or the root moved): same answer as a bad link.
        raise NotFound("media not found") from exc


@router.get(
    _PATH,
    summary="Download a stored file through a signed URL",
    response_class=FileResponse,
    responses={
        200: {"content": _MEDIA_TYPES},
        206: {"description": "The requested byte range(s)"},
        416: {"description": "No requested range lies inside the file"},
        **error_responses(400, 404),
    },
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
    return MediaFileResponse(
        path, media_type=media.content_type, headers=headers, stat_result=stat_result
    )


# The same handler: Starlette's file response sends the headers of GET and no body.
router.add_api_route(
    _PATH,
    download_media,
    methods=["HEAD"],
    summary="The headers a download would get, without the body",
    response_class=FileResponse,
    responses={200: {"description": "Headers only"}, **error_responses(400, 404)},
    operation_id="head_media",
)
