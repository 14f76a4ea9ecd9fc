"""A fake Replicate predictions API on loopback, for the `replicate` adapter.

It speaks the documented protocol: `POST /v1/models/{owner}/{name}/predictions` (an official
model) or `POST /v1/predictions` with a `version` creates a prediction, `GET
/v1/predictions/{id}` reports it (starting -> processing -> its scripted end over a few
polls), `POST /v1/predictions/{id}/cancel` cancels one that has not ended. Errors are
Replicate's problem bodies (`title`, `detail`, `status`, `invalid_fields`): 401 for a wrong
token, 404 for an unknown model, 422 "Invalid version or not permitted" for an unknown
version and "Input validation failed" for an input without a `prompt`.

`Prefer: wait=N` holds the create until the prediction ends or N seconds pass. With
`Script.finish_within_wait` (the default: the fast image models the header is for) it ends
at once; `Script.finish_after_s` ends it on a timer instead (also without any poll).

A prediction created with a `webhook` has it called (a POST of the prediction, signed per
Standard Webhooks with `webhook_secret`, as Replicate does) when it ends, if
`webhook_events_filter` is absent or holds "completed". Its files are real small media (a
PNG from the offline renderer, or an MP4) served by this server at signed-looking URLs,
which a test can delete ("the upstream URL expired").

Switches a test sets on the running fake:
- `script`: how predictions created from now on go (see `Script`).
- `fail_next(...)`: canned answers for the next requests (402, 422, 429 with Retry-After,
  5xx, malformed JSON, a connection dropped without an answer, a hang that lasts until the
  fake stops or `release()` is called).
- `expire_files(id)`: the prediction's file URLs answer 404 from now on.

Run it alone for manual or cross-process checks: `python -m tests.fakes.replicate --port 8791`.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import secrets
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from app.providers.local_render import render_text_to_image
from app.providers.local_video import render_video
from tests.fakes.serving import Answer, Request, serving, wait_for_interrupt

API = "/v1"
FILES_PATH = "/files/"
DEFAULT_KEY = "r8_fake0123456789abcdef"
DEFAULT_MODEL = "black-forest-labs/flux-schnell"
DEFAULT_VERSION = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"fake-replicate-webhook-secret").decode()
NSFW_ERROR = "NSFW content detected. Try running it again, or try a different prompt."
_FINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
_PREFER_WAIT = re.compile(r"\bwait(?:=(\d+))?\b")
_MODEL_ROUTE = re.compile(rf"^{API}/models/([^/]+)/([^/]+)/predictions$")
_PREDICTION_ROUTE = re.compile(rf"^{API}/predictions/([^/]+)(/cancel)?$")


@dataclass(frozen=True)
class Script:
    """How a prediction created while this script is set goes."""

    outcome: str = "succeeded"  # succeeded | failed | canceled | aborted
    error: str = "the model crashed"
    starting_polls: int = 1  # GETs answered `starting` before it processes
    processing_polls: int = 1  # GETs answered `processing` before it ends
    logs: str | None = None  # the logs reported while processing (e.g. tqdm lines)
    media: str = "png"  # png | mp4: what each output file is
    files: int = 1
    shape: str = "url"  # url | list | object: how `output` holds the file URLs; none: null
    output: Any = None  # reported as `output` verbatim instead, when set
    file_bytes: bytes | None = None  # served instead of rendered media
    files_stored: bool = True  # False: the file URLs answer 404 from the start
    predict_time: float | None = 1.25
    # A create with `Prefer: wait` finds the prediction ended before it answers.
    finish_within_wait: bool = True
    # Ends the prediction this long after its create, polled or not (webhook tests).
    finish_after_s: float | None = None


@dataclass(frozen=True)
class Canned:
    """One canned answer; `hang` holds the request until the fake is released or stops."""

    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    drop: bool = False  # close the connection without an answer (a reset after the body)
    # Which requests it applies to: a method ("POST", "GET"); None for any.
    method: str | None = None


@dataclass
class FakePrediction:
    id: str
    body: dict[str, Any]
    model: str
    script: Script
    status: str = "starting"
    polls: int = 0
    created_at: str = field(default_factory=lambda: _now())
    completed_at: str | None = None
    output: Any = None


@dataclass(frozen=True)
class WebhookCall:
    url: str
    status: int | None  # None: it could not be delivered
    body: dict[str, Any]


class FakeReplicate:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.base_url = ""
        self.script = Script()
        self.models = {DEFAULT_MODEL}
        self.versions = {DEFAULT_VERSION: DEFAULT_MODEL}
        self.webhook_secret = WEBHOOK_SECRET
        self.requests: list[Request] = []
        self.predictions: dict[str, FakePrediction] = {}
        self.files: dict[str, bytes] = {}
        self.webhooks: list[WebhookCall] = []
        self._canned: deque[Canned] = deque()
        self._lock = threading.Condition()
        self._release = threading.Event()
        self._timers: list[threading.Timer] = []

    # --- switches -----------------------------------------------------------------------

    def fail_next(self, *answers: Canned) -> None:
        with self._lock:
            self._canned.extend(answers)

    def release(self) -> None:
        """Let hanging requests go (they answer 500)."""
        self._release.set()

    def expire_files(self, prediction_id: str) -> None:
        """The upstream URLs expire: the prediction's files are gone."""
        with self._lock:
            for name in [n for n in self.files if n.startswith(prediction_id + "-")]:
                del self.files[name]

    def on(self, method: str, prefix: str = API) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    def stop(self) -> None:
        self.release()
        for timer in self._timers:
            timer.cancel()
        with self._lock:
            self._lock.notify_all()  # creates held by `Prefer: wait` answer now

    # --- protocol -----------------------------------------------------------------------

    def handle(self, request: Request) -> Answer | None:
        """The answer to one request; None: drop the connection without one."""
        with self._lock:
            self.requests.append(request)
            canned = self._take_canned(request.method)
        if canned is not None:
            if canned.drop:
                return None
            if canned.hang:
                self._release.wait()
                return _problem(500, "Internal server error", "released")
            return canned.status, canned.headers, canned.body
        if request.path.startswith(FILES_PATH):
            return self._file(request)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._auth_refusal(request)
        if request.method == "POST" and request.path == f"{API}/predictions":
            return self._create(request, model=None)
        route = _MODEL_ROUTE.match(request.path)
        if request.method == "POST" and route:
            return self._create(request, model=f"{route[1]}/{route[2]}")
        route = _PREDICTION_ROUTE.match(request.path)
        if route and request.method == "GET" and not route[2]:
            return self._get(route[1])
        if route and request.method == "POST" and route[2]:
            return self._cancel(route[1])
        return _problem(404, "Not found", "The requested resource could not be found.")

    def _take_canned(self, method: str) -> Canned | None:
        for index, canned in enumerate(self._canned):
            if canned.method in (None, method):
                del self._canned[index]
                return canned
        return None

    def _auth_refusal(self, request: Request) -> Answer:
        # Upstreams may echo (part of) a wrong token; the adapter must not pass it on.
        sent = request.headers.get("authorization", "").removeprefix("Bearer ")
        return _problem(401, "Unauthenticated", f"Token {sent} is not a valid token")

    def _create(self, request: Request, *, model: str | None) -> Answer:
        try:
            body = request.json()
        except ValueError:
            return _problem(400, "Bad request", "the request body is not JSON")
        if not isinstance(body, dict):
            return _problem(400, "Bad request", "the request body must be an object")
        if model is None:
            model = self.versions.get(str(body.get("version")))
            if model is None:
                return _problem(
                    422,
                    "Invalid version or not permitted",
                    "The specified version does not exist (or perhaps you don't have "
                    "permission to use it?)",
                )
        elif model not in self.models:
            return _problem(404, "Not found", "The requested resource could not be found.")
        refused = _invalid_input(body.get("input"))
        if refused is not None:
            return refused
        prediction = FakePrediction(
            id=secrets.token_hex(13), body=body, model=model, script=self.script
        )
        with self._lock:
            self.predictions[prediction.id] = prediction
        wait_s = _prefer_wait_s(request.headers.get("prefer"))
        if self.script.finish_after_s is not None:
            timer = threading.Timer(
                self.script.finish_after_s, self._finish_on_timer, args=(prediction.id,)
            )
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
        if wait_s is not None:
            self._hold(prediction, wait_s)
        with self._lock:
            return _json(201, self._describe(prediction))

    def _hold(self, prediction: FakePrediction, wait_s: int) -> None:
        """Replicate's sync mode: answer when the prediction ends or the wait runs out."""
        with self._lock:
            if prediction.script.finish_within_wait:
                self._end(prediction)
                return
            self._lock.wait_for(
                lambda: prediction.status in _FINAL or self._release.is_set(), timeout=wait_s
            )

    def _finish_on_timer(self, prediction_id: str) -> None:
        with self._lock:
            prediction = self.predictions.get(prediction_id)
            if prediction is not None and prediction.status not in _FINAL:
                self._end(prediction)

    def _get(self, prediction_id: str) -> Answer:
        with self._lock:
            prediction = self.predictions.get(prediction_id)
            if prediction is None:
                return _problem(404, "Not found", "The requested resource could not be found.")
            self._advance(prediction)
            return _json(200, self._describe(prediction))

    def _cancel(self, prediction_id: str) -> Answer:
        with self._lock:
            prediction = self.predictions.get(prediction_id)
            if prediction is None:
                return _problem(404, "Not found", "The requested resource could not be found.")
            if prediction.status not in _FINAL:
                self._end(prediction, status="canceled")
            return _json(200, self._describe(prediction))

    def _advance(self, prediction: FakePrediction) -> None:
        if prediction.status in _FINAL:
            return
        prediction.polls += 1
        script = prediction.script
        if prediction.polls > script.starting_polls:
            prediction.status = "processing"
        if prediction.polls > script.starting_polls + script.processing_polls:
            self._end(prediction)

    def _end(self, prediction: FakePrediction, *, status: str | None = None) -> None:
        """Called with the lock held: the prediction reaches its end, files and webhook."""
        prediction.status = status or prediction.script.outcome
        prediction.completed_at = _now()
        if prediction.status == "succeeded":
            prediction.output = self._store_output(prediction)
        self._lock.notify_all()
        webhook = prediction.body.get("webhook")
        events = prediction.body.get("webhook_events_filter")
        if isinstance(webhook, str) and (events is None or "completed" in events):
            body = self._describe(prediction)
            threading.Thread(target=self._call_webhook, args=(webhook, body), daemon=True).start()

    def _store_output(self, prediction: FakePrediction) -> Any:
        script = prediction.script
        if script.output is not None:
            return script.output
        if script.shape == "none":
            return None
        prompt = str(prediction.body.get("input", {}).get("prompt", ""))
        extension = "mp4" if script.media == "mp4" else "png"
        urls = []
        for index in range(script.files):
            name = f"{prediction.id}-{index}.{extension}"
            if script.files_stored:
                self.files[name] = script.file_bytes or _render(script.media, f"{prompt} {index}")
            urls.append(f"{self.base_url}{FILES_PATH}{name}?sig={secrets.token_hex(8)}")
        if script.shape == "url":
            return urls[0]
        if script.shape == "object":
            return {"images": urls, "seed": 1234, "caption": "not a file"}
        return urls

    def _describe(self, prediction: FakePrediction) -> dict[str, Any]:
        script = prediction.script
        answer: dict[str, Any] = {
            "id": prediction.id,
            "model": prediction.model,
            "version": prediction.body.get("version", "hidden"),
            "input": prediction.body.get("input"),
            "status": prediction.status,
            "output": prediction.output,
            "error": None,
            "logs": script.logs if prediction.status != "starting" else "",
            "metrics": {},
            "created_at": prediction.created_at,
            "completed_at": prediction.completed_at,
            "urls": {
                "get": f"{self.base_url}{API}/predictions/{prediction.id}",
                "cancel": f"{self.base_url}{API}/predictions/{prediction.id}/cancel",
            },
        }
        if prediction.status == "failed":
            answer["error"] = script.error
        if prediction.status == "succeeded" and script.predict_time is not None:
            answer["metrics"] = {"predict_time": script.predict_time, "total_time": 2.5}
        return answer

    def _call_webhook(self, url: str, body: dict[str, Any]) -> None:
        payload = json.dumps(body)
        message_id = "msg_" + secrets.token_hex(12)
        moment = datetime.now(tz=UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": Webhook(self.webhook_secret).sign(message_id, moment, payload),
        }
        status: int | None = None
        with suppress(httpx.HTTPError), httpx.Client(trust_env=False, timeout=5) as client:
            status = client.post(url, content=payload, headers=headers).status_code
        with self._lock:
            self.webhooks.append(WebhookCall(url, status, body))

    def _file(self, request: Request) -> Answer:
        name = request.path.removeprefix(FILES_PATH)
        with self._lock:
            data = self.files.get(name)
        if data is None:
            return 404, {"Content-Type": "application/xml"}, b"<Error>NoSuchKey</Error>"
        content_type = "video/mp4" if name.endswith(".mp4") else "image/png"
        return 200, {"Content-Type": content_type}, data


