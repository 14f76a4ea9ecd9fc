"""Downloads of stored files through signed, expiring URLs (no API key: the signature is it).

GET and HEAD answer alike (HEAD without the body), and byte ranges are served (several at once
as multipart/byteranges from local disk), so video players can seek and link checkers need
not download. On the S3 backend the object is streamed from the bucket in chunks.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response

from app.api.deps import RuntimeDep, SessionDep
from app.api.envelope import error_responses
from app.core.errors import NotFound
from app.core.ids import now_ms
from app.core.outages import unavailable_on_outage
from app.media.service import open_media

router = APIRouter(tags=["media"])

_MEDIA_TYPES: dict[str, Any] = {
    kind: {} for kind in ("image/png", "image/jpeg", "image/webp", "image/gif", "video/mp4")
}
_PATH = "/media/{file_ref}"


@router.get(
    _PATH,
    summary="Download a stored file through a signed URL",
    response_class=FileResponse,
    responses={
        200: {"content": _MEDIA_TYPES},
        206: {"description": "The requested byte range(s)"},
        416: {"description": "No requested range lies inside the file"},
        **error_responses(400, 404, 503),
    },
)
async def download_media(
    file_ref: Annotated[str, PathParam(description="<file id>.<extension> from the task")],
    exp: Annotated[int, Query(description="expiry, epoch seconds")],
    sig: Annotated[str, Query(max_length=128, description="signature of id and expiry")],
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    now_s = now_ms() // 1000
    media = await open_media(
        session, file_ref=file_ref, exp=exp, sig=sig, secret=runtime.signing_secret, now_s=now_s
    )
    headers = {
        "ETag": f'"{media.sha256}"',
        # Private: the URL is a credential, so shared caches must not keep or serve it.
        "Cache-Control": f"private, max-age={max(0, exp - now_s)}",
        "X-Content-Type-Options": "nosniff",
    }
    try:
        with unavailable_on_outage():  # an unreachable bucket: 503 and Retry-After
            return await runtime.media_store.response(media, headers=headers, request=request)
    except (ValueError, OSError) as exc:
        # The row outlived its file (deleted, or the root moved): same answer as a bad link.
        raise NotFound("media not found") from exc


# The same handler: the stores' responses send the headers of GET and no body.
router.add_api_route(
    _PATH,
    download_media,
    methods=["HEAD"],
    summary="The headers a download would get, without the body",
    response_class=FileResponse,
    responses={200: {"description": "Headers only"}, **error_responses(400, 404, 503)},
    operation_id="head_media",
)
