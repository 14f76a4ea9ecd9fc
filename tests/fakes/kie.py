"""A fake kie-style jobs API on loopback, for the `kie` adapter.

It speaks the documented protocol: `POST /api/v1/jobs/createTask` creates a task and
answers `{"code": 200, "msg": "success", "data": {"taskId"}}`; `GET /api/v1/jobs/recordInfo
?taskId=` reports it (waiting -> queuing -> generating -> success or fail over a few polls),
with `progress`, `queuePosition`, `resultJson` (`{"resultUrls": [...]}` as a JSON string),
`failCode` / `failMsg`; `POST /api/v1/jobs/cancel?taskId=` (gengate's, off with
`has_cancel=False` as on kie itself, which then answers 404) cancels a task not yet
generating. Result URLs point at real small files served by this server, which a test can
delete ("the upstream URL expired"). `finish(task_id)` ends a task at once and posts the
kie callback (`{"code", "msg", "data"}`) to its `callBackUrl`, as an upstream finishing on
its own does.

Switches a test sets on the running fake:
- `script`: how tasks created from now on go (how many polls each state lasts, the queue
  position and progress they report, success with N results or fail with a code).
- `dedupes`: honour `X-Request-Id` as an idempotency key (gengate does, kie does not).
- `fail_next(...)`: canned answers for the next requests to one endpoint: any status with
  an envelope (`envelope(code, msg)`; as kie does, the error may come in an HTTP 200 body),
  429 with Retry-After, malformed JSON, a connection dropped after the body was read, or
  a hang that lasts until the fake stops or `release()` is called.

Run it alone for manual or cross-process checks: `python -m tests.fakes.kie --port 8791`.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from app.providers.local_render import render_text_to_image
from app.providers.local_video import render_video
from tests.fakes.serving import Answer, Request, serving, wait_for_interrupt

JOBS_PATH = "/api/v1/jobs"
FILES_PATH = "/files/"
DEFAULT_KEY = "kie-fake-key-0123456789"


@dataclass(frozen=True)
class Script:
    """How a task created while this script is set goes."""

    outcome: str = "success"  # success | fail
    fail_code: str = "500"
    fail_msg: str = "the model failed to generate"
    waiting_polls: int = 1  # recordInfo answers `waiting` this many times
    queuing_polls: int = 0  # then `queuing`
    generating_polls: int = 1  # then `generating`, then the outcome
    queue_position: int | None = None  # reported while waiting
    progress: Any = None  # reported while generating (a number, a fraction, a string)
    results: int = 1  # how many result URLs a success has
    result: bytes | None = None  # served instead of a rendered file
    content_type: str | None = None  # the result's Content-Type; None: the real one
    result_stored: bool = True  # False: the result URLs answer 404 from the start
    credits: int | None = None  # reported as `credits` on the record, when set


@dataclass(frozen=True)
class Canned:
    """One canned answer. `hang` holds the request until the fake is released or stops;
    `drop` closes the connection without answering, after reading the request."""

    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    drop: bool = False
    # Which endpoint it answers: "createTask", "recordInfo", "cancel"; None for any.
    endpoint: str | None = None


@dataclass
class FakeTask:
    id: str
    body: dict[str, Any]
    script: Script
    state: str = "waiting"
    polls: int = 0
    fail_code: str | None = None
    fail_msg: str | None = None
    created_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    completed_at_ms: int | None = None


class FakeKie:
    def __init__(self, api_key: str, *, dedupes: bool = False, has_cancel: bool = True) -> None:
        self.api_key = api_key
        self.base_url = ""
        self.script = Script()
        self.dedupes = dedupes
        self.has_cancel = has_cancel
        self.requests: list[Request] = []
        self.tasks: dict[str, FakeTask] = {}
        self.files: dict[str, tuple[bytes, str]] = {}
        self._request_ids: dict[str, str] = {}
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

    def expire_results(self, task_id: str) -> None:
        """The upstream URLs expire: the files are gone."""
        with self._lock:
            for name in [n for n in self.files if n.startswith(task_id + "-")]:
                del self.files[name]

    def finish(self, task_id: str) -> None:
        """End the task as scripted now, and post the callback to its callBackUrl."""
        with self._lock:
            task = self.tasks[task_id]
            self._end(task)
            record = self._record(task)
            url = task.body.get("callBackUrl")
        if isinstance(url, str) and url:
            ok = task.state == "success"
            body = {"code": 200 if ok else 501, "msg": "success" if ok else "fail", "data": record}
            request = urllib.request.Request(
                url,
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=5) as answer:
                answer.read()

    def on(self, endpoint: str) -> list[Request]:
        return [r for r in self.requests if _endpoint(r) == endpoint]

    # --- protocol -----------------------------------------------------------------------

    def handle(self, request: Request) -> Answer | None:
        """The answer to send; None drops the connection without one."""
        with self._lock:
            self.requests.append(request)
            canned = self._take_canned(_endpoint(request))
        if canned is not None:
            if canned.hang:
                self._release.wait()
                return _json(500, envelope(500, "server error"))
            if canned.drop:
                return None
            return canned.status, canned.headers, canned.body
        if request.path.startswith(FILES_PATH):
            return self._file(request)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._auth_refusal(request)
        route = (request.method, _endpoint(request))
        if route == ("POST", "createTask"):
            return self._create(request)
        if route == ("GET", "recordInfo"):
            return self._record_info(request.query.get("taskId", ""))
        if route == ("POST", "cancel") and self.has_cancel:
            return self._cancel(request.query.get("taskId", ""))
        return _json(404, envelope(404, "not found"))

    def _take_canned(self, endpoint: str) -> Canned | None:
        for index, canned in enumerate(self._canned):
            if canned.endpoint in (None, endpoint):
                del self._canned[index]
                return canned
        return None

    def _auth_refusal(self, request: Request) -> Answer:
        # Real upstreams echo (part of) a wrong key; the adapter must not pass it on.
        sent = request.headers.get("authorization", "").removeprefix("Bearer ")
        return _json(401, envelope(401, f"You do not have access: the key {sent} is invalid"))

    def _create(self, request: Request) -> Answer:
        try:
            body = request.json()
        except ValueError:
            return _json(422, envelope(422, "the request body is not JSON"))
        if not isinstance(body, dict) or not body.get("model"):
            return _json(422, envelope(422, "model is required"))
        given = body.get("input")
        # A prompt, or images to work on (an upscale has no prompt).
        if not isinstance(given, dict) or not (
            given.get("prompt") or given.get("input_urls") or given.get("image_urls")
        ):
            return _json(422, envelope(422, "input.prompt is required"))
        request_id = request.headers.get("x-request-id")
        with self._lock:
            if self.dedupes and request_id in self._request_ids:
                task = self.tasks[self._request_ids[request_id]]
            else:
                task = FakeTask(id="kie" + secrets.token_hex(8), body=body, script=self.script)
                self.tasks[task.id] = task
                if request_id:
                    self._request_ids[request_id] = task.id
        return _json(200, envelope(200, "success", {"taskId": task.id}))

    def _record_info(self, task_id: str) -> Answer:
        with self._lock:
            task = self.tasks.get(task_id)
            if task is None:
                return _json(404, envelope(404, "recordInfo is null"))
            self._advance(task)
            return _json(200, envelope(200, "success", self._record(task)))

    def _advance(self, task: FakeTask) -> None:
        if task.state in ("success", "fail"):
            return
        task.polls += 1
        script = task.script
        stages = (
            ("waiting", script.waiting_polls),
            ("queuing", script.queuing_polls),
            ("generating", script.generating_polls),
        )
        seen = 0
        for state, polls in stages:
            seen += polls
            if task.polls <= seen:
                task.state = state
                return
        self._end(task)

    def _end(self, task: FakeTask) -> None:
        if task.state in ("success", "fail"):
            return
        script = task.script
        task.state = script.outcome
        task.completed_at_ms = int(time.time() * 1000)
        if script.outcome == "fail":
            task.fail_code, task.fail_msg = script.fail_code, script.fail_msg
        elif script.result_stored:
            for index in range(script.results):
                self.files[f"{task.id}-{index}"] = self._render(task, index)

    def _render(self, task: FakeTask, index: int) -> tuple[bytes, str]:
        script = task.script
        prompt = f"{task.body['input'].get('prompt', '')} #{index}"
        if script.result is not None:
            data, real_type = script.result, "application/octet-stream"
        elif "video" in str(task.body["model"]):
            data = render_video(prompt, width=32, height=32, duration_s=0.5, fps=8)
            real_type = "video/mp4"
        else:
            data = render_text_to_image(prompt, width=64, height=64, output_format="png")
            real_type = "image/png"
        return data, script.content_type or real_type

    def _record(self, task: FakeTask) -> dict[str, Any]:
        script = task.script
        now_ms = int(time.time() * 1000)
        record: dict[str, Any] = {
            "taskId": task.id,
            "model": task.body.get("model"),
            "state": task.state,
            "param": json.dumps(task.body),
            "resultJson": None,
            "failCode": task.fail_code,
            "failMsg": task.fail_msg,
            "costTime": None,
            "completeTime": task.completed_at_ms,
            "createTime": task.created_at_ms,
            "updateTime": now_ms,
        }
        if task.state == "waiting" and script.queue_position is not None:
            record["queuePosition"] = script.queue_position
        if task.state == "generating" and script.progress is not None:
            record["progress"] = script.progress
        if task.completed_at_ms is not None:
            record["costTime"] = task.completed_at_ms - task.created_at_ms
        if task.state == "success":
            token = secrets.token_hex(8)
            urls = [
                f"{self.base_url}{FILES_PATH}{task.id}-{i}?Signature={token}"
                for i in range(script.results)
            ]
            record["resultJson"] = json.dumps({"resultUrls": urls})
            if script.credits is not None:
                record["credits"] = script.credits
        return record

    def _cancel(self, task_id: str) -> Answer:
        with self._lock:
            task = self.tasks.get(task_id)
            if task is None:
                return _json(404, envelope(404, "task not found"))
            if task.state not in ("waiting", "queuing"):
                return _json(409, envelope(409, f"task is already {task.state}"))
            task.state, task.fail_code, task.fail_msg = "fail", "canceled", "canceled by the caller"
            task.completed_at_ms = int(time.time() * 1000)
            return _json(200, envelope(200, "success", self._record(task)))

    def _file(self, request: Request) -> Answer:
        name = request.path.removeprefix(FILES_PATH)
        with self._lock:
            stored = self.files.get(name)
        if stored is None:
            return 404, {"Content-Type": "application/xml"}, b"<Error>NoSuchKey</Error>"
        data, content_type = stored
        return 200, {"Content-Type": content_type}, data


def _endpoint(request: Request) -> str:
    """createTask, recordInfo or cancel: the last part of a jobs API path."""
    return request.path.removeprefix(JOBS_PATH + "/")


def envelope(code: int, msg: str, data: Any = None) -> bytes:
    """An answer body in the jobs API's envelope, for canned answers."""
    return json.dumps({"code": code, "msg": msg, "data": data}).encode()


def _json(status: int, body: bytes) -> Answer:
    return status, {"Content-Type": "application/json"}, body


@contextmanager
def running_kie(
    api_key: str = DEFAULT_KEY,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    dedupes: bool = False,
    has_cancel: bool = True,
) -> Iterator[FakeKie]:
    """The fake on `host`, with its `base_url` set; stopped (and hangs released) on exit."""
    fake = FakeKie(api_key, dedupes=dedupes, has_cancel=has_cancel)

    with serving(fake.handle, host=host, port=port) as base_url:
        fake.base_url = base_url
        try:
            yield fake
        finally:
            fake.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--api-key", default=DEFAULT_KEY)
    parser.add_argument("--dedupes", action="store_true", help="honour X-Request-Id")
    parser.add_argument("--no-cancel", action="store_true", help="no cancel route, as kie")
    args = parser.parse_args()
    with running_kie(
        args.api_key,
        host=args.host,
        port=args.port,
        dedupes=args.dedupes,
        has_cancel=not args.no_cancel,
    ) as fake:
        wait_for_interrupt("fake kie", fake.base_url)


if __name__ == "__main__":
    main()
