import hashlib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy.exc import IntegrityError

from app.core.errors import NotFound
from app.media.models import MediaFile
from app.media.service import (
    list_task_media,
    media_extension,
    media_url,
    media_url_expired,
    open_media,
    own_media_id,
    record_media,
    store_output,
)
from app.media.signing import sign_media
from app.media.storage import LocalMediaStore
from app.providers.local_render import render_text_to_image
from app.providers.local_video import render_video
from app.runtime import Runtime
from tests.media.conftest import TaskRef

SECRET = "service-test-secret"
NOW_S = 1_800_000_000
KW = {"secret": SECRET, "now_s": NOW_S}


async def _store_and_record(
    runtime: Runtime, store: LocalMediaStore, task: TaskRef, position: int, data: bytes
) -> MediaFile:
    blob, info = store_output(store, task_id=task.id, position=position, data=data)
    async with runtime.sessions() as session:
        media = await record_media(
            session,
            task_id=task.id,
            account_id=task.account_id,
            position=position,
            blob=blob,
            info=info,
        )
        await session.commit()
    return media


async def test_record_image_keeps_size_sha_and_dimensions(
    runtime: Runtime, task: TaskRef, tmp_path: Path
) -> None:
    data = render_text_to_image("a red fox", width=64, height=48, output_format="png")
    media = await _store_and_record(runtime, LocalMediaStore(tmp_path), task, 0, data)
    async with runtime.sessions() as session:
        stored = await session.get(MediaFile, media.id)
    assert stored is not None
    assert stored.id.startswith("media_")
    assert stored.path.endswith(f"/{task.id}/0.png")
    assert (stored.content_type, stored.size_bytes) == ("image/png", len(data))
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert (stored.width, stored.height, stored.duration_ms) == (64, 48, None)


async def test_record_video_keeps_duration(runtime: Runtime, task: TaskRef, tmp_path: Path) -> None:
    data = render_video("a comet", width=320, height=180, duration_s=1.0, fps=24)
    media = await _store_and_record(runtime, LocalMediaStore(tmp_path), task, 0, data)
    assert media.content_type == "video/mp4"
    assert media.path.endswith("/0.mp4")
    assert (media.width, media.height) == (320, 180)
    assert media.duration_ms is not None and abs(media.duration_ms - 1000) <= 50


async def test_list_is_ordered_by_position_and_positions_are_unique(
    runtime: Runtime, task: TaskRef, tmp_path: Path
) -> None:
    store = LocalMediaStore(tmp_path)
    for position in (2, 0, 1):
        data = render_text_to_image(f"frame {position}", width=32, height=32, output_format="webp")
        await _store_and_record(runtime, store, task, position, data)
    async with runtime.sessions() as session:
        files = await list_task_media(session, task_id=task.id)
        assert [f.position for f in files] == [0, 1, 2]
        assert await list_task_media(session, task_id="task_none") == []
    with pytest.raises(IntegrityError):
        data = render_text_to_image("again", width=32, height=32, output_format="png")
        await _store_and_record(runtime, store, task, 1, data)


@pytest.mark.parametrize(
    ("content_type", "extension"),
    [("image/png", "png"), ("image/jpeg", "jpg"), ("image/webp", "webp"),
     ("video/mp4", "mp4"), ("VIDEO/MP4; codecs=avc1", "mp4"), ("text/html", "bin")],
)  # fmt: skip
def test_media_extension(content_type: str, extension: str) -> None:
    assert media_extension(content_type) == extension


async def test_url_opens_the_file_and_every_refusal_looks_the_same(
    runtime: Runtime, task: TaskRef, tmp_path: Path
) -> None:
    data = render_text_to_image("a cat", width=32, height=32, output_format="jpeg")
    media = await _store_and_record(runtime, LocalMediaStore(tmp_path), task, 0, data)
    url = media_url(media, base_url="https://gg.example/", secret=SECRET, ttl_s=600, now_s=NOW_S)
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert (
        f"{parts.scheme}://{parts.netloc}{parts.path}" == f"https://gg.example/media/{media.id}.jpg"
    )
    assert query["exp"] == str(NOW_S + 600)
    file_ref, exp, sig = f"{media.id}.jpg", int(query["exp"]), query["sig"]

    async with runtime.sessions() as session:
        opened = await open_media(
            session, file_ref=file_ref, exp=exp, sig=sig, secret=SECRET, now_s=NOW_S + 599
        )
        assert opened.id == media.id
        refusals = [
            (file_ref, exp, NOW_S + 600),  # expired
            (file_ref, exp + 60, NOW_S),  # expiry moved
            (f"{media.id}.png", exp, NOW_S),  # other extension
            (media.id, exp, NOW_S),  # no extension
            ("media_unknown.jpg", exp, NOW_S),  # other id
        ]
        for ref, when, now_s in refusals:
            with pytest.raises(NotFound) as caught:
                await open_media(
                    session, file_ref=ref, exp=when, sig=sig, secret=SECRET, now_s=now_s
                )
            assert caught.value.message == "media not found"
            assert caught.value.details == {}


async def test_signed_url_for_a_deleted_row_is_not_found(runtime: Runtime) -> None:
    sig = sign_media(SECRET, "media_gone", NOW_S + 60)
    async with runtime.sessions() as session:
        with pytest.raises(NotFound):
            await open_media(
                session, file_ref="media_gone.png", exp=NOW_S + 60, sig=sig,
                secret=SECRET, now_s=NOW_S,
            )  # fmt: skip


def _signed(file_id: str, exp: int, *, host: str = "http://127.0.0.1:8000") -> str:
    return f"{host}/media/{file_id}.png?exp={exp}&sig={sign_media(SECRET, file_id, exp)}"


def test_own_media_id_recognises_our_signed_unexpired_urls_on_any_host() -> None:
    file_id = "file_0123456789abcdef"
    for host in ("http://127.0.0.1:8000", "https://gen.example.com/base", "http://[::1]"):
        assert own_media_id(_signed(file_id, NOW_S + 60, host=host), **KW) == file_id
    url = _signed(file_id, NOW_S + 60)
    assert media_url_expired(url, **KW) is False
    reordered = url.split("?")[0] + "?" + "&".join(reversed(url.split("?")[1].split("&")))
    assert own_media_id(reordered, **KW) == file_id


def test_own_media_id_refuses_expired_forged_and_foreign_urls() -> None:
    file_id = "file_0123456789abcdef"
    expired = _signed(file_id, NOW_S)
    assert own_media_id(expired, **KW) is None
    assert media_url_expired(expired, **KW) is True
    good = _signed(file_id, NOW_S + 60)
    others = [
        good.replace(f"exp={NOW_S + 60}", f"exp={NOW_S + 61}"),  # expiry changed
        good.replace(file_id, "file_0123456789abcdee"),  # another file
        good.replace("/media/", "/other/"),
        good.replace("http://", "ftp://"),
        good + "&extra=1",
        good + "#frag",
        good.replace("?", "?exp=1&"),  # exp twice
        f"http://x/media/{file_id}.png?exp=-5&sig=abc",
        f"http://x/media/{file_id}.png",
        "http://[::1/media/x.png?exp=1&sig=a",  # unparseable
        "not a url",
    ]
    for url in others:
        assert own_media_id(url, **KW) is None, url
        assert media_url_expired(url, **KW) is False, url
    other_secret = {"secret": "another-deployment", "now_s": NOW_S}
    assert own_media_id(good, **other_secret) is None
