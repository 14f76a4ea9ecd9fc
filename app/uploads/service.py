"""Uploads: images a user has on disk, stored under the account for use as task inputs.

The type is what the bytes decode as, never what the client declares; the size and pixel
limits come from the settings. An upload lives `upload_ttl_seconds`; its signed URL is
valid exactly that long, and `purge_expired_uploads` deletes it afterwards.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import warnings
from dataclasses import dataclass

import anyio
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.errors import AppError, InvalidInput
from app.core.ids import new_id, now_ms
from app.db.hooks import after_commit
from app.keys.scopes import Scope
from app.keys.service import Principal
from app.limits.service import GROUP_CREATE
from app.media.models import KIND_UPLOAD, MediaFile
from app.media.service import media_extension, signed_media_url
from app.media.storage import MediaStore
from app.runtime import Runtime
from app.uploads.schemas import UploadRead

log = logging.getLogger("gengate.uploads")

# Pillow format -> content type. MPO is the JPEG variant cameras write (several pictures).
_FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
# Only these decoders ever see uploaded bytes (MPO files open through the JPEG one).
_OPEN_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
ALLOWED_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
_TYPE_NAMES = "a PNG, JPEG, WebP or GIF image"
MAX_FILENAME = 255
_PURGE_BATCH = 200


class PayloadTooLarge(AppError):
    status = 413


@dataclass(frozen=True)
class UploadSource:
    """Bytes to store, and the request field they came in (errors name it)."""

    data: bytes
    field: str


@dataclass(frozen=True)
class _ImageFacts:
    content_type: str
    width: int
    height: int


def upload_from_base64(
    text: object,
    *,
    content_type: object = None,
    filename: object = None,
    max_bytes: int,
    field: str = "data",
    content_type_field: str = "contentType",
) -> UploadSource:
    """Decode `data`: plain base64 or a `data:<type>;base64,` URL.

    `content_type` and `filename` are optional hints checked for shape only: the stored
    type is always the decoded one. Errors name the fields as the transport calls them.
    Raises InvalidInput naming the field, PayloadTooLarge.
    """
    check_content_type(content_type, field=content_type_field)
    check_filename(filename)
    if not isinstance(text, str):
        raise InvalidInput(f"{field} must be a base64 string", field=field)
    payload = text.strip()
    if payload[:5].lower() == "data:":
        header, comma, payload = payload.partition(",")
        if not comma or not header.lower().endswith(";base64"):
            raise InvalidInput(
                f"{field}: a data: URL must be base64, as in data:image/png;base64,...",
                field=field,
            )
        check_content_type(header[5 : -len(";base64")] or None, field=field)
    payload = "".join(payload.split())  # MIME base64 wraps lines
    if not payload:
        raise InvalidInput(f"{field} is empty; send the image's bytes base64-encoded", field=field)
    # Refuse before decoding: 4 characters carry 3 bytes.
    if (len(payload) // 4) * 3 > max_bytes + 3:
        raise upload_too_large(field, max_bytes)
    try:
        data = _b64decode(payload)
    except (binascii.Error, ValueError):
        raise InvalidInput(
            f"{field} is not valid base64 (standard or URL-safe alphabet)", field=field
        ) from None
    return UploadSource(_check_size(data, field, max_bytes), field)


def upload_from_file(data: bytes, *, max_bytes: int, field: str = "file") -> UploadSource:
    """Bytes sent as a multipart file. Raises InvalidInput if empty, PayloadTooLarge."""
    return UploadSource(_check_size(data, field, max_bytes), field)


def check_content_type(value: object, *, field: str) -> None:
    """A declared content type, if any, must name one of the image types we store."""
    if value is None:
        return
    base = value.split(";", 1)[0].strip().lower() if isinstance(value, str) else None
    if base not in ALLOWED_TYPES:
        raise InvalidInput(
            f"{field} must be one of {', '.join(ALLOWED_TYPES)}",
            field=field,
            allowed=list(ALLOWED_TYPES),
        )


def check_filename(value: object) -> None:
    """An optional name for the caller's records: a short, printable string."""
    if value is None:
        return
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_FILENAME
        or not value.isprintable()
        or not _utf8(value)
    ):
        raise InvalidInput(
            f"filename must be 1 to {MAX_FILENAME} printable characters", field="filename"
        )


