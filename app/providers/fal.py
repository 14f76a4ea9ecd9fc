"""fal's queue API: submit, status (with `queue_position`), result, cancel; any fal model.

The adapter is generic over the upstream model name (`fal-ai/flux/dev`, an operator's own
app, ...): the normalised input, with the operator's renames applied, is the request body as
it stands (keys whose value is null are left out), and the result is read for every file
object in it (`images[].url`, `image.url`, `video.url`, ... wherever they sit).

URLs. Submit goes to `{base}/{model}`; status, result and cancel use the app id only (the
first two path segments, three under the `workflows/` and `comfy/` namespaces) as fal's own
client does: `{base}/{app}/requests/{request_id}[/status|/cancel]`. Only the request id is
kept between polls (`upstream_id` is fal's `request_id`, which is also what fal's webhook
names), so these URLs are rebuilt from the channel's base URL instead of following the
`status_url` / `response_url` / `cancel_url` of the submit answer; that also keeps the key
from being sent to a host the answer names. A submit answer whose `status_url` disagrees
with the rebuilt one is logged for the operator (once per channel).

How upstream answers map to outcomes:

| upstream answer                                       | outcome                                  |
|-------------------------------------------------------|------------------------------------------|
| submit 2xx `{"request_id", "queue_position"?}`        | `Pending(request_id, queue_position)`    |
| status `IN_QUEUE`                                     | `Pending(progress=0, queue_position)`    |
| status `IN_PROGRESS`                                  | `Pending`, progress from the last `NN%`  |
|                                                       | in the logs, else 50                     |
| status `COMPLETED`, result 2xx with file URLs         | each file downloaded at once (they       |
|                                                       | expire) -> `Completed` in result order;  |
|                                                       | `cost` {"unit": "seconds", ...} from     |
|                                                       | `metrics.inference_time`, else None      |
| result 2xx, images flagged in `has_nsfw_concepts`     | flagged ones dropped; none left ->       |
|                                                       | `Failed("content_policy")`               |
| result 2xx without an image or video file             | `Failed("provider_error")`               |
| result 422 (or 400) with `detail`                     | `Failed("invalid_input")`;               |
|                                                       | `content_policy` when a `detail[].type`  |
|                                                       | is `content_policy_violation`            |
| result 5xx after a status that carried `error`        | the request failed upstream: `Failed`,   |
|                                                       | by `error_type`: `request_timeout` /     |
|                                                       | `startup_timeout` -> `provider_timeout`, |
|                                                       | `*content_policy*` -> `content_policy`,  |
|                                                       | any other -> `provider_error`            |
| result 5xx after a status without `error`             | raises `ProviderUnavailable` (retried)   |
| result 404 (fal keeps a result 1 h, 6 min if large)   | `Failed("provider_error")`               |
| status 404 (an unknown request id)                    | `Failed("provider_error")`               |
| status: any other `status`                            | `Failed("provider_error")`               |
| submit 422 / 400 with `detail`                        | as for the result above                  |
| another 4xx (404: an unknown model), or no `detail`   | `Failed("provider_error")`               |
| 401, 403 (the channel's credential)                   | `Failed("provider_error")`, `details`    |
|                                                       | `{"channel_fault": "auth"}`, logged      |
| 402, or 403 naming an exhausted balance / locked user | `details` `{"channel_fault": "quota"}`   |
| 429, 5xx except 504/524                               | raises `ProviderUnavailable`, with       |
|                                                       | `retry_after_s` from Retry-After         |
| 504, 524 on submit                                    | `ProviderUnavailable(ambiguous=True)`    |
| connection refused, connect or pool timeout           | `ProviderUnavailable` (nothing was sent) |
| submit read timeout / reset after the body was sent   | `ProviderUnavailable(ambiguous=True)`    |
| 2xx that is not JSON, or lacks `request_id`/`status`  | `Failed("provider_error")`               |
| a file download fails (transport, status, size)       | `ProviderUnavailable`: see below         |
| a file refused by the URL policy, or no image/video   | `Failed("provider_error")`               |

A file URL that answers 404 (the upstream file expired or was deleted) raises
`ProviderUnavailable` like any failed download, so the worker polls again within its retry
budget and the task's deadline; every poll rereads the result, and once fal no longer holds
the result itself (after an hour, six minutes for a large one) the result answers 404 and
the task fails `provider_error` (refunded). Declared non-image, non-video files (audio, a
zip, text) are skipped, at most 16 files are taken, and `data:` URLs (a model's
`sync_mode`) are decoded in place. Every file is probed: its real type is the output's.

`cancel` (PUT) answers True on 2xx (`CANCELLATION_REQUESTED`: a queued request is removed, a
running one is signalled and may still finish), False on 400 `ALREADY_COMPLETED`, 404 and
other 4xx; 429/5xx and connection failures raise as above.

Poll backoff: `poll_interval_s * 1.5 ** job.polls`, capped at `max_poll_interval_s`.

Idempotency: fal's queue takes no client-chosen id (its documented platform headers set
timeouts, retries, priority, runner hints and storage; none dedupes a submit) and cannot be
searched by one, so a submit is not idempotent by our task id: `idempotent_submit` is False,
and asking for True is refused at construction. After a crash between fal accepting a
request and the worker recording its id (one HTTP response), or an ambiguous submit, the
worker does not resubmit: the task fails refunded, and the request fal may still run is
paid upstream without being delivered.

The API key is handed in and goes nowhere but the `Authorization: Key ...` header of the
queue API (never to file URLs): it is never logged and is scrubbed from every message built
from an upstream answer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.parse
from collections.abc import Mapping
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
from app.providers.local_render import probe_media
from app.providers.upstream import (
    ResultRefused,
    Upstream,
    channel_fault,
    json_object,
    log_channel_fault,
    path_segment,
    poll_backoff,
    said,
    unavailable,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://queue.fal.run"
_APP_NAMESPACES = frozenset({"workflows", "comfy"})
_PENDING_PROGRESS = {"IN_QUEUE": 0, "IN_PROGRESS": 50}
_CALLER_FAULT_STATUSES = frozenset({400, 422})
_TIMEOUT_ERROR_TYPES = frozenset({"request_timeout", "startup_timeout"})
_PERCENT = re.compile(r"(\d{1,3})(?:\.\d+)?\s*%")
_MEDIA_PREFIXES = ("image/", "video/")
_MAX_FILES = 16


class FalProvider:
    name = "fal"
    idempotent_submit = False  # fal takes no client id and cannot be searched by one

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str,
        upstream_model: str,
        http: httpx.AsyncClient,
        fetch_policy: UrlPolicy,
        callback_url: str | None = None,
        idempotent_submit: bool = False,
        request_timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        poll_interval_s: float = 2.0,
        max_poll_interval_s: float = 30.0,
    ) -> None:
        if idempotent_submit:
            raise ValueError(
                "fal's queue takes no idempotency key, so a fal channel cannot be idempotent_submit"
            )
        self._base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._model = upstream_model.strip("/")
        self._app = app_id(self._model)
        # The key goes to the queue API only, never to file URLs.
        timeout = httpx.Timeout(request_timeout_s, connect=connect_timeout_s)
        self._upstream = Upstream(
            http, fetch_policy, api_key=api_key, timeout=timeout, scheme="Key"
        )
        self._callback_url = callback_url
        self._poll_interval_s = poll_interval_s
        self._max_poll_interval_s = max_poll_interval_s
        self._warned_status_url = False

    async def submit(self, job: ProviderJob, *, report: ProgressReporter) -> Outcome:
        body = {key: value for key, value in job.input.items() if value is not None}
        params = {"fal_webhook": self._callback_url} if self._callback_url else None
        url = f"{self._base_url}/{_quote_path(self._model)}"
        response = await self._upstream.send("POST", url, json=body, params=params, may_create=True)
        if response.status_code >= 300:
            return self._refusal(response, may_create=True)
        answer = json_object(response)
        request_id = answer.get("request_id") if answer is not None else None
        if answer is None or not isinstance(request_id, str) or not request_id:
            return Failed("provider_error", "the provider accepted the job without a request id")
        self._check_status_url(answer, request_id)
        return Pending(
            request_id,
            progress=0,
            poll_after_s=self._poll_interval_s,
            queue_position=_queue_position(answer),
        )

    async def poll(self, job: ProviderJob, upstream_id: str) -> Outcome:
        response = await self._upstream.send(
            "GET", self._request_url(upstream_id, "/status?logs=1")
        )
        if response.status_code == 404:
            return Failed(
                "provider_error",
                "the provider does not know this request (it may have been removed)",
                details={"status": 404},
            )
        if response.status_code >= 300:
            return self._refusal(response, may_create=False)
        answer = json_object(response)
        status = answer.get("status") if answer is not None else None
        if answer is None or not isinstance(status, str):
            return Failed("provider_error", "the provider answered with malformed JSON")
        if status in _PENDING_PROGRESS:
            return Pending(
                upstream_id,
                progress=_progress(status, answer),
                poll_after_s=poll_backoff(
                    self._poll_interval_s, job.polls, self._max_poll_interval_s
                ),
                queue_position=_queue_position(answer) if status == "IN_QUEUE" else None,
            )
        if status == "COMPLETED":
            return await self._result(upstream_id, answer)
        return Failed("provider_error", f"the provider reported an unknown status {status!r}")

    async def cancel(self, upstream_id: str) -> bool:
        """Ask fal to cancel; True when it took the request (a running request may still
        finish). A refusal (400 ALREADY_COMPLETED, 404, any 4xx) is an answer, not an error.
        Raises ProviderUnavailable on 429, 5xx and connection failures."""
        response = await self._upstream.send("PUT", self._request_url(upstream_id, "/cancel"))
        status = response.status_code
        if status < 300:
            return True
        if status == 429 or status >= 500:
            raise unavailable(response, may_create=False)
        if status in (401, 402, 403):
            self._log_channel_fault(_fault_of(response), status)
        return False

    async def aclose(self) -> None:
        return None  # the HTTP client is shared and closed by its owner

    # --- the result ---------------------------------------------------------------------

    async def _result(self, upstream_id: str, status_answer: Mapping[str, Any]) -> Outcome:
        response = await self._upstream.send("GET", self._request_url(upstream_id, ""))
        status = response.status_code
        if status < 300:
            output = json_object(response)
            if output is None:
                return Failed("provider_error", "the provider's result is not a JSON object")
            return await self._download(output, cost=_cost(status_answer, output))
        if status == 404:
            return Failed(
                "provider_error",
                "the provider no longer holds the result of this request",
                details={"status": 404},
            )
        upstream_error = status_answer.get("error")
        if status >= 500 and upstream_error:
            # The status already said the request failed: this is its stored answer.
            return self._upstream_failure(response, status_answer)
        return self._refusal(response, may_create=False)

    def _upstream_failure(
        self, response: httpx.Response, status_answer: Mapping[str, Any]
    ) -> Failed:
        answer = json_object(response) or {}
        error_type = str(
            status_answer.get("error_type")
            or answer.get("error_type")
            or response.headers.get("x-fal-error-type")
            or ""
        )
        message = self._upstream.scrub(
            _detail_text(answer.get("detail")) or str(status_answer["error"])
        )
        details = {"status": response.status_code, "upstream_code": error_type}
        if "content_policy" in error_type:
            return Failed(
                "content_policy", said("the provider's moderation refused", message), details
            )
        if error_type in _TIMEOUT_ERROR_TYPES:
            return Failed(
                "provider_timeout", said("the provider timed out on the task", message), details
            )
        return Failed("provider_error", said("the provider failed the task", message), details)

    async def _download(self, output: Mapping[str, Any], *, cost: dict[str, Any] | None) -> Outcome:
        flagged = _flagged_urls(output)
        files = [(url, kind) for url, kind in media_files(output) if url not in flagged]
        if not files:
            if flagged or _any_flag(output):
                return Failed(
                    "content_policy", "the provider's moderation withheld every generated file"
                )
            return Failed("provider_error", "the provider finished without an image or video")
        outputs = []
        for url, declared in files[:_MAX_FILES]:
            try:
                data, _declared_type = await self._upstream.download(url, inline=True)
                info = await asyncio.to_thread(probe_media, data)
            except ResultRefused as exc:
                return Failed("provider_error", str(exc))
            except ValueError:
                return Failed(
                    "provider_error",
                    f"the provider's result is not an image or video (declared {declared})",
                )
            outputs.append(Output(data, info.content_type))
        return Completed(outputs, cost=cost)

    # --- HTTP plumbing ------------------------------------------------------------------

    def _request_url(self, request_id: str, suffix: str) -> str:
        app = _quote_path(self._app)
        return f"{self._base_url}/{app}/requests/{path_segment(request_id)}{suffix}"

    def _check_status_url(self, answer: Mapping[str, Any], request_id: str) -> None:
        """Warn the operator (once) when fal's status URL is not the one polls will use."""
        given = answer.get("status_url")
        if self._warned_status_url or not isinstance(given, str):
            return
        expected = f"/{_quote_path(self._app)}/requests/{request_id}/status"
        # Only the tail is compared: the channel's base URL may be a proxy with a path.
        if not urllib.parse.urlsplit(given).path.endswith(expected):
            self._warned_status_url = True
            log.warning(
                "fal answered a status URL other than .../%s for model %s; polls use the app id %s",
                expected.lstrip("/"),
                self._model,
                self._app,
            )

    def _refusal(self, response: httpx.Response, *, may_create: bool) -> Outcome:
        """The outcome of a non-2xx answer to submit, status or result."""
        status = response.status_code
        if status in (401, 402, 403):
            fault = _fault_of(response)
            self._log_channel_fault(fault, status)
            return channel_fault(
                fault,
                f"the provider refused this gateway channel ({fault}, HTTP {status})",
                {"status": status},
            )
        if status == 429 or status >= 500:
            raise unavailable(response, may_create=may_create)
        detail = (json_object(response) or {}).get("detail")
        if status in _CALLER_FAULT_STATUSES and detail:
            message = self._upstream.scrub(_detail_text(detail))
            types = sorted(_detail_types(detail))
            details = {"status": status, "upstream_types": types}
            if "content_policy_violation" in types:
                return Failed(
                    "content_policy", said("the provider's moderation refused", message), details
                )
            return Failed(
                "invalid_input", said("the provider rejected the input", message), details
            )
        return Failed(
            "provider_error", f"the provider answered HTTP {status}", details={"status": status}
        )

    def _log_channel_fault(self, fault: str, status: int) -> None:
        what = "has no balance left" if fault == "quota" else "refused this channel's credential"
        log_channel_fault(log, "fal", self._base_url, f"{what} (HTTP {status})")


