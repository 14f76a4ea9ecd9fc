"""HEAD and Range on a real stored video, made through the API by the embedded worker."""

from __future__ import annotations

import json
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import Customer
from tests.support.apps import wait_for_terminal


@pytest.fixture
async def video(client: httpx.AsyncClient, customer: Customer) -> tuple[str, bytes]:
    """(path and query of a result URL, the video's bytes)."""
    created = await client.post(
        "/api/v1/jobs/createTask",
        json={
            "model": "seedance-2.0-text-to-video",
            "input": {"prompt": "waves on a pier", "resolution": "480p", "duration": "5"},
        },
        headers=customer.headers,
    )
    assert created.status_code == 200, created.text
    data = await wait_for_terminal(client, customer.headers, created.json()["data"]["taskId"])
    assert data["state"] == "success", data
    parts = urlsplit(json.loads(data["resultJson"])["resultUrls"][0])
    path = f"{parts.path}?{parts.query}"
    whole = await client.get(path)
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    assert len(whole.content) > 10_000
    return path, whole.content


_SAME_HEADERS = ("content-type", "content-length", "etag", "cache-control", "accept-ranges")


async def test_head_answers_the_headers_of_get_without_a_body(
    client: httpx.AsyncClient, video: tuple[str, bytes]
) -> None:
    path, data = video
    got, head = await client.get(path), await client.head(path)
    assert head.status_code == 200
    assert head.content == b""
    for name in (*_SAME_HEADERS, "last-modified", "x-content-type-options"):
        assert head.headers[name] == got.headers[name], name
    assert head.headers["content-length"] == str(len(data))


async def test_head_with_a_bad_signature_is_not_found_like_get(
    client: httpx.AsyncClient, video: tuple[str, bytes]
) -> None:
    path, _data = video
    sig = path.rsplit("sig=", 1)[1]
    bad = path.replace(sig, ("A" if sig[0] != "A" else "B") + sig[1:])
    assert (await client.get(bad)).status_code == 404
    head = await client.head(bad)
    assert head.status_code == 404
    assert "etag" not in head.headers
    assert (await client.head(path.split("?", 1)[0])).status_code == 400


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [("bytes=0-99", 0, 99), ("bytes=1000-", 1000, None), ("bytes=-500", None, None)],
)
async def test_single_range_is_206_with_content_range(
    client: httpx.AsyncClient,
    video: tuple[str, bytes],
    spec: str,
    start: int | None,
    end: int | None,
) -> None:
    path, data = video
    size = len(data)
    first = size - 500 if start is None else start
    last = size - 1 if end is None else end
    response = await client.get(path, headers={"Range": spec})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {first}-{last}/{size}"
    assert response.headers["content-length"] == str(last - first + 1)
    assert response.headers["content-type"] == "video/mp4"
    assert response.content == data[first : last + 1]
    head = await client.head(path, headers={"Range": spec})
    assert head.status_code == 206 and head.content == b""
    assert head.headers["content-range"] == response.headers["content-range"]


async def test_multiple_ranges_are_multipart_byteranges(
    client: httpx.AsyncClient, video: tuple[str, bytes]
) -> None:
    path, data = video
    response = await client.get(path, headers={"Range": "bytes=0-9, 200-299"})
    assert response.status_code == 206
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/byteranges; boundary=")
    assert response.headers["content-length"] == str(len(response.content))
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + response.content
    )
    parts = [(p["Content-Range"], p.get_payload(decode=True)) for p in message.iter_parts()]
    assert parts == [
        (f"bytes 0-9/{len(data)}", data[:10]),
        (f"bytes 200-299/{len(data)}", data[200:300]),
    ]


async def test_unsatisfiable_range_is_416_and_unreadable_ranges_get_the_whole_file(
    client: httpx.AsyncClient, video: tuple[str, bytes]
) -> None:
    path, data = video
    size = len(data)
    beyond = await client.get(path, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"
    # RFC 9110: a range that cannot be parsed, or in an unknown unit, is ignored.
    for spec in ("bytes=5-3", "items=0-9", "bytes", "bytes=abc", "bytes=,"):
        response = await client.get(path, headers={"Range": spec})
        assert response.status_code == 200, spec
        assert response.content == data
    # A range on a validator that no longer matches gets the current whole file.
    stale = await client.get(path, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == data
    fresh = await client.get(
        path, headers={"Range": "bytes=0-9", "If-Range": stale.headers["etag"]}
    )
    assert fresh.status_code == 206 and fresh.content == data[:10]
