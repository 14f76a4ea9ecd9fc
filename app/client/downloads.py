"""Result files to disk: fresh signed URLs from /v1/assets, streamed beside their final
name, checked against the server's size and sha256, then renamed into place."""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.client.errors import ApiError, DownloadError, TaskNotSucceeded
from app.client.models import SUCCESS, Task, TaskCreated, TaskItem
from app.client.plans import asset, task_item
from app.client.steps import RETRY_STATUSES, Fetch, Plan, Settings, Sleep, backoff

_COMPLETED = 2  # /v1 task status of a task with results


class FileSink:
    """Bytes of one result file: written beside their final name, hashed on the way, and
    renamed into place only when whole and matching the server's sha256."""

    def __init__(self, path: Path, *, sha256: str | None, size: int | None) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".part")
        self.expected_sha256 = sha256
        self.expected_size = size
        self._hash = hashlib.sha256()
        self._size = 0
        self._file: Any = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._hash, self._size = hashlib.sha256(), 0
        self._file = self.partial.open("wb")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._hash.update(chunk)
        self._size += len(chunk)

    def finish(self) -> Path:
        """Raises DownloadError when the bytes are not the server's (and keeps none)."""
        self._file.close()
        digest = self._hash.hexdigest()
        if self.expected_size is not None and self._size != self.expected_size:
            self.discard()
            raise DownloadError(
                f"{self.path.name}: got {self._size} bytes, the server has {self.expected_size}"
            )
        if self.expected_sha256 is not None and digest != self.expected_sha256:
            self.discard()
            raise DownloadError(
                f"{self.path.name}: sha256 {digest} is not the server's {self.expected_sha256}"
            )
        self.partial.replace(self.path)
        return self.path

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
        self.partial.unlink(missing_ok=True)


def _extension(content_type: str, url: str) -> str:
    guessed = mimetypes.guess_extension(content_type.split(";")[0].strip())
    if guessed:
        return ".jpg" if guessed in (".jpe", ".jpeg") else guessed
    return Path(urlsplit(url).path).suffix


def download(
    settings: Settings, task: Task | TaskItem | TaskCreated | str, directory: Path
) -> Plan[list[Path]]:
    """Every result file of a succeeded task, streamed into `directory` as
    `<task id>-<index><ext>`, each checked against the server's size and sha256.

    Raises TaskNotSucceeded for a task without results, DownloadError, ApiError.
    """
    task_id = task_id_of(task)
    if isinstance(task, Task | TaskCreated) and task.state != SUCCESS:
        raise TaskNotSucceeded(
            f"task {task_id} has no results: it is {task.state}", task_id=task_id, state=task.state
        )
    item = task if isinstance(task, TaskItem) else (yield from task_item(settings, task_id))
    if item.status != _COMPLETED:
        state = {0: "pending", 1: "processing", 3: "failed"}.get(item.status, str(item.status))
        raise TaskNotSucceeded(
            f"task {task_id} has no results: it is {state}", task_id=task_id, state=state
        )
    paths: list[Path] = []
    for asset_id in item.response.assets:
        found = yield from asset(settings, asset_id)
        target = directory / f"{task_id}-{found.index}{_extension(found.content_type, found.url)}"
        sink = FileSink(target, sha256=found.sha256, size=found.bytes)
        paths.append((yield from _fetch(settings, found.url, sink)))
    return paths


def task_id_of(task: Task | TaskItem | TaskCreated | str) -> str:
    if isinstance(task, str):
        return task
    return task.id if isinstance(task, TaskItem) else task.task_id


def _fetch(settings: Settings, url: str, sink: FileSink) -> Plan[Path]:
    attempt = 0
    while True:
        outcome = yield Fetch(url, sink)
        if isinstance(outcome, Path):
            return outcome
        retryable = isinstance(outcome, httpx.TransportError) or (
            isinstance(outcome, ApiError) and outcome.status in RETRY_STATUSES
        )
        if retryable and attempt < settings.max_retries:
            yield Sleep(backoff(attempt))
            attempt += 1
            continue
        if isinstance(outcome, ApiError):
            raise DownloadError(f"{sink.path.name}: {outcome.status} {outcome.message}")
        raise DownloadError(f"{sink.path.name}: {type(outcome).__name__}: {outcome}") from outcome
