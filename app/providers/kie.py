"""The kie-style jobs API: `POST /api/v1/jobs/createTask`, `GET /api/v1/jobs/recordInfo`.

This is the API gengate itself serves, so one gengate can sit behind another. A submit sends
`{"model": <upstream model>, "input": <our normalised input>, "callBackUrl"}` with our task
id as `X-Request-Id`; a poll reads the record of the upstream `taskId`. Answers come in the
envelope `{"code", "msg", "data"}`. gengate answers with the HTTP status equal to `code`;
kie itself often answers HTTP 200 and puts the error in `code`, so the code that counts is
the HTTP status when it is not 2xx, else the envelope's `code`.

How upstream answers map to outcomes:

| upstream answer                                 | outcome                                        |
|-------------------------------------------------|------------------------------------------------|
| submit 200 `data.taskId`                        | `Pending(taskId)`                              |
| submit 2xx without a readable `taskId`          | `ProviderUnavailable(ambiguous=True)`: it said |
|                                                 | yes, so the job may exist upstream             |
| poll `waiting` / `queuing` / `generating`       | `Pending`: `progress` (0-100, or a 0-1         |
|                                                 | fraction), `queuePosition` (1 = next) - 1      |
| poll `success`                                  | every `resultJson.resultUrls` downloaded at    |
|                                                 | once through the URL guard -> `Completed`      |
|                                                 | (type sniffed from the bytes, else the answer's|
|                                                 | image/video type); `cost` `{"unit": "credits"}`|
|                                                 | when the record has `credits` (gengate's)      |
| poll `fail`, `failCode` one of ours             | that code (`invalid_input`, `content_policy`,  |
|                                                 | `input_unreachable`, `provider_error`,         |
|                                                 | `provider_timeout`, `canceled`)                |
| poll `fail`, `failCode` `expired`               | `provider_timeout` (the upstream's deadline)   |
| poll `fail`, `failCode` `internal_error`        | `provider_error` (the upstream's own failure)  |
| poll `fail`, `failMsg` about content policy     | `content_policy`                               |
| poll `fail`, `failCode` 400 / 422               | `invalid_input`                                |
| poll `fail`, anything else; an unknown state    | `provider_error`                               |
| 400, 422 on submit (input validation)           | `invalid_input` (`content_policy` when the     |
|                                                 | message says so); one naming a field the       |
|                                                 | channel sets (`model`, `callBackUrl`,          |
|                                                 | `X-Request-Id`) is the channel's:              |
|                                                 | `provider_error`, `channel_fault: config`;     |
|                                                 | one naming an input URL field: we checked the  |
|                                                 | URL, the upstream cannot use it:               |
|                                                 | `input_unreachable` (refunded)                 |
| 401, 403 (the channel's credential)             | `provider_error`, `channel_fault: auth`        |
| 402 (the channel's upstream balance)            | `provider_error`, `channel_fault: quota`       |
| 505 (the feature is disabled upstream)          | `provider_error`,                              |
|                                                 | `channel_fault: feature_disabled`              |
| 404 on submit (no jobs API at this base URL)    | `provider_error`, `channel_fault: config`      |
| 404 on poll (the upstream lost the record)      | `provider_error`                               |
| 501 (generation failed)                         | `provider_error`                               |
| 409 (the request id taken by other parameters), | `provider_error`                               |
| any other 4xx                                   |                                                |
| 429, 455 (maintenance), 5xx except 501/505      | raises `ProviderUnavailable`, `retry_after_s`  |
|                                                 | from Retry-After (or gengate's `retryAfter`)   |
| 504, 524 on submit                              | `ProviderUnavailable(ambiguous=True)`          |
| connection refused, connect or pool timeout     | `ProviderUnavailable` (nothing was sent)       |
| submit read timeout / reset after the body left | `ProviderUnavailable(ambiguous=True)`          |
| poll 2xx that is not an envelope with a state   | `provider_error`                               |
| a result download fails (transport, status)     | `ProviderUnavailable`: polled again until the  |
|                                                 | task's deadline (upstream URLs expire)         |
| a result refused by the URL policy, or neither  | `provider_error`                               |
| an image nor a video                            |                                                |

A 500 is an answer: the upstream refused the request, so it is not ambiguous. Channel faults
(auth, quota, config, feature_disabled) are logged at ERROR for the operator; the caller is
told the problem is not theirs.

`cancel` posts `POST /api/v1/jobs/cancel?taskId=` (gengate's; kie has none and answers 404):
True when the upstream canceled; 404 (no such task or no cancel route) and 409 (already
finished) answer False, as do the channel faults (logged); 429, 455 and 5xx raise.

Idempotency: gengate treats `X-Request-Id` as an idempotency key per API key, so a
resubmission of the same task returns the same upstream task and bills nothing twice. kie
itself ignores the header, so `idempotent_submit` is what the operator declares for the
channel (default False).

The API key goes nowhere but the Authorization header: it is never logged and is scrubbed
from every message built from an upstream answer.
"""

