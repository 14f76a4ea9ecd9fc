"""A fake BytePlus ModelArk video-task API on loopback, for the `modelark` adapter.

It speaks the documented protocol: `POST /api/v3/contents/generations/tasks` creates a task,
`GET .../tasks/{id}` reports it (queued -> running -> succeeded over a few polls), `DELETE
.../tasks/{id}` cancels a queued one (a finished one's record is deleted; a running one is
refused). A finished task's `content.video_url` points at a real small MP4 served by this
server, which a test can delete ("the upstream URL expired").

Switches a test sets on the running fake:
- `script`: how tasks created from now on end (`succeeded`, `failed` with an error code,
  `cancelled`, `expired`) and how many polls each stage lasts.
- `fail_next(...)`: canned answers for the next requests (401, 429 with Retry-After, 500,
  malformed JSON, a hang that lasts until the fake stops or `release()` is called).

The exact error code ModelArk sends when refusing to cancel a running task is not documented;
the fake answers 409 `OperationDenied.InvalidState`.

Run it alone for manual or cross-process checks: `python -m tests.fakes.modelark --port 8790`.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from app.providers.local_video import render_video
from tests.fakes.serving import Answer, Request, serving, wait_for_interrupt

TASKS_PATH = "/api/v3/contents/generations/tasks"
FILES_PATH = "/files/"
DEFAULT_KEY = "ark-fake-key-0123456789"


@dataclass(frozen=True)
class Script:
    """How a task created while this script is set goes."""

    outcome: str = "succeeded"  # succeeded | failed | cancelled | expired
    error_code: str = "InternalServiceError"
    error_message: str = "the service failed the task"
    queued_polls: int = 1  # GETs answered `queued` before the task runs
    running_polls: int = 1  # GETs answered `running` before it ends
    progress: int | None = None  # reported while running, when set
    video: bytes | None = None  # served instead of a rendered MP4
    video_stored: bool = True  # False: the video_url answers 404 from the start


@dataclass(frozen=True)
class Canned:
    """One canned answer; `hang` holds the request until the fake is released or stops."""

    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    # Which requests it applies to: a method ("POST", "GET", "DELETE"); None for any.
    method: str | None = None


@dataclass
class FakeTask:
    id: str
    body: dict[str, Any]
    script: Script
    status: str = "queued"
    polls: int = 0
    created_at: int = field(default_factory=lambda: int(time.time()))


class FakeModelArk:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.base_url = ""
        self.script = Script()
        self.requests: list[Request] = []
        self.tasks: dict[str, FakeTask] = {}
        self.videos: dict[str, bytes] = {}
        self._canned: deque[Canned] = deque()
        self._lock = threading.Lock()
        self._release = threading.Event()

    # --- switches -----------------------------------------------------------------------

    def fail_next(self, *answers: Canned) -> None:
        with self._lock:
            self._canned.extend(answers)

    def release(self) -> None:
        """Let hanging requests go (they answer 500)."""
        self._release.set()

    def expire_video(self, task_id: str) -> None:
        """The upstream URL expires: the file is gone."""
        with self._lock:
            self.videos.pop(task_id, None)

    def on(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method]

    # --- protocol -----------------------------------------------------------------------

    def handle(self, request: Request) -> Answer:
        with self._lock:
            self.requests.append(request)
            canned = self._take_canned(request.method)
        if canned is not None:
            if canned.hang:
                self._release.wait()
                return 500, {}, b'{"error": {"code": "InternalServiceError"}}'
            return canned.status, canned.headers, canned.body
        if request.path.startswith(FILES_PATH):
            return self._file(request)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._auth_refusal(request)
        if request.path == TASKS_PATH and request.method == "POST":
            return self._create(request)
        if request.path.startswith(TASKS_PATH + "/"):
            task_id = request.path.removeprefix(TASKS_PATH + "/")
            if request.method == "GET":
                return self._get(task_id)
            if request.method == "DELETE":
                return self._delete(task_id)
        return _error(404, "NotFound", f"no route {request.method} {request.path}")

    def _take_canned(self, method: str) -> Canned | None:
        for index, canned in enumerate(self._canned):
            if canned.method in (None, method):
                del self._canned[index]
                return canned
        return None

    def _auth_refusal(self, request: Request) -> Answer:
        # Real upstreams echo (part of) a wrong key; the adapter must not pass it on.
        sent = request.headers.get("authorization", "").removeprefix("Bearer ")
        return _error(401, "AuthenticationError", f"the API key {sent} is invalid")

    def _create(self, request: Request) -> Answer:
        try:
            body = request.json()
        except ValueError:
            return _error(400, "InvalidParameter", "the request body is not JSON")
        if not isinstance(body, dict) or not body.get("model") or not body.get("content"):
            return _error(400, "MissingParameter", "model and content are required")
        task = FakeTask(id="cgt-" + secrets.token_hex(8), body=body, script=self.script)
        with self._lock:
            self.tasks[task.id] = task
        return _json(200, {"id": task.id})

    def _get(self, task_id: str) -> Answer:
        with self._lock:
            task = self.tasks.get(task_id)
            if task is None:
                return _error(404, "ResourceNotFound", f"task {task_id} not found")
            self._advance(task)
            return _json(200, self._describe(task))

    def _advance(self, task: FakeTask) -> None:
        task.polls += 1
        script = task.script
        if task.status == "queued" and task.polls > script.queued_polls:
            task.status = "running"
        if task.status == "running" and task.polls > script.queued_polls + script.running_polls:
            task.status = script.outcome
            if script.outcome == "succeeded" and script.video_stored:
                prompt = next(
                    (c.get("text", "") for c in task.body["content"] if c.get("type") == "text"),
                    "",
                )
                self.videos[task.id] = script.video or render_video(
                    str(prompt), width=32, height=32, duration_s=0.5, fps=8
                )

    def _describe(self, task: FakeTask) -> dict[str, Any]:
        body = task.body
        answer: dict[str, Any] = {
            "id": task.id,
            "model": body.get("model"),
            "status": task.status,
            "created_at": task.created_at,
            "updated_at": int(time.time()),
        }
        if task.status == "running" and task.script.progress is not None:
            answer["progress"] = task.script.progress
        if task.status == "succeeded":
            token = secrets.token_hex(8)
            answer["content"] = {
                "video_url": f"{self.base_url}{FILES_PATH}{task.id}.mp4?X-Tos-Signature={token}"
            }
            answer["usage"] = {"completion_tokens": 108900, "total_tokens": 108900}
            for name in ("ratio", "resolution", "duration", "seed"):
                if name in body:
                    answer[name] = body[name]
        if task.status == "failed":
            answer["error"] = {"code": task.script.error_code, "message": task.script.error_message}
        return answer

    def _delete(self, task_id: str) -> Answer:
        with self._lock:
            task = self.tasks.get(task_id)
            if task is None:
                return _error(404, "ResourceNotFound", f"task {task_id} not found")
            if task.status == "queued":
                task.status = "cancelled"
                return _json(200, {})
            if task.status == "running":
                return _error(
                    409, "OperationDenied.InvalidState", "a running task cannot be cancelled"
                )
            del self.tasks[task_id]
            return _json(200, {})

    def _file(self, request: Request) -> Answer:
        name = request.path.removeprefix(FILES_PATH).split("?", 1)[0]
        with self._lock:
            data = self.videos.get(name.removesuffix(".mp4"))
        if data is None:
            return 404, {"Content-Type": "application/xml"}, b"<Error>NoSuchKey</Error>"
        return 200, {"Content-Type": "video/mp4"}, data


def _json(status: int, body: Any) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _error(status: int, code: str, message: str) -> Answer:
    return _json(status, {"error": {"code": code, "message": message, "type": "BadRequest"}})


def error_body(code: str, message: str = "refused") -> bytes:
    """An upstream error body, for canned answers."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


@contextmanager
def running_modelark(
    api_key: str = DEFAULT_KEY, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[FakeModelArk]:
    """The fake on `host`, with its `base_url` set; stopped (and hangs released) on exit."""
    fake = FakeModelArk(api_key)

    with serving(fake.handle, host=host, port=port) as base_url:
        fake.base_url = base_url
        try:
            yield fake
        finally:
            fake.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--api-key", default=DEFAULT_KEY)
    args = parser.parse_args()
    with running_modelark(args.api_key, host=args.host, port=args.port) as fake:
        wait_for_interrupt("fake ModelArk", fake.base_url)


if __name__ == "__main__":
    main()
