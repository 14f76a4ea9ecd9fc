"""Input images that are gengate's own media URLs, read from the store instead of over HTTP.

An upload or an earlier result handed back as an input would otherwise be fetched from
ourselves: a needless round trip, and one the address guard refuses whenever the server
listens on a private address (as every development server does).

A signed URL is a bearer credential, like any media URL: whoever holds it may use it, from
any account. Refusing another account's URL here would only make the outcome depend on
where the server runs, since the same URL fetched over HTTP from a public host would work.
"""

from __future__ import annotations

import anyio

from app.core.ids import now_ms
from app.db.engine import SessionFactory
from app.jobs.models import Task
from app.media.models import MediaFile
from app.media.service import media_extension, signed_media_ref
from app.media.storage import MediaStore
from app.net.url_guard import FetchFailed

_GONE = "input image {ref} is no longer stored"


class MediaSourceReader:
    """Reads our own signed media URLs for a task; other URLs are not its business."""

    def __init__(self, sessions: SessionFactory, store: MediaStore, secret: str) -> None:
        self._sessions = sessions
        self._store = store
        self._secret = secret

    def recognises(self, url: str) -> bool:
        """True if `url` carries our signature (read it with `read`, never over HTTP)."""
        return signed_media_ref(url, secret=self._secret) is not None

    async def read(self, url: str, *, task_id: str) -> bytes:
        """The stored bytes of one of our media URLs given as an input of `task_id`.

        The URL must have been valid when the task was accepted (a queue can outlast a URL
        that was fine at creation), and an upload must still be alive now. Raises
        FetchFailed with a message fit for the task's failMsg, and ValueError if `url` is
        not one of ours.
        """
        ref = signed_media_ref(url, secret=self._secret)
        if ref is None:
            raise ValueError("not a gengate media URL")
        async with self._sessions() as session:
            task = await session.get(Task, task_id)
            media = await session.get(MediaFile, ref.file_id)
        accepted_at_ms = task.created_at if task is not None else now_ms()
        if ref.expires_at_s * 1000 <= accepted_at_ms:
            raise FetchFailed(f"input image {ref.file_id}: its URL had expired before the task")
        if media is None or media_extension(media.content_type) != ref.extension:
            raise FetchFailed(_GONE.format(ref=ref.file_id))
        if media.expires_at is not None and media.expires_at <= now_ms():
            raise FetchFailed(f"uploaded input image {ref.file_id} has expired; upload it again")
        try:
            return await anyio.to_thread.run_sync(self._store.read_bytes, media.path)
        except (ValueError, FileNotFoundError):
            raise FetchFailed(_GONE.format(ref=ref.file_id)) from None