from __future__ import annotations

import json
import logging
import re
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
    ProviderUnavailable,
)
from app.providers.upstream import (
    ResultRefused,
    Upstream,
    channel_fault,
    json_object,
    log_channel_fault,
    poll_backoff,
    sniff_media_type,
    unavailable,
)

log = logging.getLogger(__name__)

JOBS_PATH = "/api/v1/jobs"
_PENDING_STATES = frozenset({"waiting", "queuing", "generating"})
_MAINTENANCE = 455
_GENERATION_FAILED = 501
_FEATURE_DISABLED = 505
_CHANNEL_FAULTS = {401: "auth", 403: "auth", 402: "quota", _FEATURE_DISABLED: "feature_disabled"}
# Fail codes an upstream gengate reports that mean the same here.
_OUR_FAIL_CODES = frozenset(
    {
        "invalid_input",
        "content_policy",
        "input_unreachable",
        "provider_error",
        "provider_timeout",
        "canceled",
    }
)
# An upstream's own deadline is, for us, a provider that did not finish in time; its own
# internal failure is a provider's failure.
_RENAMED_FAIL_CODES = {"expired": "provider_timeout", "internal_error": "provider_error"}
_INPUT_FAIL_CODES = frozenset({"400", "422"})
_CONTENT_POLICY = re.compile(
    r"content[\s_-]*polic|flagged|sensitive|nsfw|moderation|safety (system|filter|check)",
    re.IGNORECASE,
)
# Fields the channel sets, not the caller: a refusal naming one is the operator's to fix.
_CHANNEL_FIELDS = frozenset({"model", "callBackUrl", "callbackUrl", "X-Request-Id"})
# An input that carries URLs (input_urls, image_urls, reference_image_urls, input_urls[0]...).
_URL_FIELD = re.compile(r"^\w*_urls?(\[\d+\])?$")
_UNKNOWN_MODEL = re.compile(
    r"model\b.{0,40}\b(not supported|not found|does not exist|unknown|invalid)"
    r"|(unknown|unsupported|invalid) model",
    re.IGNORECASE,
)


