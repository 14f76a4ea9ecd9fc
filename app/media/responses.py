"""HTTP responses that serve stored media: a local file, or an object streamed from S3.

Both answer GET and HEAD alike and serve byte ranges, so video players can seek and link
checkers need not download.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    MalformedRangeHeader,
    RangeNotSatisfiable,
    Response,
    StreamingResponse,
)

# Opens the stored bytes [start, end) for streaming; raises before returning, so a missing
# object or an unreachable store is answered properly rather than as a cut-off body.
OpenRange = Callable[[int, int], Awaitable[AsyncIterator[bytes]]]


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


async def object_response(
    open_range: OpenRange,
    *,
    size: int,
    media_type: str,
    headers: dict[str, str],
    request: Request,
    exists: Callable[[], Awaitable[None]],
) -> Response:
    """Serve a stored object of `size` bytes in chunks, as MediaFileResponse serves a file.

    One range gets 206 from a ranged read; several ranges get the whole object with 200
    (RFC 9110 lets a server ignore a Range header, and one read beats one per range). HEAD
    only asks `exists` (FileNotFoundError when gone), so it reads no body.
    """
    try:
        byte_range = _single_range(request.headers, size=size, etag=headers.get("ETag"))
    except RangeNotSatisfiable:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
    start, end = byte_range or (0, size)
    answer = {**headers, "Accept-Ranges": "bytes", "Content-Length": str(end - start)}
    status = 200
    if byte_range is not None:
        answer["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        status = 206
    if request.method == "HEAD":
        await exists()
        return Response(status_code=status, headers=answer, media_type=media_type)
    body = await open_range(start, end)
    return StreamingResponse(body, status_code=status, headers=answer, media_type=media_type)


def _single_range(request: Headers, *, size: int, etag: str | None) -> tuple[int, int] | None:
    """The one byte range to serve, or None for the whole object.

    Raises RangeNotSatisfiable as FileResponse does. Like it, a stale If-Range (another
    ETag) or an unreadable Range header means the whole object.
    """
    http_range = request.get("range")
    if_range = request.get("if-range")
    if http_range is None or (if_range is not None and if_range != etag):
        return None
    ranges = MediaFileResponse._parse_range_header(http_range, size)
    return ranges[0] if len(ranges) == 1 else None