def app_id(model: str) -> str:
    """fal's app id of a model id: `owner/app` (`workflows/owner/app`); ValueError if none."""
    parts = [part for part in model.split("/") if part]
    size = 3 if parts and parts[0] in _APP_NAMESPACES else 2
    if len(parts) < size:
        raise ValueError(f"fal model id {model!r} must name an owner and an app, like fal-ai/flux")
    return "/".join(parts[:size])


def media_files(output: Any) -> list[tuple[str, str]]:
    """Every image or video file object's URL in a result, in document order, with its
    declared content type ("unknown" if none). Files declared as other types are left out."""
    found: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            url = node.get("url")
            if isinstance(url, str) and url.startswith(("https://", "http://", "data:")):
                declared = node.get("content_type")
                if not isinstance(declared, str) or not declared:
                    found.setdefault(url, "unknown")
                elif declared.lower().startswith(_MEDIA_PREFIXES):
                    found.setdefault(url, declared)
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(output)
    return list(found.items())


def _quote_path(path: str) -> str:
    return urllib.parse.quote(path, safe="/")


def _queue_position(answer: Mapping[str, Any]) -> int | None:
    value = answer.get("queue_position")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _progress(status: str, answer: Mapping[str, Any]) -> int:
    """0 while queued; while running, the last percentage the model logged, else 50."""
    if status != "IN_PROGRESS":
        return 0
    logs = answer.get("logs")
    if isinstance(logs, list):
        for entry in reversed(logs[-50:]):
            message = entry.get("message") if isinstance(entry, Mapping) else None
            found = _PERCENT.findall(message) if isinstance(message, str) else []
            if found:
                return max(1, min(99, int(found[-1])))
    return _PENDING_PROGRESS["IN_PROGRESS"]


