"""Media files in an S3-compatible bucket (AWS S3, MinIO, R2, ...), through obstore.

Imported only when `GENGATE_MEDIA_BACKEND=s3` (app.media.stores), and the client (obstore)
only at the first file stored, read or served: importing and starting it costs about 10 MB,
which the local backend never pays and an idle process on this one not yet. Keys are
`<prefix>/<relative path>`, the same relative path the local store uses, so switching
backends is a copy of the files, not a migration.

Credentials are never gengate settings: obstore reads the standard AWS environment itself
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, or a web identity / instance
role), and nothing here logs them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from app.media.models import MediaFile
from app.media.responses import object_response
from app.media.storage import (
    StoredBlob,
    check_relative_path,
    check_task_paths,
    result_path,
    stored_blob,
)

if TYPE_CHECKING:
    from obstore import BytesStream
    from obstore.store import S3Store

# Short retries: a reader waiting on an unreachable bucket is better answered 503 (and
# retried by its client) than held for obstore's default of three minutes.
_RETRIES = {"max_retries": 2, "retry_timeout": timedelta(seconds=10)}
# The whole-request timeout covers streaming the body to a slow client, so it is long;
# connecting is what tells an outage, so that is short.
_CONNECT_TIMEOUT = timedelta(seconds=5)
_REQUEST_TIMEOUT = timedelta(minutes=30)
_CHUNK_BYTES = 64 * 1024


class S3MediaStore:
    """Media files as objects in one bucket, below an optional key prefix."""

    def __init__(
        self, *, bucket: str, endpoint_url: str | None, region: str | None, prefix: str | None
    ) -> None:
        config: dict[str, str] = {}
        if endpoint_url:
            config["endpoint"] = endpoint_url
        if region:
            config["region"] = region
        self._bucket = bucket
        self._prefix = (prefix or "").strip("/") or None
        self._config = config
        self._allow_http = bool(endpoint_url and endpoint_url.startswith("http://"))

    @cached_property
    def _store(self) -> S3Store:
        from obstore.store import S3Store

        options: dict[str, Any] = {
            "allow_http": self._allow_http,
            "connect_timeout": _CONNECT_TIMEOUT,
            "timeout": _REQUEST_TIMEOUT,
        }
        return S3Store(
            self._bucket,
            prefix=self._prefix,
            config=self._config,  # type: ignore[arg-type]
            client_options=options,  # type: ignore[arg-type]
            retry_config=_RETRIES,  # type: ignore[arg-type]
        )

    def put(self, *, task_id: str, position: int, data: bytes, extension: str) -> StoredBlob:
        """One PUT: S3 makes an object visible whole or not at all."""
        import obstore

        path = result_path(task_id=task_id, position=position, extension=extension)
        obstore.put(self._store, path, data)
        return stored_blob(path, data)

    def read_bytes(self, path: str) -> bytes:
        import obstore

        check_relative_path(path)
        return bytes(obstore.get(self._store, path).bytes())

    def delete_task(self, task_id: str, paths: Sequence[str]) -> None:
        """One batch delete; S3 deletes of missing keys succeed, so a repeat is harmless."""
        import obstore

        check_task_paths(task_id, paths)
        if paths:
            obstore.delete(self._store, list(paths))

    async def response(
        self, media: MediaFile, *, headers: dict[str, str], request: Request
    ) -> Response:
        """Stream the object (or the requested range) from the bucket in chunks."""
        import obstore

        check_relative_path(media.path)

        async def open_range(start: int, end: int) -> AsyncIterator[bytes]:
            got = await obstore.get_async(self._store, media.path, options={"range": (start, end)})
            return _chunks(got.stream(min_chunk_size=_CHUNK_BYTES))

        async def exists() -> None:
            await obstore.head_async(self._store, media.path)

        return await object_response(
            open_range,
            size=media.size_bytes,
            media_type=media.content_type,
            headers=headers,
            request=request,
            exists=exists,
        )


async def _chunks(stream: BytesStream) -> AsyncIterator[bytes]:
    """Starlette sends `bytes`; obstore hands out its own zero-copy buffers."""
    async for chunk in stream:
        yield bytes(chunk)
