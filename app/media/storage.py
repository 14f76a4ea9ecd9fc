"""Where media files live: the `MediaStore` interface, and its local-disk implementation.

Layout: `<yyyy>/<mm>/<dd>/<task_id>/<position>.<ext>` (UTC date of the write), below the
local root or, on S3 (app.media.s3), below the key prefix. The database row keeps this
relative path, so the root can move, or the backend change, without a migration.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

import anyio

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from app.media.models import MediaFile

# Task ids and extensions become path components: nothing that could be `..`, a separator
# or a hidden file.
_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$")
_TEMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class StoredBlob:
    """A file written by the store: `path` is relative to the root, in posix form."""

    path: str
    size_bytes: int
    sha256: str


class MediaStore(Protocol):
    """Stored media files, by path relative to the store (local disk or an S3 bucket).

    `put`, `read_bytes` and `delete_task` block on disk or network I/O: async callers run
    them in a worker thread, as they did when only the local store existed. `response` is
    what the download route returns, so each backend serves its files its own way.
    """

    def put(self, *, task_id: str, position: int, data: bytes, extension: str) -> StoredBlob:
        """Store `data` as a whole (readers never see part of it) and return where it went.

        ValueError on an unsafe id, position or extension. A retry for the same task and
        position on the same day replaces the earlier file.
        """
        ...

    def read_bytes(self, path: str) -> bytes:
        """The whole stored file. FileNotFoundError when it is gone, ValueError on a bad path."""
        ...

    def delete_task(self, task_id: str, paths: Sequence[str]) -> None:
        """Remove files of one task (or upload). ValueError, before anything is deleted, if a
        path is not that task's; files already gone are not an error."""
        ...

    async def response(
        self, media: MediaFile, *, headers: dict[str, str], request: Request
    ) -> Response:
        """A response serving `media` (with `headers`), honouring the `request`'s Range.

        FileNotFoundError (before anything is sent) when the file is gone.
        """
        ...


def result_path(*, task_id: str, position: int, extension: str) -> str:
    """The relative path a new file is stored under; ValueError on an unsafe component."""
    _check_component(task_id, "task id")
    _check_component(extension, "extension")
    if position < 0:
        raise ValueError(f"position must not be negative, got {position}")
    day = datetime.now(UTC)
    return PurePosixPath(
        f"{day:%Y}", f"{day:%m}", f"{day:%d}", task_id, f"{position}.{extension.lower()}"
    ).as_posix()


def check_task_paths(task_id: str, paths: Sequence[str]) -> None:
    """ValueError unless every path is a safe relative path in `task_id`'s own directory."""
    _check_component(task_id, "task id")
    for path in paths:
        check_relative_path(path)
        if PurePosixPath(path).parent.name != task_id:
            raise ValueError(f"media path {path!r} does not belong to task {task_id}")


def check_relative_path(path: str) -> None:
    """ValueError for a path that is empty, absolute or climbs out with `..`."""
    relative = PurePosixPath(path)
    if (
        not path
        or relative.is_absolute()
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise ValueError(f"invalid media path {path!r}")


def stored_blob(path: str, data: bytes) -> StoredBlob:
    """What the database records about `data` stored at `path`."""
    return StoredBlob(path=path, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


class LocalMediaStore:
    """Media files below `root`, written atomically; refuses any path that would leave it.

    Synchronous file I/O, like every MediaStore's put, read_bytes and delete_task.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def put(self, *, task_id: str, position: int, data: bytes, extension: str) -> StoredBlob:
        """Write `data` atomically and durably; ValueError on an unsafe id, position or extension.

        A retry for the same task and position on the same day replaces the earlier file.
        """
        relative = result_path(task_id=task_id, position=position, extension=extension)
        target = self.absolute(relative)
        for attempt in range(3):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                _write_atomically(target, data)
                break
            except FileNotFoundError:
                # A concurrent delete_task pruned a shared, momentarily empty date directory.
                if attempt == 2:
                    raise
        return stored_blob(relative, data)

    def read_bytes(self, path: str) -> bytes:
        """The whole file; FileNotFoundError when it is gone, ValueError on a bad path."""
        return self.absolute(path).read_bytes()

    async def response(
        self, media: MediaFile, *, headers: dict[str, str], request: Request
    ) -> Response:
        """Starlette's file response, which reads Range and If-Range from the request itself."""
        # Here: worker processes never serve files, so they need not load the response class.
        from app.media.responses import MediaFileResponse

        path = self.absolute(media.path)
        stat_result = await anyio.to_thread.run_sync(path.stat)
        return MediaFileResponse(
            path, media_type=media.content_type, headers=headers, stat_result=stat_result
        )

    def absolute(self, path: str) -> Path:
        """The absolute path of a stored file; ValueError if `path` would escape the root."""
        relative = PurePosixPath(path)
        if not path or relative.is_absolute() or "\\" in path or "\x00" in path:
            raise ValueError(f"invalid media path {path!r}")
        # resolve() also follows symlinks, so a link inside the root pointing out is refused.
        candidate = (self.root / relative).resolve()
        if candidate == self.root or not candidate.is_relative_to(self.root):
            raise ValueError(f"media path {path!r} escapes the media root")
        return candidate

    def delete_task(self, task_id: str, paths: Sequence[str]) -> None:
        """Remove a task's files, stale temp files and then-empty directories.

        ValueError (before anything is deleted) if a path is not inside that task's directory.
        Files already gone are not an error, so a repeated delete is harmless.
        """
        _check_component(task_id, "task id")
        files = [self.absolute(path) for path in paths]
        for file in files:
            if file.parent.name != task_id:
                raise ValueError(f"media path {file} does not belong to task {task_id}")
        for file in files:
            file.unlink(missing_ok=True)
        for directory in {file.parent for file in files}:
            for stale in directory.glob(f".*{_TEMP_SUFFIX}"):
                stale.unlink(missing_ok=True)
            self._prune_empty(directory)

    def _prune_empty(self, directory: Path) -> None:
        # Walk up from the task directory through dd/mm/yyyy, stopping at the first one still
        # in use (another task's files) and never removing the root itself.
        while directory != self.root and directory.is_relative_to(self.root):
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                return
            directory = directory.parent


def _check_component(value: str, what: str) -> None:
    if not _SAFE_COMPONENT.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}")


def _write_atomically(target: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename over the target, fsync the directory.

    Readers see either no file or the whole file, and after a crash the rename survives only
    together with the bytes it points to.
    """
    fd, temp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=_TEMP_SUFFIX
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # Platforms without directory handles (Windows) make the rename durable alone.
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
