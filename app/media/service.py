"""Media records and their signed URLs.

Storing bytes is the `MediaStore`'s job (blocking, run in a thread); this module records what
was stored and decides who may read it. A result is stored in two steps by the caller:
`store_output(...)` in a thread, then `record_media(...)` in the transaction that
completes the task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import NotFound
from app.core.ids import new_id, now_ms
from app.db.engine import Reader
from app.media.models import MediaFile
from app.media.signing import sign_media, verify_media
from app.media.storage import MediaStore, StoredBlob
from app.providers.local_render import MediaInfo, probe_media

_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
}
_FALLBACK_EXTENSION = "bin"
# The last path segment of a media URL: "<id>.<ext>". Ids are new_id() values.
_MEDIA_REF = re.compile(r"^/(?:.*/)?media/([A-Za-z0-9_-]{1,40})\.([a-z0-9]{1,8})$")
# One message for every refusal, so a caller cannot tell a bad signature from an unknown file.
_NOT_FOUND = "media not found"


def media_extension(content_type: str) -> str:
    """The file extension used on disk and in URLs for a content type ("bin" if unknown)."""
    base = content_type.split(";", 1)[0].strip().lower()
    return _EXTENSIONS.get(base, _FALLBACK_EXTENSION)


def store_output(
    store: MediaStore, *, task_id: str, position: int, data: bytes
) -> tuple[StoredBlob, MediaInfo]:
    """Probe a result and write it under the extension of its real content type.

    Sync and CPU-bound (decoding, hashing): run it in a thread. Raises ValueError when the
    data is no image or video we can read.
    """
    info = probe_media(data)
    blob = store.put(
        task_id=task_id,
        position=position,
        data=data,
        extension=media_extension(info.content_type),
    )
    return blob, info


async def record_media(
    session: AsyncSession,
    *,
    task_id: str,
    account_id: str,
    position: int,
    blob: StoredBlob,
    info: MediaInfo,
) -> MediaFile:
    """Insert the row for a stored file (flushes; the caller commits).

    Raises IntegrityError if the task already has a file at `position`.
    """
    media = MediaFile(
        id=new_id("media"),
        task_id=task_id,
        account_id=account_id,
        position=position,
        path=blob.path,
        content_type=info.content_type,
        size_bytes=blob.size_bytes,
        sha256=blob.sha256,
        width=info.width,
        height=info.height,
        duration_ms=None if info.duration_s is None else round(info.duration_s * 1000),
        created_at=now_ms(),
    )
    session.add(media)
    await session.flush()
    return media


_MEDIA = MediaFile.metadata.tables["media_file"]
_TASK_MEDIA = (
    select(*_MEDIA.c).where(_MEDIA.c.task_id == bindparam("task_id")).order_by(_MEDIA.c.position)
)


async def list_task_media(db: Reader, *, task_id: str) -> list[MediaFile]:
    """A task's files in result order (by position)."""
    rows = (await db.execute(_TASK_MEDIA, {"task_id": task_id})).mappings()
    return [MediaFile.model_construct(**row) for row in rows]


async def list_tasks_media(db: Reader, *, task_ids: list[str]) -> dict[str, list[MediaFile]]:
    """The files of several tasks in one query: by task id, each in result order. Detached
    pictures of the rows (Core, so a bare connection can read them too)."""
    if not task_ids:
        return {}
    stmt = (
        select(*_MEDIA.c)
        .where(_MEDIA.c.task_id.in_(task_ids))
        .order_by(_MEDIA.c.task_id, _MEDIA.c.position)
    )
    found: dict[str, list[MediaFile]] = {}
    for row in (await db.execute(stmt)).mappings():
        file = MediaFile.model_construct(**row)
        found.setdefault(file.task_id or "", []).append(file)
    return found


def media_url(file: MediaFile, *, base_url: str, secret: str, ttl_s: int, now_s: int) -> str:
    """A download URL for `file` that stops working `ttl_s` seconds after `now_s`."""
    return signed_media_url(file, base_url=base_url, secret=secret, expires_at_s=now_s + ttl_s)


def signed_media_url(file: MediaFile, *, base_url: str, secret: str, expires_at_s: int) -> str:
    """A download URL for `file` that works until `expires_at_s` (epoch seconds)."""
    query = urlencode({"exp": expires_at_s, "sig": sign_media(secret, file.id, expires_at_s)})
    extension = media_extension(file.content_type)
    return f"{base_url.rstrip('/')}/media/{file.id}.{extension}?{query}"


async def open_media(
    session: AsyncSession, *, file_ref: str, exp: int, sig: str, secret: str, now_s: int
) -> MediaFile:
    """The file a signed URL names. Raises NotFound("media not found").

    Bad, expired and unknown all answer the same. The signature is checked before the
    database is asked, so unsigned requests cost no query and reveal nothing by timing.
    """
    file_id, dot, extension = file_ref.rpartition(".")
    if not dot or not verify_media(secret, file_id, exp, sig, now_s=now_s):
        raise NotFound(_NOT_FOUND)
    media = await session.get(MediaFile, file_id)
    if media is None or media_extension(media.content_type) != extension:
        raise NotFound(_NOT_FOUND)
    if media.expires_at is not None and media.expires_at <= now_s * 1000:
        raise NotFound(_NOT_FOUND)  # an upload past its life, not yet swept
    return media


@dataclass(frozen=True)
class SignedRef:
    """What one of our media URLs names: the file id and the expiry it was signed with."""

    file_id: str
    extension: str
    expires_at_s: int


def signed_media_ref(url: str, *, secret: str) -> SignedRef | None:
    """The file a URL names if it is a media URL signed with `secret`, expired or not.

    Pure (no I/O). The host is ignored: only we can sign, so a URL minted behind any public
    address or proxy is recognised.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or parts.fragment:
        return None
    matched = _MEDIA_REF.fullmatch(parts.path)
    if matched is None:
        return None
    query = parse_qs(parts.query, keep_blank_values=True)
    if set(query) != {"exp", "sig"} or any(len(v) != 1 for v in query.values()):
        return None
    exp, sig = query["exp"][0], query["sig"][0]
    if not exp.isascii() or not exp.isdigit() or len(exp) > 12:
        return None
    file_id = matched.group(1)
    # now_s=0: the signature alone is checked here; callers judge the expiry.
    if not verify_media(secret, file_id, int(exp), sig, now_s=0):
        return None
    return SignedRef(file_id, matched.group(2), int(exp))


def resigned_media_url(url: str, *, secret: str, expires_at_s: int) -> str | None:
    """One of our media URLs, expired or not, signed again to work until `expires_at_s` (the
    same address otherwise); None for any other URL."""
    ref = signed_media_ref(url, secret=secret)
    if ref is None:
        return None
    query = urlencode({"exp": expires_at_s, "sig": sign_media(secret, ref.file_id, expires_at_s)})
    return urlsplit(url)._replace(query=query).geturl()


def own_media_id(url: str, *, secret: str, now_s: int) -> str | None:
    """The file id of one of our own signed, unexpired media URLs; None for any other URL.

    Such a URL is read from the media store, never fetched, so the address guard has no
    business with it. Whether the file still exists is the reader's question.
    """
    ref = signed_media_ref(url, secret=secret)
    return ref.file_id if ref is not None and now_s < ref.expires_at_s else None


def media_url_expired(url: str, *, secret: str, now_s: int) -> bool:
    """True if `url` is one of our signed media URLs whose expiry has passed.

    Lets a caller refuse it with a clear message rather than as an unknown private URL.
    """
    ref = signed_media_ref(url, secret=secret)
    return ref is not None and now_s >= ref.expires_at_s