def _cost(status_answer: Mapping[str, Any], output: Mapping[str, Any]) -> dict[str, Any] | None:
    for answer in (status_answer, output):
        metrics = answer.get("metrics")
        seconds = metrics.get("inference_time") if isinstance(metrics, Mapping) else None
        if isinstance(seconds, int | float) and not isinstance(seconds, bool):
            return {"unit": "seconds", "inference_time": float(seconds)}
    return None


def _flags(output: Mapping[str, Any]) -> list[Any]:
    flags = output.get("has_nsfw_concepts")
    return flags if isinstance(flags, list) else []


def _any_flag(output: Mapping[str, Any]) -> bool:
    return any(flag is True for flag in _flags(output))


def _flagged_urls(output: Mapping[str, Any]) -> set[str]:
    """URLs of the images `has_nsfw_concepts` flags (fal sends a blank image in their place)."""
    images = output.get("images")
    flags = _flags(output)
    if not isinstance(images, list) or len(images) != len(flags):
        return set()
    return {
        image["url"]
        for image, flag in zip(images, flags, strict=True)
        if flag is True and isinstance(image, Mapping) and isinstance(image.get("url"), str)
    }


def _fault_of(response: httpx.Response) -> str:
    if response.status_code == 402:
        return "quota"
    detail = _detail_text((json_object(response) or {}).get("detail")).lower()
    return "quota" if "balance" in detail or "locked" in detail else "auth"


def _detail_text(detail: Any) -> str:
    """fal's `detail`: a string, or a list of `{"loc", "msg", "type"}` objects."""
    if isinstance(detail, str):
        return detail
    if not isinstance(detail, list):
        return ""
    parts = []
    for item in detail[:5]:
        if not isinstance(item, Mapping):
            continue
        loc = item.get("loc")
        where = ".".join(str(p) for p in loc if p != "body") if isinstance(loc, list) else ""
        message = str(item.get("msg") or item.get("type") or "")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(part for part in parts if part)


def _detail_types(detail: Any) -> set[str]:
    if not isinstance(detail, list):
        return set()
    return {str(item["type"]) for item in detail if isinstance(item, Mapping) and item.get("type")}