class KieProvider:
    name = "kie"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        upstream_model: str,
        http: httpx.AsyncClient,
        fetch_policy: UrlPolicy,
        callback_url: str | None = None,
        idempotent_submit: bool = False,
        request_timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        poll_interval_s: float = 3.0,
        max_poll_interval_s: float = 30.0,
    ) -> None:
        # Operators paste the base URL in several lengths; the jobs API hangs off the root.
        root = base_url.rstrip("/").removesuffix(JOBS_PATH).removesuffix("/api/v1")
        self._jobs_url = root + JOBS_PATH
        self._model = upstream_model
        timeout = httpx.Timeout(request_timeout_s, connect=connect_timeout_s)
        self._upstream = Upstream(http, fetch_policy, api_key=api_key, timeout=timeout)
        self._callback_url = callback_url
        self.idempotent_submit = idempotent_submit
        self._poll_interval_s = poll_interval_s
        self._max_poll_interval_s = max_poll_interval_s

    async def submit(self, job: ProviderJob, *, report: ProgressReporter) -> Outcome:
        body: dict[str, Any] = {"model": self._model, "input": dict(job.input)}
        if self._callback_url:
            body["callBackUrl"] = self._callback_url
        response = await self._upstream.send(
            "POST",
            self._jobs_url + "/createTask",
            json=body,
            headers={"X-Request-Id": job.task_id},
            may_create=True,
        )
        answer = json_object(response)
        code = _code_of(response, answer)
        if code != 200:
            return self._refusal(response, answer, code, may_create=True)
        upstream_id = _data_of(answer).get("taskId")
        if not isinstance(upstream_id, str) or not upstream_id:
            raise ProviderUnavailable(
                "the provider accepted the job without a readable task id: it may still run it",
                ambiguous=True,
            )
        await report(5)
        return Pending(upstream_id, progress=0, poll_after_s=self._poll_interval_s)

    async def poll(self, job: ProviderJob, upstream_id: str) -> Outcome:
        response = await self._upstream.send(
            "GET", self._jobs_url + "/recordInfo", params={"taskId": upstream_id}
        )
        answer = json_object(response)
        code = _code_of(response, answer)
        if code != 200:
            return self._refusal(response, answer, code, may_create=False)
        record = _data_of(answer)
        state = record.get("state")
        if not isinstance(state, str):
            return Failed("provider_error", "the provider answered without a task state")
        if state in _PENDING_STATES:
            return Pending(
                upstream_id,
                progress=_progress(record),
                poll_after_s=poll_backoff(
                    self._poll_interval_s, job.polls, self._max_poll_interval_s
                ),
                queue_position=_queue_position(record),
            )
        if state == "success":
            return await self._download(record)
        if state == "fail":
            return self._failed(record)
        return Failed("provider_error", f"the provider reported an unknown state {state!r}")

    async def cancel(self, upstream_id: str) -> bool:
        """Ask the upstream to cancel; True when it did. 404 (no such task, or no cancel at
        this upstream) and 409 (already finished) answer False. Raises ProviderUnavailable on
        429, 455, 5xx and connection failures."""
        response = await self._upstream.send(
            "POST", self._jobs_url + "/cancel", params={"taskId": upstream_id}
        )
        answer = json_object(response)
        code = _code_of(response, answer)
        if code == 200:
            return True
        if code in _CHANNEL_FAULTS:
            self._log_channel_fault(_CHANNEL_FAULTS[code], code)
        elif _is_unavailable(code):
            raise self._unavailable(response, answer, code, may_create=False)
        return False

    async def aclose(self) -> None:
        return None  # the HTTP client is shared and closed by its owner

    # --- refusals -----------------------------------------------------------------------

    def _refusal(
        self,
        response: httpx.Response,
        answer: Mapping[str, Any] | None,
        code: int,
        *,
        may_create: bool,
    ) -> Outcome:
        """The outcome of an answer whose code is not 200; raises ProviderUnavailable."""
        if _is_unavailable(code):
            raise self._unavailable(response, answer, code, may_create=may_create)
        message = self._upstream.scrub(_message_of(answer))
        suffix = f": {message}" if message else ""
        details: dict[str, Any] = {"upstream_code": code}
        if code in _CHANNEL_FAULTS:
            return self._channel_fault(_CHANNEL_FAULTS[code], code, message)
        if code == _GENERATION_FAILED:
            return Failed("provider_error", "the provider failed to generate" + suffix, details)
        if may_create and code == 404:
            return self._channel_fault("config", code, message)
        if may_create and code in (400, 422):
            field = _data_of(answer).get("field")
            if field in _CHANNEL_FIELDS or _UNKNOWN_MODEL.search(message):
                return self._channel_fault("config", code, message)
            if isinstance(field, str):
                details["field"] = field
            if _URL_FIELD.match(str(field or "")):
                # We checked the URL before accepting the task; the upstream cannot use it
                # (it cannot reach it, or refuses its address): refunded, not the caller's.
                return Failed(
                    "input_unreachable", "the provider could not use an input URL" + suffix, details
                )
            if _CONTENT_POLICY.search(message):
                return Failed(
                    "content_policy",
                    "the provider's moderation refused the request" + suffix,
                    details,
                )
            return Failed("invalid_input", "the provider rejected the input" + suffix, details)
        if code == 404:
            return Failed(
                "provider_error", "the provider no longer knows this task" + suffix, details
            )
        return Failed("provider_error", f"the provider answered {code}" + suffix, details)

    def _unavailable(
        self,
        response: httpx.Response,
        answer: Mapping[str, Any] | None,
        code: int,
        *,
        may_create: bool,
    ) -> ProviderUnavailable:
        return unavailable(
            response,
            may_create=may_create,
            code=code,
            what="is down for maintenance" if code == _MAINTENANCE else f"answered {code}",
            # gengate puts it in the body too; kie answering HTTP 200 can only put it there.
            retry_after_default=_number(_data_of(answer).get("retryAfter")),
        )

    def _channel_fault(self, fault: str, code: int, message: str) -> Failed:
        self._log_channel_fault(fault, code)
        reason = {
            "auth": "refused this gateway channel's credentials",
            "quota": "has no balance left on this gateway channel's account",
            "feature_disabled": "has disabled this feature for this gateway channel",
            "config": "refused this gateway channel's configuration",
        }[fault]
        return channel_fault(
            fault, f"the provider {reason} ({code})", {"upstream_code": code}, message=message
        )

    def _log_channel_fault(self, fault: str, code: int) -> None:
        log_channel_fault(
            log,
            "kie",
            self._jobs_url,
            f"channel fault {fault} (code {code}) for model {self._model}",
        )

    # --- records ------------------------------------------------------------------------

    def _failed(self, record: Mapping[str, Any]) -> Failed:
        upstream_code = str(record.get("failCode") or "")
        message = self._upstream.scrub(str(record.get("failMsg") or ""))
        code = _fail_code_of(upstream_code, message)
        details = {"upstream_fail_code": upstream_code} if upstream_code else {}
        return Failed(code, message or "the provider failed the task", details)

    async def _download(self, record: Mapping[str, Any]) -> Outcome:
        urls = _result_urls(record.get("resultJson"))
        if not urls:
            return Failed("provider_error", "the provider finished without result URLs")
        outputs: list[Output] = []
        for url in urls:
            try:
                data, content_type = await self._upstream.download(url, what="result")
            except ResultRefused as exc:
                return Failed("provider_error", str(exc))
            media_type = _media_type(content_type, data)
            if media_type is None:
                return Failed("provider_error", "the provider's result is not an image or a video")
            outputs.append(Output(data, media_type))
        return Completed(outputs, cost=self._cost(record))

    def _cost(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        credits = record.get("credits")
        if isinstance(credits, int | float) and not isinstance(credits, bool):
            return {"unit": "credits", "model": self._model, "credits": credits}
        return None


def _code_of(response: httpx.Response, answer: Mapping[str, Any] | None) -> int:
    """The HTTP status when it says something went wrong, else the envelope's `code`."""
    status = response.status_code
    if not 200 <= status < 300:
        return status
    code = answer.get("code") if answer is not None else None
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if isinstance(code, int) and not isinstance(code, bool) and code >= 300:
        return code
    return 200


def _is_unavailable(code: int) -> bool:
    return code in (429, _MAINTENANCE) or (
        code >= 500 and code not in (_GENERATION_FAILED, _FEATURE_DISABLED)
    )


def _data_of(answer: Mapping[str, Any] | None) -> Mapping[str, Any]:
    data = answer.get("data") if answer is not None else None
    return data if isinstance(data, Mapping) else {}


def _message_of(answer: Mapping[str, Any] | None) -> str:
    if answer is None:
        return ""
    message = answer.get("msg") or _data_of(answer).get("error")
    return str(message) if message else ""


def _fail_code_of(upstream_code: str, message: str) -> str:
    if upstream_code in _OUR_FAIL_CODES:
        return upstream_code
    if upstream_code in _RENAMED_FAIL_CODES:
        return _RENAMED_FAIL_CODES[upstream_code]
    if _CONTENT_POLICY.search(message):
        return "content_policy"
    if upstream_code in _INPUT_FAIL_CODES:
        return "invalid_input"
    return "provider_error"


def _result_urls(result_json: object) -> list[str]:
    """`resultUrls` of `resultJson`, a JSON string (the seed's) or an object."""
    if isinstance(result_json, str):
        try:
            result_json = json.loads(result_json)
        except ValueError:
            return []
    urls = result_json.get("resultUrls") if isinstance(result_json, Mapping) else None
    if not isinstance(urls, list):
        return []
    return [url for url in urls if isinstance(url, str) and url]


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _progress(record: Mapping[str, Any]) -> int:
    raw = record.get("progress")
    value = _number(raw)
    if value is None:
        return 0
    if not isinstance(raw, int) and 0 < value <= 1:
        value *= 100  # some kie models report a fraction, "0.45"
    return max(0, min(99, int(value)))


def _queue_position(record: Mapping[str, Any]) -> int | None:
    value = record.get("queuePosition")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value - 1  # upstream 1 = next; ours 0 = next
    return None


def _media_type(declared: str | None, data: bytes) -> str | None:
    """What the bytes say; else the declared type when it is an image or a video."""
    sniffed = sniff_media_type(data)
    if sniffed is not None:
        return sniffed
    base = (declared or "").split(";", 1)[0].strip().lower()
    return base if base.startswith(("image/", "video/")) else None
