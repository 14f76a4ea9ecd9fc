"""A fake fal queue API on loopback, for the `fal` adapter.

It speaks the documented protocol: `POST /{model_id}` (with `?fal_webhook=`) queues a
request; `GET /{app}/requests/{id}/status` reports it (202 `IN_QUEUE` with a queue position
that counts down, 202 `IN_PROGRESS` with logs when `?logs=1`, then 200 `COMPLETED` with
`metrics`, and `error` / `error_type` when it failed); `GET /{app}/requests/{id}` answers
the model's output (or its error: 422 with a `detail` list, 5xx with `error_type` and
`X-Fal-Error-Type`); `PUT /{app}/requests/{id}/cancel` answers 202 `CANCELLATION_REQUESTED`
or 400 `ALREADY_COMPLETED`. `{app}` is the app id (`owner/app`, without the endpoint path):
the fake answers 404 to any other. Results point at small real PNGs or MP4s served by this
server under `/files/`, which a test can delete ("the upstream URL expired").

A request advances one step per status poll; with `Script.run_s` it runs on its own instead
and is done that many seconds after it was queued. When it completes, the fake POSTs fal's
webhook body (`{"request_id", "gateway_request_id", "status": "OK"|"ERROR", "payload",
"error"}`) to the `fal_webhook` URL it was given, without fal's ED25519 signature.

Switches a test sets on the running fake:
- `script`: how requests queued from now on go (`ok`, `moderated`, `content_policy`,
  `invalid`, `failed`), how many polls each stage lasts, what they log and produce.
- `fail_next(...)`: canned answers for the next requests to one route (401, 403, 429 with
  Retry-After, 5xx, malformed JSON, a hang that lasts until the fake stops or `release()` is
  called, a connection closed without an answer), optionally after the real handler ran
  (`create=True`: the upstream took the job, then the answer was lost).
- `expire_files(request_id)`: the request's files answer 404 from now on.

fal documents that cancelling a queued request removes it; the fake then answers 404 for
it. What a status says after a running request honoured a cancel is not documented; the
fake's running requests ignore the signal and finish.

Run it alone for manual or cross-process checks: `python -m tests.fakes.fal --port 8791`.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from app.providers.local_render import render_text_to_image
from app.providers.local_video import render_video
from tests.fakes.serving import Answer, Request, serving, wait_for_interrupt

FILES_PATH = "/files/"
DEFAULT_KEY = "fal-fake-key-id:0123456789abcdef"
NAMESPACES = ("workflows", "comfy")

Route = Literal["submit", "status", "result", "cancel", "file", "other"]


@dataclass(frozen=True)
class Script:
    """How a request queued while this script is set goes."""

    outcome: str = "ok"  # ok | moderated | content_policy | invalid | failed
    kind: str = "image"  # image | video: what an ok request produces
    images: int = 1
    # Per image, as the safety checker reports it; a flagged image is served blank.
    nsfw: tuple[bool, ...] | None = None
    queued_polls: int = 1  # status polls answered IN_QUEUE (positions count down to 0)
    running_polls: int = 1  # status polls answered IN_PROGRESS before it completes
    log_percent: int | None = None  # logged while running ("NN%|####  | 7/28"), when set
    run_s: float | None = None  # runs on its own and completes after this many seconds
    error_type: str = "runner_disconnected"  # for `failed`
    error_status: int = 503  # the stored result's status for `failed`
    inference_time: float | None = 1.25  # metrics.inference_time, when set
    content: bytes | None = None  # served instead of a rendered file
    content_type: str | None = None  # declared instead of the real one
    stored: bool = True  # False: the file URLs answer 404 from the start


@dataclass(frozen=True)
class Canned:
    """One canned answer; `hang` holds the request until the fake is released or stops."""

    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    reset: bool = False  # the connection is closed without an answer
    # Which requests it applies to (None for any), and whether the real handler runs first.
    on: Route | None = None
    create: bool = False


@dataclass
class FakeRequest:
    id: str
    model: str
    app: str
    input: dict[str, Any]
    script: Script
    webhook: str | None
    position: int
    created_at: float = field(default_factory=time.monotonic)
    status: str = "IN_QUEUE"
    polls: int = 0
    cancel_requested: bool = False


class FakeFal:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.base_url = ""
        self.script = Script()
        self.requests: list[Request] = []
        self.queue: dict[str, FakeRequest] = {}
        self.files: dict[str, tuple[bytes, str]] = {}
        self.webhooks_sent: list[dict[str, Any]] = []
        self._canned: deque[Canned] = deque()
        self._lock = threading.RLock()
        self._release = threading.Event()

    # --- switches -----------------------------------------------------------------------

    def fail_next(self, *answers: Canned) -> None:
        with self._lock:
            self._canned.extend(answers)

    def release(self) -> None:
        """Let hanging requests go (they answer 500)."""
        self._release.set()

    def expire_files(self, request_id: str) -> None:
        """The upstream URLs expire: the request's files are gone."""
        with self._lock:
            for name in [n for n in self.files if n.startswith(request_id + "/")]:
                del self.files[name]

    def on(self, route: Route) -> list[Request]:
        return [r for r in self.requests if _route(r) == route]

    # --- protocol -----------------------------------------------------------------------

    def handle(self, request: Request) -> Answer | None:
        route = _route(request)
        with self._lock:
            self.requests.append(request)
            canned = self._take_canned(route)
        if canned is not None:
            if canned.create:
                self._dispatch(request, route)
            if canned.hang:
                self._release.wait()
                return _json(500, {"detail": "Internal Server Error"})
            if canned.reset:
                return None  # close the connection without answering
            return canned.status, canned.headers, canned.body
        return self._dispatch(request, route)

    def _dispatch(self, request: Request, route: Route) -> Answer:
        if route == "file":
            return self._file(request)
        if request.headers.get("authorization") != f"Key {self.api_key}":
            # Real upstreams echo (part of) a wrong key; the adapter must not pass it on.
            sent = request.headers.get("authorization", "")
            return _json(401, {"detail": f"Invalid credentials: {sent}"})
        if route == "submit":
            return self._submit(request)
        if route == "other":
            return _json(404, {"detail": f"no route {request.method} {request.path}"})
        app, request_id = _request_ref(request.path)
        with self._lock:
            queued = self.queue.get(request_id)
            if queued is None or queued.app != app:
                return _json(404, {"detail": f"Request {request_id} not found"})
            if route == "status":
                return self._status(queued, with_logs=request.query.get("logs") in ("1", "true"))
            if route == "result":
                return self._result(queued)
            return self._cancel(queued)

    def _take_canned(self, route: Route) -> Canned | None:
        for index, canned in enumerate(self._canned):
            if canned.on in (None, route):
                del self._canned[index]
                return canned
        return None

    def _submit(self, request: Request) -> Answer:
        model = request.path.strip("/")
        try:
            body = request.json()
        except ValueError:
            return _json(422, {"detail": [{"loc": ["body"], "msg": "not JSON", "type": "json"}]})
        if not isinstance(body, dict):
            return _json(422, {"detail": [{"loc": ["body"], "msg": "not an object"}]})
        script = self.script
        queued = FakeRequest(
            id=str(uuid.uuid4()),
            model=model,
            app=app_of(model),
            input=body,
            script=script,
            webhook=request.query.get("fal_webhook"),
            position=script.queued_polls,
        )
        with self._lock:
            self.queue[queued.id] = queued
        if script.run_s is not None:
            timer = threading.Timer(script.run_s, self._run_to_end, args=(queued,))
            timer.daemon = True
            timer.start()
        return _json(
            200,
            {
                "status": "IN_QUEUE",
                "request_id": queued.id,
                "gateway_request_id": queued.id,
                "queue_position": queued.position,
                **self._urls(queued),
            },
        )

    def _urls(self, queued: FakeRequest) -> dict[str, str]:
        base = f"{self.base_url}/{queued.app}/requests/{queued.id}"
        return {
            "response_url": base,
            "status_url": base + "/status",
            "cancel_url": base + "/cancel",
        }

    def _status(self, queued: FakeRequest, *, with_logs: bool) -> Answer:
        if queued.script.run_s is None:
            self._advance(queued)
        answer: dict[str, Any] = {
            "status": queued.status,
            "request_id": queued.id,
            **self._urls(queued),
        }
        if queued.status == "IN_QUEUE":
            answer["queue_position"] = queued.position
        if with_logs:
            answer["logs"] = self._logs(queued)
        if queued.status != "COMPLETED":
            return _json(202, answer)
        script = queued.script
        if script.inference_time is not None:
            answer["metrics"] = {"inference_time": script.inference_time}
        if script.outcome in ("content_policy", "invalid"):
            answer["error"] = "Request failed with status 422"
        if script.outcome == "failed":
            answer["error"] = f"Request failed with status {script.error_status}"
            answer["error_type"] = script.error_type
        return _json(200, answer)

    def _advance(self, queued: FakeRequest) -> None:
        queued.polls += 1
        script = queued.script
        if queued.status == "IN_QUEUE":
            queued.position = max(0, script.queued_polls - queued.polls)
            if queued.polls > script.queued_polls:
                queued.status = "IN_PROGRESS"
        if queued.status == "IN_PROGRESS" and (
            queued.polls > script.queued_polls + script.running_polls
        ):
            self._complete(queued)

    def _run_to_end(self, queued: FakeRequest) -> None:
        with self._lock:
            if queued.id in self.queue and queued.status != "COMPLETED":
                self._complete(queued)

    def _complete(self, queued: FakeRequest) -> None:
        queued.status = "COMPLETED"
        script = queued.script
        if script.outcome == "ok" and script.stored:
            self._make_files(queued)
        if queued.webhook:
            status, _headers, body = self._result(queued)
            threading.Thread(
                target=self._post_webhook, args=(queued, status, body), daemon=True
            ).start()

    def _make_files(self, queued: FakeRequest) -> None:
        script = queued.script
        prompt = str(queued.input.get("prompt") or "a fal test image")
        if script.kind == "video":
            data = script.content or render_video(
                prompt, width=32, height=32, duration_s=0.5, fps=8
            )
            self.files[f"{queued.id}/0.mp4"] = (data, "video/mp4")
            return
        for index in range(script.images):
            flagged = script.nsfw is not None and script.nsfw[index]
            data = script.content or render_text_to_image(
                "" if flagged else f"{prompt} {index}", width=64, height=64, output_format="png"
            )
            self.files[f"{queued.id}/{index}.png"] = (data, "image/png")

    def _logs(self, queued: FakeRequest) -> list[dict[str, str]]:
        logs = [_log("Loading the model")]
        percent = queued.script.log_percent
        if queued.status != "IN_QUEUE" and percent is not None:
            logs.append(_log(f"{percent:3d}%|####      | {percent * 28 // 100}/28 [00:01<00:02]"))
        return logs

    def _result(self, queued: FakeRequest) -> Answer:
        if queued.status != "COMPLETED":
            return _json(400, {"detail": "Request is still in progress"})
        script = queued.script
        if script.outcome == "invalid":
            detail = [
                {
                    "loc": ["body", "image_size"],
                    "msg": "image_size must be one of square_hd, landscape_4_3",
                    "type": "value_error",
                }
            ]
            return _json(422, {"detail": detail})
        if script.outcome == "content_policy":
            detail = [
                {
                    "loc": ["body", "prompt"],
                    "msg": "The content was flagged by a content checker.",
                    "type": "content_policy_violation",
                }
            ]
            return _json(422, {"detail": detail})
        if script.outcome == "failed":
            headers = {"X-Fal-Error-Type": script.error_type}
            body = {"detail": "The runner failed the request", "error_type": script.error_type}
            status, _, payload = _json(script.error_status, body)
            return status, {**headers, "Content-Type": "application/json"}, payload
        if script.outcome == "moderated":
            return _json(200, {"images": [], "has_nsfw_concepts": [True], "seed": 7})
        return _json(200, self._output(queued))

    def _output(self, queued: FakeRequest) -> dict[str, Any]:
        script = queued.script
        token = secrets.token_hex(6)
        url = f"{self.base_url}{FILES_PATH}{queued.id}"
        if script.kind == "video":
            return {
                "video": {
                    "url": f"{url}/0.mp4?token={token}",
                    "content_type": script.content_type or "video/mp4",
                    "file_name": "output.mp4",
                },
                "seed": 7,
            }
        images = [
            {
                "url": f"{url}/{index}.png?token={token}",
                "width": 64,
                "height": 64,
                "content_type": script.content_type or "image/png",
            }
            for index in range(script.images)
        ]
        nsfw = list(script.nsfw) if script.nsfw is not None else [False] * script.images
        return {
            "images": images,
            "timings": {"inference": 0.5},
            "seed": 7,
            "has_nsfw_concepts": nsfw,
            "prompt": queued.input.get("prompt"),
        }

    def _cancel(self, queued: FakeRequest) -> Answer:
        if queued.status == "COMPLETED":
            return _json(400, {"status": "ALREADY_COMPLETED"})
        if queued.status == "IN_QUEUE":
            del self.queue[queued.id]  # fal removes a queued request
        else:
            queued.cancel_requested = True
        return _json(202, {"status": "CANCELLATION_REQUESTED"})

    def _file(self, request: Request) -> Answer:
        name = request.path.removeprefix(FILES_PATH)
        with self._lock:
            stored = self.files.get(name)
        if stored is None:
            return 404, {"Content-Type": "text/plain"}, b"Not Found"
        data, content_type = stored
        return 200, {"Content-Type": content_type}, data

    def _post_webhook(self, queued: FakeRequest, status: int, body: bytes) -> None:
        payload: Any = json.loads(body)
        ok = status < 300
        event = {
            "request_id": queued.id,
            "gateway_request_id": queued.id,
            "status": "OK" if ok else "ERROR",
            "payload": payload,
            "error": None if ok else f"Invalid status code: {status}",
        }
        headers = {
            "X-Fal-Webhook-Request-Id": queued.id,
            "X-Fal-Webhook-Timestamp": str(int(time.time())),
        }
        with suppress(httpx.HTTPError):
            httpx.post(str(queued.webhook), json=event, headers=headers, timeout=5, trust_env=False)
        with self._lock:
            self.webhooks_sent.append(event)


