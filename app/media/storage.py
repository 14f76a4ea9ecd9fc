"""Result files on local disk, under one root, written atomically.

Layout: `<root>/<yyyy>/<mm>/<dd>/<task_id>/<position>.<ext>` (UTC date of the write). The
database row keeps the path relative to the root, so the root can move without a migration.
Everything here is synchronous file I/O: async callers run it in a worker thread.
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


class LocalMediaStore:
    """Media files below `root`; refuses any path that would leave it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def put(self, *, task_id: str, position: int, data: bytes, extension: str) -> StoredBlob:
        """Write `data` atomically and durably; ValueError on an unsafe id, position or extension.

        A retry for the same task and position on the same day replaces the earlier file.
        """
        _check_component(task_id, "task id")
        _check_component(extension, "extension")
        if position < 0:
            raise ValueError(f"position must not be negative, got {position}")
        day = datetime.now(UTC)
        relative = PurePosixPath(
            f"{day:%Y}", f"{day:%m}", f"{day:%d}", task_id, f"{position}.{extension.lower()}"
        )
        target = self.absolute(relative.as_posix())
        for attempt in range(3):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                _write_atomically(target, data)
                break
            except FileNotFoundError:
                # A concurrent delete_task pruned a shared, momentarily empty date directory.
                if attempt == 2:
                    raise
        return StoredBlob(
            path=relative.as_posix(),
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
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
