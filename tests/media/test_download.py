"""GET /media/{id}.{ext}?exp=&sig= end to end: store, mint a URL, download over the app."""

from urllib.parse import urlsplit

import httpx

from app.core.ids import now_ms
from app.media.models import MediaFile
from app.media.service import media_extension, media_url, record_media
from app.providers.local_render import probe_media, render_text_to_image
from app.runtime import Runtime
from tests.media.conftest import TaskRef

NOT_FOUND = {"code": 404, "msg": "media not found", "data": {"error": "media not found"}}


async def _stored_png(runtime: Runtime, task: TaskRef) -> tuple[MediaFile, bytes]:
    data = render_text_to_image("a lighthouse at dusk", width=320, height=240, output_format="png")
    info = probe_media(data)
    store = runtime.media_store
    blob = store.put(
        task_id=task.id, position=0, data=data, extension=media_extension(info.content_type)
    )
    assert store.absolute(blob.path).is_relative_to(runtime.settings.resolved_media_root.resolve())
    async with runtime.sessions() as session:
        media = await record_media(
            session, task_id=task.id, account_id=task.account_id, position=0, blob=blob, info=info
        )
        await session.commit()
    return media, data


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def _url(runtime: Runtime, media: MediaFile, *, ttl_s: int = 600, now_s: int | None = None) -> str:
    return media_url(
        media,
        base_url="http://testserver",
        secret=runtime.signing_secret,
        ttl_s=ttl_s,
        now_s=now_ms() // 1000 if now_s is None else now_s,
    )


async def test_signed_url_downloads_the_file(
    client: httpx.AsyncClient, runtime: Runtime, task: TaskRef
) -> None:
    media, data = await _stored_png(runtime, task)
    response = await client.get(_path_of(_url(runtime, media, ttl_s=600)))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["etag"] == f'"{media.sha256}"'
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["accept-ranges"] == "bytes"
    cache_control = response.headers["cache-control"]
    assert cache_control.startswith("private, max-age=")
    assert 590 <= int(cache_control.rsplit("=", 1)[1]) <= 600
    assert response.content == data


async def test_range_request_gets_partial_content(
    client: httpx.AsyncClient, runtime: Runtime, task: TaskRef
) -> None:
    media, data = await _stored_png(runtime, task)
    response = await client.get(_path_of(_url(runtime, media)), headers={"Range": "bytes=0-99"})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes 0-99/{len(data)}"
    assert response.headers["content-length"] == "100"
    assert response.content == data[:100]


async def test_expired_and_tampered_urls_are_not_found(
    client: httpx.AsyncClient, runtime: Runtime, task: TaskRef
) -> None:
    media, _data = await _stored_png(runtime, task)
    expired = _url(runtime, media, ttl_s=60, now_s=now_ms() // 1000 - 120)
    good = _path_of(_url(runtime, media))
    sig = good.rsplit("sig=", 1)[1]
    wrong_sig = good.replace(sig, ("A" if sig[0] != "A" else "B") + sig[1:])
    other_ext = good.replace(".png?", ".jpg?")
    for path in (_path_of(expired), wrong_sig, other_ext):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json() == NOT_FOUND
        assert "etag" not in response.headers


async def test_missing_signature_is_a_bad_request(
    client: httpx.AsyncClient, runtime: Runtime, task: TaskRef
) -> None:
    media, _data = await _stored_png(runtime, task)
    response = await client.get(f"/media/{media.id}.png")
    assert response.status_code == 400
    assert response.json()["code"] == 400


async def test_file_gone_from_disk_is_not_found(
    client: httpx.AsyncClient, runtime: Runtime, task: TaskRef
) -> None:
    media, _data = await _stored_png(runtime, task)
    runtime.media_store.delete_task(task.id, [media.path])
    response = await client.get(_path_of(_url(runtime, media)))
    assert response.status_code == 404
    assert response.json() == NOT_FOUND