def app_of(model: str) -> str:
    """The app id fal uses in status, result and cancel URLs."""
    parts = model.strip("/").split("/")
    return "/".join(parts[: 3 if parts[0] in NAMESPACES else 2])


def _route(request: Request) -> Route:
    path = request.path
    if path.startswith(FILES_PATH):
        return "file"
    if "/requests/" not in path:
        return "submit" if request.method == "POST" and path.count("/") >= 2 else "other"
    tail = path.rsplit("/requests/", 1)[1]
    if request.method == "GET" and tail.endswith("/status"):
        return "status"
    if request.method == "PUT" and tail.endswith("/cancel"):
        return "cancel"
    return "result" if request.method == "GET" and "/" not in tail else "other"


def _request_ref(path: str) -> tuple[str, str]:
    app, tail = path.strip("/").rsplit("/requests/", 1)
    return app, tail.split("/", 1)[0]


def _log(message: str) -> dict[str, str]:
    return {"message": message, "level": "INFO", "source": "user", "timestamp": "2025-01-01"}


def _json(status: int, body: Any) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


def detail_body(detail: Any, **extra: Any) -> bytes:
    """A fal error body, for canned answers."""
    return json.dumps({"detail": detail, **extra}).encode()


@contextmanager
def running_fal(
    api_key: str = DEFAULT_KEY, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[FakeFal]:
    """The fake on `host`, with its `base_url` set; stopped (and hangs released) on exit."""
    fake = FakeFal(api_key)

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
    args = parser.parse_args()
    with running_fal(args.api_key, host=args.host, port=args.port) as fake:
        wait_for_interrupt("fake fal queue", fake.base_url)


if __name__ == "__main__":
    main()
