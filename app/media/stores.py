"""The configured media store: local disk (the default) or an S3-compatible bucket."""

from __future__ import annotations

from app.core.config import Settings
from app.media.storage import LocalMediaStore, MediaStore


def open_media_store(settings: Settings) -> MediaStore:
    """The store `GENGATE_MEDIA_BACKEND` names.

    The S3 client is imported only here, and only for the s3 backend: it adds tens of
    megabytes to a process, which the local backend must not pay.
    """
    if settings.media_backend == "local":
        return LocalMediaStore(settings.resolved_media_root)
    from app.media.s3 import S3MediaStore

    assert settings.s3_bucket is not None  # Settings refuses s3 without a bucket
    return S3MediaStore(
        bucket=settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        prefix=settings.s3_prefix,
    )
