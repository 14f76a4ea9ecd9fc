"""POST /api/v1/files end to end, on the real app: store, download, use as a task input."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from app.media.models import MediaFile
from app.media.service import signed_media_url
from app.runtime import Runtime
from tests.conftest import Customer, make_customer
from tests.support.apps import wait_for_terminal
from tests.uploads.conftest import MAX_BYTES, MAX_PIXELS, Recorder, image_bytes

FILES = "/api/v1/files"


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def _post_json(client: httpx.AsyncClient, customer: Customer, body: Any) -> httpx.Response:
    # json.dumps escapes what UTF-8 cannot carry (lone surrogates), as many clients do.
    headers = {**customer.headers, "Content-Type": "application/json"}
    return await client.post(FILES, content=json.dumps(body), headers=headers)


async def _post_file(
    client: httpx.AsyncClient,
    customer: Customer,
    data: bytes,
    name: str = "photo.png",
    content_type: str = "image/png",
) -> httpx.Response:
    files = {"file": (name, data, content_type)}
    return await client.post(FILES, files=files, headers=customer.headers)


def _error(response: httpx.Response, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status
    assert body["data"]["field"] == field, body
    assert body["msg"] == body["data"]["error"]
    data: dict[str, Any] = body["data"]
    return data


async def test_multipart_upload_answers_a_url_that_downloads_the_same_bytes(
    client: httpx.AsyncClient, customer: Customer, recorder: Recorder
) -> None:
    data = image_bytes("PNG", (64, 48))
    before_ms = int(time.time() * 1000)
    response = await _post_file(client, customer, data, content_type="application/octet-stream")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["code"], body["msg"]) == (200, "success")
    upload = body["data"]
    assert set(upload) == {
        "id",
        "url",
        "contentType",
        "bytes",
        "width",
        "height",
        "sha256",
        "expiresAt",
    }
    assert upload["id"].startswith("file_")
    assert upload["contentType"] == "image/png"
    assert (upload["bytes"], upload["width"], upload["height"]) == (len(data), 64, 48)
    assert upload["sha256"] == hashlib.sha256(data).hexdigest()
    day_ms = 24 * 3600 * 1000
    assert before_ms + day_ms - 2000 <= upload["expiresAt"] <= int(time.time() * 1000) + day_ms
    assert upload["url"].startswith(f"{recorder.url}/media/{upload['id']}.png?")
    assert f"exp={upload['expiresAt'] // 1000}" in upload["url"]

    downloaded = await client.get(_path(upload["url"]))
    assert downloaded.status_code == 200
    assert downloaded.headers["content-type"] == "image/png"
    assert downloaded.content == data


@pytest.mark.parametrize(
    ("fmt", "content_type", "extension"),
    [("JPEG", "image/jpeg", "jpg"), ("WEBP", "image/webp", "webp"), ("GIF", "image/gif", "gif")],
)
async def test_base64_json_upload_detects_the_type_from_the_bytes(
    client: httpx.AsyncClient, customer: Customer, fmt: str, content_type: str, extension: str
) -> None:
    data = image_bytes(fmt)
    # The declared type is wrong on purpose: the bytes decide.
    body = {
        "data": base64.b64encode(data).decode(),
        "filename": "x.png",
        "contentType": "image/png",
    }
    response = await _post_json(client, customer, body)
    assert response.status_code == 200, response.text
    upload = response.json()["data"]
    assert upload["contentType"] == content_type
    assert f".{extension}?" in upload["url"]
    assert (await client.get(_path(upload["url"]))).content == data


async def test_data_url_and_unpadded_url_safe_base64_are_accepted(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    data = image_bytes("PNG", (33, 17))
    data_url = "data:image/png;base64," + base64.b64encode(data).decode()
    unpadded = base64.urlsafe_b64encode(data).decode().rstrip("=")
    wrapped = "\n".join(base64.b64encode(data).decode()[i : i + 76] for i in range(0, 999, 76))
    for encoded in (data_url, unpadded):
        response = await _post_json(client, customer, {"data": encoded})
        assert response.status_code == 200, response.text
        assert response.json()["data"]["sha256"] == hashlib.sha256(data).hexdigest()
    if len(base64.b64encode(data)) <= 999:
        response = await _post_json(client, customer, {"data": wrapped})
        assert response.status_code == 200, response.text


async def test_a_text_file_named_png_is_refused(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    text = b"hello, I am not an image\n" * 10
    error = _error(await _post_file(client, customer, text, "notes.png"), 400, "file")
    assert error["error"] == "file is not a PNG, JPEG, WebP or GIF image"
    assert error["allowed"] == ["image/png", "image/jpeg", "image/webp", "image/gif"]
    body = {"data": base64.b64encode(text).decode(), "filename": "notes.png"}
    _error(await _post_json(client, customer, body), 400, "data")
    # A format Pillow reads but we do not take (BMP) is refused the same way.
    _error(await _post_file(client, customer, image_bytes("BMP"), "x.bmp"), 400, "file")


async def test_truncated_and_oversized_images_are_refused(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    whole = image_bytes("PNG", (200, 200))
    error = _error(await _post_file(client, customer, whole[: len(whole) // 2]), 400, "file")
    assert "truncated or corrupt" in error["error"]
    # A small file that decodes to many pixels (a decompression bomb).
    bomb = image_bytes("PNG", (2100, 2000))
    assert len(bomb) < MAX_BYTES
    error = _error(await _post_file(client, customer, bomb), 400, "file")
    assert error["limit"] == MAX_PIXELS
    assert "2100x2000" in error["error"]


async def test_too_big_is_413_with_the_limit(client: httpx.AsyncClient, customer: Customer) -> None:
    big = image_bytes("PNG", (600, 600), compress_level=0)
    assert len(big) > MAX_BYTES
    error = _error(await _post_file(client, customer, big), 413, "file")
    assert error["limit"] == MAX_BYTES
    assert str(MAX_BYTES) in error["error"]
    error = _error(
        await _post_json(client, customer, {"data": base64.b64encode(big).decode()}), 413, "data"
    )
    assert error["limit"] == MAX_BYTES


async def test_empty_and_corrupt_input_name_the_field(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    _error(await _post_file(client, customer, b""), 400, "file")
    _error(await _post_json(client, customer, {"data": ""}), 400, "data")
    _error(await _post_json(client, customer, {"data": "   "}), 400, "data")
    error = _error(await _post_json(client, customer, {"data": "iVBORw0KGgo*!!"}), 400, "data")
    assert "base64" in error["error"]
    _error(await _post_json(client, customer, {"data": "\ud800abc"}), 400, "data")
    _error(await _post_json(client, customer, {"data": 12}), 400, "data")
    _error(await _post_json(client, customer, {"data": "data:image/png,abc"}), 400, "data")
    _error(await _post_json(client, customer, {"filename": "a.png"}), 400, "data")
    png = base64.b64encode(image_bytes()).decode()
    error = _error(
        await _post_json(client, customer, {"data": png, "contentType": "text/plain"}),
        400,
        "contentType",
    )
    assert "image/png" in error["error"]
    _error(
        await _post_json(client, customer, {"data": f"data:text/html;base64,{png}"}), 400, "data"
    )
    _error(await _post_json(client, customer, {"data": png, "filename": "a\x00b"}), 400, "filename")
    error = _error(await _post_json(client, customer, {"data": png, "name": "x"}), 400, "name")
    assert "allowed" in error
    _error(await _post_json(client, customer, [png]), 400, "body")


async def test_malformed_requests_are_4xx(client: httpx.AsyncClient, customer: Customer) -> None:
    headers = customer.headers
    not_json = await client.post(
        FILES, content=b'{"data": ', headers={**headers, "Content-Type": "application/json"}
    )
    assert "not valid JSON" in _error(not_json, 400, "body")["error"]
    form = await client.post(FILES, data={"data": "abc"}, headers=headers)
    _error(form, 400, "Content-Type")
    other_field = await client.post(
        FILES, files={"image": ("a.png", image_bytes(), "image/png")}, headers=headers
    )
    _error(other_field, 400, "file")
    text_field = await client.post(FILES, files={"file": (None, "abc")}, headers=headers)
    _error(text_field, 400, "file")
    broken = await client.post(
        FILES,
        content=b"--xyz\r\nnot a part",
        headers={**headers, "Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert broken.status_code == 400, broken.text
    no_boundary = await client.post(
        FILES, content=b"abc", headers={**headers, "Content-Type": "multipart/form-data"}
    )
    assert no_boundary.status_code == 400, no_boundary.text


async def test_uploads_need_a_key_with_tasks_create(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    png = {"data": base64.b64encode(image_bytes()).decode()}
    assert (await client.post(FILES, json=png)).status_code == 401
    reader = await make_customer(runtime, scopes=["tasks:read"])
    response = await client.post(FILES, json=png, headers=reader.headers)
    assert response.status_code == 403, response.text


async def _upload(client: httpx.AsyncClient, customer: Customer, data: bytes) -> dict[str, Any]:
    response = await _post_file(client, customer, data)
    assert response.status_code == 200, response.text
    upload: dict[str, Any] = response.json()["data"]
    return upload


async def _balance(client: httpx.AsyncClient, customer: Customer) -> int:
    response = await client.get("/api/v1/account", headers=customer.headers)
    return int(response.json()["data"]["balance"])


async def test_image_to_image_reads_the_upload_without_a_network_fetch(
    client: httpx.AsyncClient, runtime: Runtime, customer: Customer, recorder: Recorder
) -> None:
    assert runtime.settings.allow_private_urls is False
    upload = await _upload(client, customer, image_bytes("PNG", (96, 64)))
    assert urlsplit(upload["url"]).hostname == "127.0.0.1"
    created = await client.post(
        "/api/v1/jobs/createTask",
        json={
            "model": "gpt-image-2-image-to-image",
            "input": {
                "prompt": "make it blue",
                "image_urls": [upload["url"]],
                "aspect_ratio": "auto",
            },
        },
        headers=customer.headers,
    )
    assert created.status_code == 200, created.text
    data = await wait_for_terminal(client, customer.headers, created.json()["data"]["taskId"])
    assert data["state"] == "success", data
    result_url = json.loads(data["resultJson"])["resultUrls"][0]
    result = await client.get(_path(result_url))
    assert Image.open(io.BytesIO(result.content)).size == (96, 64)
    assert recorder.connections == []

    # A previous result is one of our URLs too: upscale it, again without a fetch.
    upscaled = await client.post(
        "/api/v1/jobs/createTask",
        json={"model": "image-upscale", "input": {"input_urls": [result_url]}},
        headers=customer.headers,
    )
    assert upscaled.status_code == 200, upscaled.text
    data = await wait_for_terminal(client, customer.headers, upscaled.json()["data"]["taskId"])
    assert data["state"] == "success", data
    assert recorder.connections == []


async def test_an_expired_upload_url_is_refused_at_creation_for_free(
    client: httpx.AsyncClient, runtime: Runtime, customer: Customer, recorder: Recorder
) -> None:
    upload = await _upload(client, customer, image_bytes())
    async with runtime.sessions() as session:
        media = await session.get(MediaFile, upload["id"])
    assert media is not None
    # Really signed by us, with an expiry in the past.
    expired = signed_media_url(
        media,
        base_url=recorder.url,
        secret=runtime.signing_secret,
        expires_at_s=int(time.time()) - 5,
    )
    # Same signature over another expiry: forged, so not one of ours at all.
    forged = upload["url"].replace(
        f"exp={upload['expiresAt'] // 1000}", f"exp={upload['expiresAt'] // 1000 + 1}"
    )
    for url in (expired, forged):
        response = await client.post(
            "/api/v1/jobs/createTask",
            json={"model": "image-upscale", "input": {"input_urls": [url]}},
            headers=customer.headers,
        )
        assert response.status_code == 400, response.text
        assert response.json()["data"]["field"] == "input_urls"
    assert await _balance(client, customer) == 1000
    assert recorder.connections == []
