"""Seedance on BytePlus ModelArk: `POST /api/v3/contents/generations/tasks`, GET and DELETE.

The request carries `model`, a `content[]` of one text item (the prompt) and `image_url`
items, and the parameters as top-level JSON fields: `ratio` (our `aspect_ratio`),
`resolution`, `duration` (an integer), `generate_audio`, and `seed` / `camera_fixed` when
the caller gave them. Older Seedance models also read `--ratio 16:9 --duration 5` flags from
the prompt text; the current ModelArk reference documents the fields, so we send fields only.
One input image becomes the `first_frame`; several (or `reference_image_urls`) are each a
`reference_image`. Our input URLs are passed through: ModelArk fetches them itself.

How upstream answers map to outcomes:

| upstream answer                                      | outcome                                   |
|------------------------------------------------------|-------------------------------------------|
| submit 200 `{"id"}`                                  | `Pending(id, poll_after_s)`               |
| poll `queued` / `running`                            | `Pending` (upstream `progress` if given)  |
| poll `succeeded`                                     | `content.video_url` downloaded at once    |
|                                                      | (it expires upstream) through the URL     |
|                                                      | guard -> `Completed([Output(mp4)])`,      |
|                                                      | `cost` = the `usage` tokens               |
| poll `failed`, code `*SensitiveContent*`             | `Failed("content_policy")`                |
| poll `failed`, code `InvalidParameter`, `Missing...` | `Failed("invalid_input")`                 |
| poll `failed`, any other code                        | `Failed("provider_error")`                |
| poll `cancelled`                                     | `Failed("canceled")`                      |
| poll `expired` (the upstream's own queue timeout)    | `Failed("provider_timeout")`              |
| poll: any other status                               | `Failed("provider_error")`                |
| 400/404/409/422 with an `error.code`                 | by that code as for `failed` above        |
| another 4xx (not 401, 403, 429), or one without code | `Failed("provider_error")`                |
| 401, 403 (the channel's credential)                  | `Failed("provider_error")`, `details`     |
|                                                      | `{"channel_fault": "auth"}`, logged       |
| 429, 5xx except 504/524                              | raises `ProviderUnavailable`, with        |
|                                                      | `retry_after_s` from Retry-After          |
| 504, 524 on submit                                   | `ProviderUnavailable(ambiguous=True)`     |
| connection refused, connect or pool timeout          | `ProviderUnavailable` (nothing was sent)  |
| submit read timeout / reset after the body was sent  | `ProviderUnavailable(ambiguous=True)`     |
| 2xx that is not JSON or lacks `id` / `status`        | `Failed("provider_error")`                |
| the result download fails (transport, status, size)  | `ProviderUnavailable`: polled again until |
|                                                      | the task's deadline                       |
| the result is refused by the URL policy, or not MP4  | `Failed("provider_error")`                |

`cancel` (DELETE) only stops a queued task; any 4xx (a running or finished task, an unknown
id) answers False and is not an error, 429/5xx and connection failures raise as above.

`ambiguous=True` means the upstream may have accepted (and will bill) the job: the caller
must not resubmit it to another channel.

Idempotency: ModelArk takes no client-chosen id and cannot be searched by one, so a submit is
not idempotent by our task id. The worker records the upstream id the moment `submit`
returns `Pending`; a crash between the upstream accepting the job and that record (a window
of one HTTP response) makes the resubmission create, and bill, a second upstream job.

The API key is handed in and goes nowhere but the Authorization header: it is never logged
and is scrubbed from every message built from an upstream answer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from app.net.url_guard import UrlPolicy
from app.providers.base import (
    Completed,
    Failed,
    Outcome,
    Output,
    Pending,
    ProgressReporter,
    ProviderJob,
)
from app.providers.upstream import (
    ResultRefused,
    Upstream,
    channel_fault,
    json_object,
    log_channel_fault,
    path_segment,
    unavailable,
)

log = logging.getLogger(__name__)

TASKS_PATH = "/api/v3/contents/generations/tasks"
_PENDING_STATES = frozenset({"queued", "running"})
_CALLER_FAULT_STATUSES = frozenset({400, 404, 409, 422})
_INVALID_INPUT_CODES = ("InvalidParameter", "MissingParameter", "InvalidArgument")


class ModelArkProvider:
    name = "modelark"
    idempotent_submit = False  # ModelArk takes no client id and cannot be searched by one

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        upstream_model: str,
        http: httpx.AsyncClient,
        fetch_policy: UrlPolicy,
        callback_url: str | None = None,
        request_timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        poll_interval_s: float = 5.0,
    ) -> None:
        # Operators often paste the SDK's base URL, which already ends in /api/v3.
        root = base_url.rstrip("/").removesuffix("/api/v3")
        self._tasks_url = root + TASKS_PATH
        self._model = upstream_model
        timeout = httpx.Timeout(request_timeout_s, connect=connect_timeout_s)
        self._upstream = Upstream(http, fetch_policy, api_key=api_key, timeout=timeout)
        self._callback_url = callback_url
        self._poll_interval_s = poll_interval_s

    async def submit(self, job: ProviderJob, *, report: ProgressReporter) -> Outcome:
        try:
            body = task_body(job.input, model=self._model, callback_url=self._callback_url)
        except ValueError as exc:
            return Failed("invalid_input", str(exc))
        response = await self._upstream.send("POST", self._tasks_url, json=body, may_create=True)
        if response.status_code >= 300:
            return self._status_outcome(response, may_create=True)
        answer = json_object(response)
        upstream_id = answer.get("id") if answer is not None else None
        if not isinstance(upstream_id, str) or not upstream_id:
            return Failed("provider_error", "the provider accepted the job without a task id")
        await report(5)
        return Pending(upstream_id, progress=0, poll_after_s=self._poll_interval_s)

    async def poll(self, job: ProviderJob, upstream_id: str) -> Outcome:
        response = await self._upstream.send("GET", self._task_url(upstream_id))
        if response.status_code >= 300:
            return self._status_outcome(response, may_create=False)
        answer = json_object(response)
        status = answer.get("status") if answer is not None else None
        if answer is None or not isinstance(status, str):
            return Failed("provider_error", "the provider answered with malformed JSON")
        if status in _PENDING_STATES:
            return Pending(
                upstream_id, progress=_progress(answer), poll_after_s=self._poll_interval_s
            )
        if status == "succeeded":
            return await self._download(answer)
        if status == "failed":
            return self._failed(_error_of(answer))
        if status == "cancelled":
            return Failed("canceled", "the task was canceled at the provider")
        if status == "expired":
            return Failed("provider_timeout", "the provider did not run the task before it expired")
        return Failed("provider_error", f"the provider reported an unknown status {status!r}")

    async def cancel(self, upstream_id: str) -> bool:
        """Ask the upstream to cancel; True when it did. Only queued tasks can be canceled,
        so a refusal (any 4xx) is an answer, not an error. Raises ProviderUnavailable on
        429, 5xx and connection failures."""
        response = await self._upstream.send("DELETE", self._task_url(upstream_id))
        status = response.status_code
        if status < 300:
            return True
        if status in (401, 403):
            self._log_auth_refusal(status)
        elif status == 429 or status >= 500:
            raise unavailable(response, may_create=False)
        return False

    async def aclose(self) -> None:
        return None  # the HTTP client is shared and closed by its owner

    # --- HTTP plumbing ------------------------------------------------------------------

    def _task_url(self, upstream_id: str) -> str:
        return f"{self._tasks_url}/{path_segment(upstream_id)}"

    def _status_outcome(self, response: httpx.Response, *, may_create: bool) -> Outcome:
        status = response.status_code
        if status in (401, 403):
            self._log_auth_refusal(status)
            return channel_fault(
                "auth",
                f"the provider refused this gateway channel's credentials (HTTP {status})",
                {"status": status},
            )
        if status == 429 or status >= 500:
            raise unavailable(response, may_create=may_create)
        error = _error_of(json_object(response) or {})
        if status in _CALLER_FAULT_STATUSES and error.get("code"):
            return self._failed(error, status=status)
        return Failed(
            "provider_error", f"the provider answered HTTP {status}", details={"status": status}
        )

    def _log_auth_refusal(self, status: int) -> None:
        log_channel_fault(
            log, "modelark", self._tasks_url, f"refused this channel's credential (HTTP {status})"
        )

    def _failed(self, error: Mapping[str, Any], *, status: int | None = None) -> Failed:
        code = str(error.get("code") or "")
        message = self._upstream.scrub(str(error.get("message") or ""))
        details: dict[str, Any] = {"upstream_code": code} if code else {}
        if status is not None:
            details["status"] = status
        suffix = f": {message}" if message else ""
        if "SensitiveContent" in code or "PolicyViolation" in code:
            return Failed(
                "content_policy", "the provider's moderation refused the request" + suffix, details
            )
        if code.startswith(_INVALID_INPUT_CODES):
            return Failed("invalid_input", "the provider rejected the input" + suffix, details)
        return Failed("provider_error", "the provider failed the task" + suffix, details)

    async def _download(self, answer: Mapping[str, Any]) -> Outcome:
        content = answer.get("content")
        url = content.get("video_url") if isinstance(content, Mapping) else None
        if not isinstance(url, str) or not url:
            return Failed("provider_error", "the provider finished without a video URL")
        try:
            data, _content_type = await self._upstream.download(url, what="video")
        except ResultRefused as exc:
            return Failed("provider_error", str(exc))
        if data[4:8] != b"ftyp":
            return Failed("provider_error", "the provider's result is not an MP4 video")
        return Completed([Output(data, "video/mp4")], cost=self._cost(answer))

    def _cost(self, answer: Mapping[str, Any]) -> dict[str, Any] | None:
        usage = answer.get("usage")
        if not isinstance(usage, Mapping):
            return None
        counts = {k: v for k, v in usage.items() if isinstance(v, int | float)}
        return {"unit": "tokens", "model": self._model, **counts} if counts else None


def task_body(
    params: Mapping[str, Any], *, model: str, callback_url: str | None = None
) -> dict[str, Any]:
    """The ModelArk create-task body for our normalised input; ValueError on a bad value."""
    content: list[dict[str, Any]] = []
    prompt = str(params.get("prompt") or "")
    if prompt:
        content.append({"type": "text", "text": prompt})
    for url, role in _images(params):
        content.append({"type": "image_url", "image_url": {"url": url}, "role": role})
    if not content:
        raise ValueError("prompt or an input image is required")
    body: dict[str, Any] = {"model": model, "content": content}
    if params.get("aspect_ratio") is not None:
        body["ratio"] = str(params["aspect_ratio"])
    if params.get("resolution") is not None:
        body["resolution"] = str(params["resolution"])
    if params.get("duration") is not None:
        body["duration"] = _integer(params["duration"], "duration")
    if params.get("seed") is not None:
        body["seed"] = _integer(params["seed"], "seed")
    for flag in ("generate_audio", "camera_fixed"):
        if params.get(flag) is not None:
            if not isinstance(params[flag], bool):
                raise ValueError(f"{flag} must be true or false")
            body[flag] = params[flag]
    if callback_url:
        body["callback_url"] = callback_url
    return body


def _images(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    urls = _urls(params.get("image_urls") or params.get("input_urls"), "image_urls")
    references = _urls(params.get("reference_image_urls"), "reference_image_urls")
    # One image is where the clip starts; several are looks to keep, none of them a frame.
    if len(urls) == 1 and not references:
        return [(urls[0], "first_frame")]
    return [(url, "reference_image") for url in [*urls, *references]]


def _urls(value: object, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ValueError(f"{name} must be a list of URLs")
    if not all(isinstance(url, str) and url for url in value):
        raise ValueError(f"{name} must be a list of URLs")
    return list(value)


def _integer(value: object, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"{name} must be an integer, got {value!r}")


def _error_of(answer: Mapping[str, Any]) -> Mapping[str, Any]:
    error = answer.get("error")
    return error if isinstance(error, Mapping) else {}


def _progress(answer: Mapping[str, Any]) -> int:
    value = answer.get("progress")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return max(0, min(99, int(value)))
    return 0
