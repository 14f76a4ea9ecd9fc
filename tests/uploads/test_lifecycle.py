"""An upload's life: read as a task input from the store, expired, then swept away."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import col

from app.core.ids import now_ms
from app.media.models import MediaFile
from app.media.service import signed_media_url
from app.media.sources import MediaSourceReader
from app.net.url_guard import FetchFailed
from app.runtime import Runtime
from app.uploads.service import purge_expired_uploads
from tests.conftest import Customer
from tests.media.conftest import insert_task
from tests.support.apps import eventually
from tests.uploads.conftest import image_bytes


async def _upload(client: httpx.AsyncClient, customer: Customer) -> dict[str, Any]:
    body = {"data": base64.b64encode(image_bytes()).decode()}
    response = await client.post("/api/v1/files", json=body, headers=customer.headers)
    assert response.status_code == 200, response.text
    upload: dict[str, Any] = response.json()["data"]
    return upload


async def _expire(runtime: Runtime, file_id: str) -> None:
    async with runtime.sessions() as session:
        await session.execute(
            update(MediaFile).where(col(MediaFile.id) == file_id).values(expires_at=now_ms() - 1)
        )
        await session.commit()


async def _row(runtime: Runtime, file_id: str) -> MediaFile | None:
    async with runtime.sessions() as session:
        return await session.get(MediaFile, file_id)


def _reader(runtime: Runtime) -> MediaSourceReader:
    return MediaSourceReader(runtime.sessions, runtime.media_store, runtime.signing_secret)


async def test_reader_serves_a_live_upload_and_explains_a_dead_one(
    client: httpx.AsyncClient, runtime: Runtime, customer: Customer
) -> None:
    upload = await _upload(client, customer)
    task = await insert_task(runtime, customer)
    reader = _reader(runtime)
    assert reader.recognises(upload["url"])
    assert not reader.recognises("https://example.com/media/file_1.png?exp=1&sig=abc")
    assert await reader.read(upload["url"], task_id=task.id) == image_bytes()

    await _expire(runtime, upload["id"])
    with pytest.raises(FetchFailed, match="has expired; upload it again"):
        await reader.read(upload["url"], task_id=task.id)


async def test_reader_refuses_a_url_that_had_expired_before_the_task(
    client: httpx.AsyncClient, runtime: Runtime, customer: Customer
) -> None:
    upload = await _upload(client, customer)
    media = await _row(runtime, upload["id"])
    assert media is not None
    stale = signed_media_url(
        media, base_url="http://x", secret=runtime.signing_secret, expires_at_s=1_000_000
    )
    task = await insert_task(runtime, customer)
    with pytest.raises(FetchFailed, match="expired before the task"):
        await _reader(runtime).read(stale, task_id=task.id)


async def test_purge_deletes_expired_uploads_rows_and_files_only_after_commit(
    client: httpx.AsyncClient, runtime: Runtime, customer: Customer
) -> None:
    old, young = await _upload(client, customer), await _upload(client, customer)
    old_row = await _row(runtime, old["id"])
    assert old_row is not None
    old_file = runtime.media_store.absolute(old_row.path)
    assert old_file.exists()
    await _expire(runtime, old["id"])

    async with runtime.sessions() as session:
        assert await purge_expired_uploads(session, runtime.media_store, now_ms()) == 1
        assert old_file.exists()  # nothing leaves the disk before the commit
        await session.rollback()
    assert old_file.exists() and await _row(runtime, old["id"]) is not None

    async with runtime.sessions() as session:
        assert await purge_expired_uploads(session, runtime.media_store, now_ms()) == 1
        await session.commit()
    assert not old_file.exists()
    assert await _row(runtime, old["id"]) is None
    assert await _row(runtime, young["id"]) is not None
    parts = urlsplit(old["url"])
    assert (await client.get(f"{parts.path}?{parts.query}")).status_code == 404


async def test_the_worker_sweep_purges_expired_uploads(
    client: httpx.AsyncClient, runtime: Runtime, customer: Customer
) -> None:
    upload = await _upload(client, customer)
    row = await _row(runtime, upload["id"])
    assert row is not None
    path = runtime.media_store.absolute(row.path)
    await _expire(runtime, upload["id"])

    async def purged() -> bool:
        return await _row(runtime, upload["id"]) is None and not path.exists()

    await eventually(purged, within_s=10, what="the sweep to delete the expired upload")