async def create_upload(
    session: AsyncSession,
    *,
    runtime: Runtime,
    principal: Principal,
    source: UploadSource,
    base_url: str,
) -> UploadRead:
    """Check, store and record an uploaded image under the principal's account.

    Counts against the key's jobs.createTask rate limit (an upload is the first step of a
    create, and storage is not free). Raises PermissionDenied, RateLimited, InvalidInput
    (not an image we take, too many pixels).
    """
    principal.require(Scope.TASKS_CREATE)
    await runtime.limiter.hit(principal, GROUP_CREATE)
    settings = runtime.settings
    facts = await anyio.to_thread.run_sync(
        _inspect_image, source.data, source.field, settings.upload_max_pixels
    )
    file_id = new_id("file")
    store = runtime.media_store
    # The directory is named by the upload's id, as a result's is by its task's.
    blob = await anyio.to_thread.run_sync(
        lambda: store.put(
            task_id=file_id,
            position=0,
            data=source.data,
            extension=media_extension(facts.content_type),
        )
    )
    created_at = now_ms()
    expires_at_s = created_at // 1000 + settings.upload_ttl_seconds
    media = MediaFile(
        id=file_id,
        task_id=None,
        account_id=principal.account_id,
        kind=KIND_UPLOAD,
        position=0,
        path=blob.path,
        content_type=facts.content_type,
        size_bytes=blob.size_bytes,
        sha256=blob.sha256,
        width=facts.width,
        height=facts.height,
        created_at=created_at,
        expires_at=expires_at_s * 1000,
    )
    session.add(media)
    await session.flush()
    url = signed_media_url(
        media, base_url=base_url, secret=runtime.signing_secret, expires_at_s=expires_at_s
    )
    return UploadRead(
        id=media.id,
        url=url,
        content_type=media.content_type,
        size_bytes=media.size_bytes,
        width=facts.width,
        height=facts.height,
        sha256=media.sha256,
        expires_at=expires_at_s * 1000,
    )


async def purge_expired_uploads(session: AsyncSession, store: MediaStore, now_ms: int) -> int:
    """Delete up to a batch of uploads whose time is up; returns how many.

    Rows go in the caller's transaction; the files once it commits (a rolled-back purge
    leaves both), so a file never outlives its row's deletion by more than a crash.
    """
    stmt = (
        select(col(MediaFile.id), col(MediaFile.path))
        .where(col(MediaFile.kind) == KIND_UPLOAD, col(MediaFile.expires_at) <= now_ms)
        .order_by(col(MediaFile.expires_at))
        .limit(_PURGE_BATCH)
    )
    expired = [(row[0], row[1]) for row in (await session.execute(stmt)).all()]
    if not expired:
        return 0
    await session.execute(
        delete(MediaFile).where(col(MediaFile.id).in_([file_id for file_id, _ in expired]))
    )
    after_commit(session, lambda: _delete_files(store, expired))
    return len(expired)


def _delete_files(store: MediaStore, expired: list[tuple[str, str]]) -> None:
    for file_id, path in expired:
        try:
            store.delete_task(file_id, [path])
        except Exception:  # an unreachable bucket too: the row is gone, the file only costs space
            log.warning("could not delete the file of expired upload %s", file_id, exc_info=True)


def _inspect_image(data: bytes, field: str, max_pixels: int) -> _ImageFacts:
    """Decode the first frame fully: a header alone would let a truncated file through."""
    from PIL import Image  # here: processes that never take an upload do not load Pillow

    not_image = InvalidInput(
        f"{field} is not {_TYPE_NAMES}", field=field, allowed=list(ALLOWED_TYPES)
    )
    with warnings.catch_warnings():
        # Pillow's own bomb check warns below its hard limit; ours is the one that counts.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
        except Image.DecompressionBombError:
            raise _too_many_pixels(field, max_pixels, None) from None
        except (OSError, ValueError, SyntaxError):
            raise not_image from None
        with image:
            content_type = _FORMATS.get(image.format or "")
            if content_type is None:
                raise not_image
            width, height = image.size
            if width * height > max_pixels:
                raise _too_many_pixels(field, max_pixels, (width, height))
            try:
                image.load()
            except Image.DecompressionBombError:
                raise _too_many_pixels(field, max_pixels, None) from None
            except (OSError, ValueError, SyntaxError, EOFError):
                raise InvalidInput(
                    f"{field} could not be decoded: the image is truncated or corrupt",
                    field=field,
                ) from None
    return _ImageFacts(content_type, width, height)


def _b64decode(payload: str) -> bytes:
    if not payload.isascii():
        raise ValueError("not ASCII")
    # Both alphabets; padding optional, as many encoders drop it.
    standard = payload.replace("-", "+").replace("_", "/")
    return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)


def _check_size(data: bytes, field: str, max_bytes: int) -> bytes:
    if not data:
        raise InvalidInput(f"{field} is empty; send a PNG, JPEG, WebP or GIF image", field=field)
    if len(data) > max_bytes:
        raise upload_too_large(field, max_bytes)
    return data


def upload_too_large(field: str, max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{field} is larger than the upload limit of {max_bytes} bytes",
        field=field,
        limit=max_bytes,
    )


def _too_many_pixels(field: str, max_pixels: int, size: tuple[int, int] | None) -> InvalidInput:
    shown = f"{size[0]}x{size[1]} pixels" if size else "too many pixels"
    return InvalidInput(
        f"{field} is {shown}; the limit is {max_pixels} pixels (width x height)",
        field=field,
        limit=max_pixels,
    )


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
