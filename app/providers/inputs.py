"""A task's input images as bytes, for the adapters that send bytes rather than URLs.

Our own media URLs (uploads, earlier results) are read from the store; any other URL is
fetched through the address guard. An input that cannot be had is the caller's problem, not
the channel's: it fails the task with `input_unreachable`, refunded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import httpx

from app.media.sources import MediaSourceReader
from app.net.url_guard import FetchFailed, UrlPolicy, UrlRefused, fetch_bytes
from app.providers.base import Failed

# (urls, task id) -> the bytes of each, in order, or the failure to settle the task with.
SourceReader = Callable[[Sequence[str], str], Awaitable[list[bytes] | Failed]]


class InputReader:
    def __init__(
        self, http: httpx.AsyncClient, policy: UrlPolicy, own: MediaSourceReader | None
    ) -> None:
        self._http = http
        self._policy = policy
        self._own = own

    async def read(self, urls: Sequence[str], task_id: str) -> list[bytes] | Failed:
        try:
            return list(await asyncio.gather(*(self._read_one(url, task_id) for url in urls)))
        except (UrlRefused, FetchFailed) as exc:
            # Refused addresses were refused at creation already; one refused now is a name
            # that changed its answer since, which the caller could not have known: refunded.
            reason = exc.reason if isinstance(exc, UrlRefused) else str(exc)
            return Failed("input_unreachable", f"input image could not be fetched: {reason}")

    async def _read_one(self, url: str, task_id: str) -> bytes:
        # Our own media comes from the store: no request to ourselves, and no address
        # guard to trip on a server listening on 127.0.0.1.
        if self._own is not None and self._own.recognises(url):
            return await self._own.read(url, task_id=task_id)
        body, _content_type = await fetch_bytes(self._http, url, self._policy)
        return body
