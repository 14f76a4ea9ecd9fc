"""Request bodies read in full before an app downstream sees them: bounded, then replayed."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Message, Receive


async def read_body_up_to(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to be longer than `limit` bytes (declared
    or streamed), so an oversized body is never held in memory.

    Raises starlette's ClientDisconnect when the client goes away mid-body.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` for an app downstream once the body has been read: the body first, then
    whatever the connection says next (a disconnect)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