def _render(media: str, prompt: str) -> bytes:
    if media == "mp4":
        return render_video(prompt, width=32, height=32, duration_s=0.5, fps=8)
    return render_text_to_image(prompt, width=32, height=32, output_format="png")


def _invalid_input(value: object) -> Answer | None:
    """This fake's model needs a `prompt`, as most text-to-image models do."""
    if isinstance(value, dict) and isinstance(value.get("prompt"), str) and value["prompt"]:
        return None
    invalid = [{"type": "required", "field": "input.prompt", "description": "prompt is required"}]
    return _problem(
        422, "Input validation failed", "- input: prompt is required\n", invalid_fields=invalid
    )


def _prefer_wait_s(header: str | None) -> int | None:
    """The seconds a `Prefer: wait[=N]` header asks for (bare `wait`: 60), else None."""
    found = _PREFER_WAIT.search(header or "")
    if found is None:
        return None
    return max(1, min(60, int(found[1]))) if found[1] else 60


def _now() -> str:
    return datetime.now(tz=UTC).isoformat().replace("+00:00", "Z")


def _json(status: int, body: Any) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _problem(status: int, title: str, detail: str, **extra: Any) -> Answer:
    body = {"title": title, "detail": detail, "status": status, **extra}
    return status, {"Content-Type": "application/problem+json"}, json.dumps(body).encode()


def problem_body(status: int, title: str, detail: str = "", **extra: Any) -> bytes:
    """A Replicate problem body, for canned answers."""
    return _problem(status, title, detail, **extra)[2]


@contextmanager
def running_replicate(
    api_key: str = DEFAULT_KEY, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[FakeReplicate]:
    """The fake on `host`, with its `base_url` set; stopped (and hangs released) on exit."""
    fake = FakeReplicate(api_key)

    with serving(fake.handle, host=host, port=port) as base_url:
        fake.base_url = base_url
        try:
            yield fake
        finally:
            fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--api-key", default=DEFAULT_KEY)
    args = parser.parse_args()
    with running_replicate(args.api_key, host=args.host, port=args.port) as fake:
        wait_for_interrupt("fake Replicate", fake.base_url)


if __name__ == "__main__":
    main()
