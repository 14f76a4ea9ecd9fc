"""Replicate predictions: create, get and cancel, generic over the upstream model name.

The channel's upstream model name picks the create call:

- `owner/name` (an official model, always its latest version) ->
  `POST /v1/models/{owner}/{name}/predictions` with `{"input": ...}`;
- `owner/name:<version id>` or a bare 64-hex version id ->
  `POST /v1/predictions` with `{"version": <version id>, "input": ...}`.

`input` is our normalised input as the operator's renames left it, `None` values dropped, so
any model of the operator's can be served by a catalog entry naming its inputs. Our input
URLs are passed through: Replicate fetches them itself. With a `callback_url`, the create
also carries `"webhook"` and `"webhook_events_filter": ["completed"]`: one call when the
prediction ends (succeeded, failed or canceled), which only makes the task due for a poll.

`Prefer: wait=N` makes Replicate hold the create up to N seconds (1-60) and answer with the
finished prediction if it finished in time, the running one otherwise. It pays for image
jobs, which many models finish in a few seconds: the result comes back with the create, no
poll round trip, at the price of a worker slot held for at most N seconds. So image jobs
send `wait=prefer_wait_s` (default 5; `None` turns it off); video jobs, which run for
minutes, never do. The read timeout of such a create is N plus the usual request timeout,
so only a create that outlives the wait itself times out, and that timeout is ambiguous
like any other on a create.

How upstream answers map to outcomes:

| upstream answer                                      | outcome                                   |
|------------------------------------------------------|-------------------------------------------|
| create 201/200, `starting` / `processing`            | `Pending(id)`                             |
| create 201/200 already finished (`Prefer: wait`)     | as for a poll below; a download that      |
|                                                      | fails then is `Pending(id)`: the poll     |
|                                                      | downloads again                           |
| poll `starting`                                      | `Pending(progress=0)`                     |
| poll `processing`                                    | `Pending`, progress = the last tqdm       |
|                                                      | `NN%\\|` in `logs`, else 50               |
| poll `succeeded`                                     | every http(s) (or `data:`) URL in         |
|                                                      | `output` (a URL, a list, an object), in   |
|                                                      | order, downloaded at once through the URL |
|                                                      | guard (they expire after about an hour)   |
|                                                      | -> `Completed`, cost = `metrics` seconds  |
| poll `failed`, error mentions NSFW / safety /        | `Failed("content_policy")`                |
| sensitive / flagged / moderation                     |                                           |
| poll `failed`, any other error                       | `Failed("provider_error")`                |
| poll `canceled`                                      | `Failed("canceled")`                      |
| poll `aborted` (ended before it started)             | `Failed("provider_error")`                |
| poll: any other status                               | `Failed("provider_error")`                |
| 401, 403 (the channel's token)                       | `Failed("provider_error")`, details       |
|                                                      | `{"channel_fault": "auth"}`, logged ERROR |
| 402 (the account's credit or spend limit)            | `Failed("provider_error")`, details       |
|                                                      | `{"channel_fault": "quota"}`, logged ERROR|
| 404 on create (unknown model); 422 "Invalid version  | `Failed("provider_error")`, details       |
| or not permitted" (an unknown or private version)    | `{"channel_fault": "config"}`, logged     |
|                                                      | ERROR: the operator's mapping is wrong    |
| 404 on poll (unknown prediction)                     | `Failed("provider_error")`                |
| 422 (`detail`, `invalid_fields`)                     | `Failed("invalid_input")`, or             |
|                                                      | `content_policy` if `detail` says so      |
| another 4xx                                          | `Failed("provider_error")`                |
| 429, 5xx except 504/524                              | raises `ProviderUnavailable`, with        |
|                                                      | `retry_after_s` from Retry-After          |
| 504, 524 on create                                   | `ProviderUnavailable(ambiguous=True)`     |
| connection refused, connect or pool timeout          | `ProviderUnavailable` (nothing was sent)  |
| create read timeout / reset after the body was sent  | `ProviderUnavailable(ambiguous=True)`     |
| create 2xx that is not JSON or lacks `id`            | `Failed("provider_error")`                |
| create 2xx with an `id` and an odd `status`          | `Pending(id)`: the polls decide           |
| poll 2xx that is not JSON or lacks `status`          | `Failed("provider_error")`                |
| `succeeded` without any file URL                     | `Failed("provider_error")`                |
| a result download fails (transport, status, size)    | `ProviderUnavailable`: polled again until |
|                                                      | the task's deadline                       |
| a result refused by the URL policy, an unreadable    | `Failed("provider_error")`                |
| `data:` URL, or a file that is no image or video     |                                           |

`cancel` (`POST /v1/predictions/{id}/cancel`) answers True when the prediction it returns is
`canceled`, False when it had already ended (or is unknown); 429/5xx and connection
failures raise as above.

`ambiguous=True` means the upstream may have accepted (and will bill) the job: the caller
must not resubmit it to another channel.

Poll backoff: `poll_interval_s * 1.5 ** job.polls`, capped at `max_poll_interval_s`; with a
callback the polls are mostly a safety net.

Idempotency: Replicate takes no client-chosen id (no idempotency key, no search by our
task id), so a create is not idempotent and `idempotent_submit` is always False, whatever
the channel file says. The worker records the prediction id the moment `submit` returns; a
crash between Replicate accepting the create and that record (one HTTP response, plus the
`Prefer: wait` hold) makes the resubmission create, and bill, a second prediction.

The API token goes nowhere but the Authorization header: it is never logged and is scrubbed
from every message built from an upstream answer.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator, Mapping
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
    ProviderUnavailable,
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
    sniff_media_type,
    unavailable,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.replicate.com"
_PENDING_STATES = frozenset({"starting", "processing"})
_FINAL_STATES = frozenset({"succeeded", "failed", "canceled", "aborted"})
_VERSION_ID = re.compile(r"[0-9a-f]{64}")
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_TQDM_PERCENT = re.compile(r"(\d{1,3})%\|")
_CONTENT_POLICY = re.compile(
    r"nsfw|\bsafety\b|\bsensitive\b|\bflagged\b|content.?policy|moderation", re.IGNORECASE
)
_MAX_WAIT_S = 60  # Replicate holds a create at most this long
_PROCESSING_PROGRESS = 50


class ReplicateProvider:
    name = "replicate"
    # Replicate takes no client id and cannot be searched by ours: never idempotent.
    idempotent_submit = False

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
        prefer_wait_s: int | None = 5,
    ) -> None:
        """ValueError when `upstream_model` is no Replicate model or version name, or
        `prefer_wait_s` is outside 1-60."""
        if idempotent_submit:
            log.warning(
                "replicate cannot deduplicate creates by our task id; "
                "idempotent_submit is ignored for model %s",
                upstream_model,
            )
        if prefer_wait_s is not None and not 1 <= prefer_wait_s <= _MAX_WAIT_S:
            raise ValueError(f"prefer_wait_s must be between 1 and {_MAX_WAIT_S} seconds")
        self._api = (base_url or DEFAULT_BASE_URL).rstrip("/").removesuffix("/v1") + "/v1"
        self._create_url, self._version = _create_target(self._api, upstream_model)
        self._model = upstream_model
        timeout = httpx.Timeout(request_timeout_s, connect=connect_timeout_s)
        self._upstream = Upstream(http, fetch_policy, api_key=api_key, timeout=timeout)
        self._callback_url = callback_url
        self._poll_interval_s = poll_interval_s
        self._max_poll_interval_s = max_poll_interval_s
        self._prefer_wait_s = prefer_wait_s

    async def submit(self, job: ProviderJob, *, report: ProgressReporter) -> Outcome:
        body: dict[str, Any] = {"input": {k: v for k, v in job.input.items() if v is not None}}
        if self._version is not None:
            body["version"] = self._version
        if self._callback_url:
            body["webhook"] = self._callback_url
            body["webhook_events_filter"] = ["completed"]
        wait_s = self._prefer_wait_s if job.media_type == "image" else None
        response = await self._upstream.send(
            "POST",
            self._create_url,
            json=body,
            # Replicate holds the answer that long before it sends anything.
            headers={"Prefer": f"wait={wait_s}"} if wait_s else None,
            held_s=wait_s or 0,
            may_create=True,
        )
        if response.status_code >= 300:
            return self._status_outcome(response, may_create=True)
        answer = json_object(response)
        upstream_id = answer.get("id") if answer is not None else None
        if answer is None or not isinstance(upstream_id, str) or not upstream_id:
            return Failed("provider_error", "the provider accepted the job without a prediction id")
        await report(5)
        if answer.get("status") not in _FINAL_STATES:
            # Running, or an odd answer: the prediction exists either way, so the polls decide.
            return self._pending(upstream_id, answer, polls=0)
        try:
            return await self._outcome(upstream_id, answer, polls=0)
        except ProviderUnavailable:
            # The prediction is Replicate's now: the poll downloads its files again.
            return Pending(upstream_id, progress=99, poll_after_s=self._poll_interval_s)

    async def poll(self, job: ProviderJob, upstream_id: str) -> Outcome:
        response = await self._upstream.send("GET", self._prediction_url(upstream_id))
        if response.status_code >= 300:
            return self._status_outcome(response, may_create=False)
        answer = json_object(response)
        if answer is None:
            return Failed("provider_error", "the provider answered with malformed JSON")
        return await self._outcome(upstream_id, answer, polls=job.polls)

    async def cancel(self, upstream_id: str) -> bool:
        """Ask Replicate to cancel; True when the prediction is canceled, False when it had
        already ended or is unknown. Raises ProviderUnavailable on 429, 5xx and connection
        failures."""
        response = await self._upstream.send("POST", self._prediction_url(upstream_id) + "/cancel")
        status = response.status_code
        if status < 300:
            answer = json_object(response)
            return answer is not None and answer.get("status") == "canceled"
        if status in (401, 402, 403):
            self._log_channel_fault(status)
        elif status == 429 or status >= 500:
            raise unavailable(response, may_create=False)
        return False

    async def aclose(self) -> None:
        return None  # the HTTP client is shared and closed by its owner

    # --- outcomes -----------------------------------------------------------------------

    async def _outcome(self, upstream_id: str, answer: Mapping[str, Any], *, polls: int) -> Outcome:
        status = answer.get("status")
        if not isinstance(status, str):
            return Failed("provider_error", "the provider answered without a prediction status")
        if status in _PENDING_STATES:
            return self._pending(upstream_id, answer, polls=polls)
        if status == "succeeded":
            return await self._download(answer)
        if status == "failed":
            return self._failed(answer.get("error"))
        if status == "canceled":
            return Failed("canceled", "the prediction was canceled at the provider")
        if status == "aborted":
            return Failed("provider_error", "the provider aborted the prediction before it ran")
        return Failed("provider_error", f"the provider reported an unknown status {status!r}")

    def _pending(self, upstream_id: str, answer: Mapping[str, Any], *, polls: int) -> Pending:
        poll_after_s = poll_backoff(self._poll_interval_s, polls, self._max_poll_interval_s)
        return Pending(upstream_id, progress=_progress(answer), poll_after_s=poll_after_s)

    def _failed(self, error: object) -> Failed:
        message = self._upstream.scrub(str(error or ""))
        suffix = f": {message}" if message else ""
        if _CONTENT_POLICY.search(message):
            return Failed("content_policy", "the provider's safety check refused the job" + suffix)
        return Failed("provider_error", "the provider failed the prediction" + suffix)

    async def _download(self, answer: Mapping[str, Any]) -> Outcome:
        urls = list(dict.fromkeys(_file_urls(answer.get("output"))))
        if not urls:
            return Failed("provider_error", "the provider finished without a file URL")
        outputs: list[Output] = []
        for url in urls:
            try:
                data, _declared_type = await self._upstream.download(url, inline=True)
            except ResultRefused as exc:
                return Failed("provider_error", str(exc))
            content_type = sniff_media_type(data) or await asyncio.to_thread(_probe_type, data)
            if content_type is None:
                return Failed("provider_error", "the provider's result is no image or video")
            outputs.append(Output(data, content_type))
        return Completed(outputs, cost=self._cost(answer))

    def _cost(self, answer: Mapping[str, Any]) -> dict[str, Any] | None:
        metrics = answer.get("metrics")
        if not isinstance(metrics, Mapping):
            return None
        counts = {
            k: v
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        if "predict_time" not in counts:
            return None
        return {"unit": "seconds", "model": self._model, **counts}

    # --- HTTP plumbing ------------------------------------------------------------------

    def _prediction_url(self, upstream_id: str) -> str:
        return f"{self._api}/predictions/{path_segment(upstream_id)}"

    def _status_outcome(self, response: httpx.Response, *, may_create: bool) -> Outcome:
        status = response.status_code
        if status == 429 or status >= 500:
            raise unavailable(response, may_create=may_create)
        problem = json_object(response) or {}
        detail = self._upstream.scrub(str(problem.get("detail") or problem.get("title") or ""))
        suffix = f": {detail}" if detail else ""
        if status in (401, 402, 403):
            self._log_channel_fault(status)
            what = "account is out of credit" if status == 402 else "credentials were refused"
            return channel_fault(
                "quota" if status == 402 else "auth",
                f"this gateway channel's provider {what} (HTTP {status})",
                {"status": status},
            )
        if may_create and (status == 404 or _is_unknown_version(problem)):
            log_channel_fault(
                log,
                "replicate",
                self._api,
                f"does not know model {self._model!r} (HTTP {status}): "
                "fix the channel's upstream model name",
            )
            return channel_fault(
                "config",
                "the provider does not know this gateway channel's model",
                {"status": status},
            )
        if status == 404:
            return Failed(
                "provider_error", "the provider does not know the prediction", {"status": 404}
            )
        if status == 422:
            details: dict[str, Any] = {"status": 422}
            fields = _invalid_fields(problem.get("invalid_fields"))
            if fields:
                details["invalid_fields"] = fields
            if _CONTENT_POLICY.search(detail):
                return Failed(
                    "content_policy",
                    "the provider's safety check refused the input" + suffix,
                    details,
                )
            return Failed("invalid_input", "the provider rejected the input" + suffix, details)
        return Failed(
            "provider_error", f"the provider answered HTTP {status}" + suffix, {"status": status}
        )

    def _log_channel_fault(self, status: int) -> None:
        what = "has no credit left or hit its spend limit" if status == 402 else "refused the token"
        log_channel_fault(log, "replicate", self._api, f"{what} for this channel (HTTP {status})")


def check_upstream_model(model: str) -> None:
    """ValueError unless `model` names a Replicate model or version (for checking a channel
    file at start, before any adapter is built)."""
    _create_target(DEFAULT_BASE_URL + "/v1", model)


def _create_target(api: str, model: str) -> tuple[str, str | None]:
    """The create URL and the version id to send (None: the model's latest version)."""
    name, pinned, version = model.partition(":")
    if not pinned and _VERSION_ID.fullmatch(name):
        return f"{api}/predictions", name
    if not _MODEL_NAME.fullmatch(name):
        raise ValueError(
            f"replicate model {model!r} must be 'owner/name', 'owner/name:<version id>' "
            "or a 64-character version id"
        )
    if pinned:
        if not _VERSION_ID.fullmatch(version):
            raise ValueError(f"replicate model {model!r} has a malformed version id")
        return f"{api}/predictions", version
    owner, model_name = name.split("/")
    return f"{api}/models/{owner}/{model_name}/predictions", None


def _file_urls(output: object) -> Iterator[str]:
    """Every file URL in a model's output, in order: outputs differ by model (a URL, a list
    of URLs, an object holding URLs), so the walk is generic; other strings are skipped."""
    if isinstance(output, str):
        if output.startswith(("https://", "http://", "data:")):
            yield output
    elif isinstance(output, list):
        for item in output:
            yield from _file_urls(item)
    elif isinstance(output, Mapping):
        for item in output.values():
            yield from _file_urls(item)


def _probe_type(data: bytes) -> str | None:
    """The content type of a file the sniffer does not know, if it is media at all: the
    probe the worker stores results with decides, not the header the file came with."""
    try:
        content_type = probe_media(data).content_type
    except ValueError:
        return None
    return content_type if content_type.startswith(("image/", "video/")) else None


def _is_unknown_version(problem: Mapping[str, Any]) -> bool:
    """Replicate's 422 for a version that does not exist or that this token may not run
    (it carries no `invalid_fields`, unlike a refused input)."""
    title = str(problem.get("title") or "").lower()
    detail = str(problem.get("detail") or "").lower()
    return "invalid version" in title or "version does not exist" in detail


def _invalid_fields(value: object) -> list[str]:
    if not isinstance(value, list):
        return []
    return [
        str(item["field"]) for item in value if isinstance(item, Mapping) and item.get("field")
    ][:20]


def _progress(answer: Mapping[str, Any]) -> int:
    """The last tqdm percentage in the logs; else 0 while starting, 50 while processing."""
    logs = answer.get("logs")
    if isinstance(logs, str):
        found = _TQDM_PERCENT.findall(logs[-4000:])
        if found:
            return max(0, min(99, int(found[-1])))
    return _PROCESSING_PROGRESS if answer.get("status") == "processing" else 0
