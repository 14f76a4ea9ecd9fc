"""The s3 media backend against a real S3-compatible server (moto, on loopback).

Results are stored as objects, served through gengate's own signed URLs (streamed from the
bucket), pruned with their task, and served by any API process sharing the bucket.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import boto3
import httpx
import pytest
from fastapi import FastAPI
from moto.server import ThreadedMotoServer
from pydantic import ValidationError
from sqlalchemy import update
from sqlmodel import col
from starlette.requests import Request
from starlette.responses import StreamingResponse

from app.core.config import Settings
from app.core.ids import now_ms
from app.media.models import MediaFile
from app.media.service import list_task_media
from app.media.signing import sign_media
from app.runtime import Runtime
from app.uploads.service import purge_expired_uploads
from tests.conftest import Customer, make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import running_app, runtime_of, wait_for_terminal
from tests.uploads.conftest import image_bytes

PREFIX = "gengate-results"


@dataclass(frozen=True)
class Bucket:
    """A bucket on a running moto server, and a boto3 client to look inside it."""

    endpoint_url: str
    name: str
    client: Any

    def keys(self) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.name)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def object_bytes(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        return body


def _start_moto() -> tuple[ThreadedMotoServer, str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def _new_bucket(endpoint_url: str) -> Bucket:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    name = f"gengate-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return Bucket(endpoint_url, name, client)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server, endpoint_url = _start_moto()
    yield endpoint_url
    server.stop()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard AWS variables, the only place the s3 backend takes credentials from."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


@pytest.fixture
def bucket(moto_endpoint: str, aws_credentials: None) -> Bucket:
    return _new_bucket(moto_endpoint)


def s3_settings(settings: Settings, bucket: Bucket, **update: Any) -> Settings:
    return settings.model_copy(
        update={
            "media_backend": "s3",
            "s3_bucket": bucket.name,
            "s3_endpoint_url": bucket.endpoint_url,
            "s3_region": "us-east-1",
            "s3_prefix": PREFIX,
            **update,
        }
    )


@dataclass(frozen=True)
class Served:
    """A task run to success on the s3 backend: its file row and its signed result URL."""

    media: MediaFile
    url: str  # path and query, for the test client

    @property
    def key(self) -> str:
        return f"{PREFIX}/{self.media.path}"


async def run_to_success(
    client: httpx.AsyncClient, runtime: Runtime, customer: Customer, body: dict[str, Any]
) -> Served:
    created = await client.post("/api/v1/jobs/createTask", json=body, headers=customer.headers)
    assert created.status_code == 200, created.text
    task_id = created.json()["data"]["taskId"]
    data = await wait_for_terminal(client, customer.headers, task_id)
    assert data["state"] == "success", data
    parts = urlsplit(json.loads(data["resultJson"])["resultUrls"][0])
    async with runtime.sessions() as session:
        [media] = await list_task_media(session, task_id=task_id)
    return Served(media, f"{parts.path}?{parts.query}")


@pytest.fixture
async def s3_app(
    settings: Settings, bucket: Bucket
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with running_app(s3_settings(settings, bucket)) as pair:
        yield pair


@pytest.fixture
async def image(s3_app: tuple[FastAPI, httpx.AsyncClient]) -> Served:
    app, client = s3_app
    runtime = runtime_of(app)
    return await run_to_success(client, runtime, await make_customer(runtime), t2i())


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def test_a_result_is_stored_in_the_bucket_and_served_through_its_signed_url(
    s3_app: tuple[FastAPI, httpx.AsyncClient], bucket: Bucket, image: Served
) -> None:
    app, client = s3_app
    assert bucket.keys() == [image.key]
    assert _files_under(runtime_of(app).settings.resolved_media_root) == []
    stored = bucket.object_bytes(image.key)

    served = await client.get(image.url)

    assert served.status_code == 200, served.text
    assert served.content == stored
    assert served.headers["content-type"] == image.media.content_type == "image/png"
    assert served.headers["content-length"] == str(len(stored)) == str(image.media.size_bytes)
    assert served.headers["etag"] == f'"{image.media.sha256}"'
    assert served.headers["cache-control"].startswith("private, max-age=")


async def test_a_range_is_read_from_the_bucket_and_head_sends_no_body(
    s3_app: tuple[FastAPI, httpx.AsyncClient], bucket: Bucket, image: Served
) -> None:
    _app, client = s3_app
    stored = bucket.object_bytes(image.key)
    size = len(stored)

    part = await client.get(image.url, headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206
    assert part.content == stored[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{size}"
    assert part.headers["content-length"] == "1000"

    tail = await client.get(image.url, headers={"Range": "bytes=-10"})
    assert (tail.status_code, tail.content) == (206, stored[-10:])

    stale = await client.get(image.url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert (stale.status_code, stale.content) == (200, stored)

    outside = await client.get(image.url, headers={"Range": f"bytes={size}-"})
    assert outside.status_code == 416
    assert outside.headers["content-range"] == f"bytes */{size}"

    head = await client.head(image.url)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(size)
    assert head.headers["content-type"] == "image/png"


async def test_an_expired_or_forged_signature_is_refused(
    s3_app: tuple[FastAPI, httpx.AsyncClient], image: Served
) -> None:
    app, client = s3_app
    secret = runtime_of(app).signing_secret
    path = image.url.split("?", 1)[0]
    past = now_ms() // 1000 - 1
    expired = f"{path}?exp={past}&sig={sign_media(secret, image.media.id, past)}"
    exp = parse_qs(urlsplit(image.url).query)["exp"][0]
    forged = f"{path}?exp={exp}&sig={sign_media('another-secret', image.media.id, int(exp))}"

    for url in (expired, forged):
        refused = await client.get(url)
        assert refused.status_code == 404, url
        assert refused.json()["msg"] == "media not found"
        assert refused.headers["content-type"].startswith("application/json")


async def test_delete_task_removes_its_objects(
    s3_app: tuple[FastAPI, httpx.AsyncClient], bucket: Bucket, image: Served
) -> None:
    app, client = s3_app
    store = runtime_of(app).media_store
    assert image.media.task_id is not None

    with pytest.raises(ValueError, match="does not belong to task"):
        store.delete_task("task_other", [image.media.path])
    assert bucket.keys() == [image.key]

    await anyio.to_thread.run_sync(store.delete_task, image.media.task_id, [image.media.path])
    assert bucket.keys() == []
    # Again: already gone is not an error.
    await anyio.to_thread.run_sync(store.delete_task, image.media.task_id, [image.media.path])

    gone = await client.get(image.url)
    assert gone.status_code == 404
    assert gone.json()["msg"] == "media not found"


async def test_a_missing_object_is_not_found_for_get_and_head(
    s3_app: tuple[FastAPI, httpx.AsyncClient], bucket: Bucket, image: Served
) -> None:
    _app, client = s3_app
    bucket.client.delete_object(Bucket=bucket.name, Key=image.key)

    got = await client.get(image.url)
    assert got.status_code == 404
    assert got.json()["msg"] == "media not found"
    assert (await client.head(image.url)).status_code == 404


async def test_an_unreachable_bucket_is_503_with_retry_after(
    settings: Settings, aws_credentials: None
) -> None:
    server, endpoint_url = _start_moto()
    try:
        bucket = _new_bucket(endpoint_url)
        async with running_app(s3_settings(settings, bucket)) as (app, client):
            runtime = runtime_of(app)
            image = await run_to_success(client, runtime, await make_customer(runtime), t2i())
            assert (await client.get(image.url)).status_code == 200
            server.stop()

            for method in ("GET", "HEAD"):
                unavailable = await client.request(method, image.url)
                assert unavailable.status_code == 503, method
                assert int(unavailable.headers["retry-after"]) > 0
            assert (await client.get(image.url)).json()["code"] == 503
    finally:
        server.stop()


async def test_a_second_api_process_serves_what_the_first_stored(
    settings: Settings, bucket: Bucket, tmp_path: Path
) -> None:
    """Two API processes, each with a media root of its own, one bucket and one secret."""
    first_settings = s3_settings(settings, bucket)
    second_settings = s3_settings(
        settings, bucket, var_dir=tmp_path / "second-var", workers_in_process=False
    )
    assert first_settings.resolved_media_root != second_settings.resolved_media_root
    async with (
        running_app(first_settings) as (first_app, first_client),
        running_app(second_settings) as (second_app, second_client),
    ):
        runtime = runtime_of(first_app)
        image = await run_to_success(first_client, runtime, await make_customer(runtime), t2i())

        served = await second_client.get(image.url)

        assert served.status_code == 200, served.text
        assert served.content == bucket.object_bytes(image.key)
        assert served.headers["content-type"] == "image/png"
        assert _files_under(runtime_of(second_app).settings.resolved_media_root) == []


async def test_a_video_result_streams_whole_from_the_bucket(
    s3_app: tuple[FastAPI, httpx.AsyncClient], bucket: Bucket
) -> None:
    app, client = s3_app
    runtime = runtime_of(app)
    body = {
        "model": "seedance-2.0-text-to-video",
        "input": {"prompt": "waves on a pier", "resolution": "480p", "duration": "5"},
    }
    video = await run_to_success(client, runtime, await make_customer(runtime), body)
    stored = bucket.object_bytes(video.key)
    assert len(stored) > 2 * 64 * 1024

    served = await client.get(video.url)

    assert served.status_code == 200
    assert served.headers["content-type"] == "video/mp4"
    assert served.content == stored
    # Below the test client (which gathers the body): the object arrives in several chunks.
    request = Request({"type": "http", "method": "GET", "headers": [], "query_string": b""})
    response = await runtime.media_store.response(video.media, headers={}, request=request)
    assert isinstance(response, StreamingResponse)
    chunks = [chunk async for chunk in response.body_iterator]
    assert len(chunks) > 1
    assert b"".join(bytes(chunk) for chunk in chunks) == stored


async def test_an_upload_lives_in_the_bucket_feeds_a_task_and_is_purged_from_it(
    s3_app: tuple[FastAPI, httpx.AsyncClient], bucket: Bucket
) -> None:
    app, client = s3_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    data = image_bytes()
    uploaded = await client.post(
        "/api/v1/files",
        json={"data": base64.b64encode(data).decode()},
        headers=customer.headers,
    )
    assert uploaded.status_code == 200, uploaded.text
    upload = uploaded.json()["data"]
    async with runtime.sessions() as session:
        row = await session.get(MediaFile, upload["id"])
    assert row is not None
    assert bucket.object_bytes(f"{PREFIX}/{row.path}") == data

    # An input given as our own URL is read from the bucket (the test client's host is not
    # reachable over HTTP, so nothing else could succeed).
    body = {
        "model": "gpt-image-2-image-to-image",
        "input": {"prompt": "in watercolour", "input_urls": [upload["url"]]},
    }
    result = await run_to_success(client, runtime, customer, body)
    assert sorted(bucket.keys()) == sorted([f"{PREFIX}/{row.path}", result.key])

    async with runtime.sessions() as session:
        await session.execute(
            update(MediaFile).where(col(MediaFile.id) == row.id).values(expires_at=now_ms() - 1)
        )
        await session.commit()
    async with runtime.sessions() as session:
        assert await purge_expired_uploads(session, runtime.media_store, now_ms()) == 1
        await session.commit()
    assert bucket.keys() == [result.key]


def test_the_s3_backend_needs_a_bucket_and_an_http_endpoint() -> None:
    with pytest.raises(ValidationError, match="GENGATE_S3_BUCKET is required"):
        Settings(_env_file=None, media_backend="s3")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="GENGATE_S3_ENDPOINT_URL must be an http"):
        Settings(  # type: ignore[call-arg]
            _env_file=None, media_backend="s3", s3_bucket="b", s3_endpoint_url="minio:9000"
        )
