"""What every HTTP adapter does the same with its upstream, so the rules live in one place.

| what happens                                      | the shared rule                             |
|---------------------------------------------------|---------------------------------------------|
| connection refused, connect or pool timeout       | `ProviderUnavailable`, never ambiguous:     |
|                                                   | nothing was sent                            |
| read timeout, connection broken after the request | `ProviderUnavailable(ambiguous=may_create)` |
| 429, 5xx (the adapter decides which count)        | `ProviderUnavailable`, `retry_after_s` from |
|                                                   | `retry-after-ms` or Retry-After;            |
|                                                   | `ambiguous` on 504/524 when `may_create`    |
| a 2xx body that is not a JSON object              | `json_object` answers None                  |
| a result URL the URL policy refuses, or an        | raises `ResultRefused`: the adapter fails   |
| unreadable `data:` URL                            | the task `provider_error`                   |
| a result download fails (transport, status, size) | `ProviderUnavailable`: the poll is retried  |
| a refusal of the channel's own account or setup   | `channel_fault`: `provider_error` with      |
|                                                   | `channel_fault`, logged at ERROR without    |
|                                                   | the upstream's body                         |

`may_create` is True only for a request that may start (and bill) a job upstream: then a
request that may have reached the upstream must not be sent to another channel.

The API key goes nowhere but the credential header `Upstream` sends: `scrub` takes it out of
every message built from an upstream answer (and cuts the message short).
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import urllib.parse
from collections.abc import Mapping
from typing import Any

import httpx

from app.callbacks.schedule import parse_retry_after
from app.net.url_guard import FetchFailed, UrlPolicy, UrlRefused, fetch_bytes
from app.providers.base import Failed, ProviderUnavailable

NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
AMBIGUOUS_STATUSES = frozenset({504, 524})
OPERATOR_SIDE = "this is a problem on the operator's side, not with your request"
MAX_MESSAGE = 300
# 1.5**n overflows a float after some 1,750 polls; by 64 steps any sane interval is capped.
_MAX_BACKOFF_STEPS = 64


class ResultRefused(Exception):
    """A result the adapter will not take; the task fails provider_error with this message."""


class Upstream:
    """One channel's way to its upstream: the shared HTTP client (not closed here), the URL
    policy results are fetched under, the credential header and the request timeouts."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        fetch_policy: UrlPolicy,
        *,
        api_key: str,
        timeout: httpx.Timeout,
        scheme: str = "Bearer",
    ) -> None:
        self._http = http
        self._fetch_policy = fetch_policy
        self._api_key = api_key
        self._auth = {"Authorization": f"{scheme} {api_key}"}
        self._timeout = timeout

    async def send(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        held_s: float = 0.0,
        may_create: bool = False,
    ) -> httpx.Response:
        """The upstream's answer, whatever its status; `held_s`: how long the upstream may hold
        the answer on purpose (added to the read timeout). Raises ProviderUnavailable when no
        answer came (see `request_failure`)."""
        timeout = self._timeout
        if held_s:
            timeout = httpx.Timeout((timeout.read or 0.0) + held_s, connect=timeout.connect)
        try:
            return await self._http.request(
                method,
                url,
                json=json,
                params=params,
                headers={**self._auth, **(headers or {})},
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            raise request_failure(exc, may_create=may_create) from None

    async def download(
        self, url: str, *, what: str = "file", inline: bool = False
    ) -> tuple[bytes, str | None]:
        """A finished result's bytes and declared content type, fetched through the URL guard
        (`inline`: a `data:` URL is decoded in place). Raises ResultRefused when the URL
        policy refuses the URL or an inline file is unreadable, ProviderUnavailable when the
        download fails (upstream URLs expire: the poll is retried)."""
        if inline and url.startswith("data:"):
            return decode_data_url(url, self._fetch_policy.max_bytes)
        try:
            return await fetch_bytes(self._http, url, self._fetch_policy)
        except UrlRefused as exc:
            raise ResultRefused(f"the provider's {what} URL is refused: {exc.reason}") from None
        except FetchFailed as exc:
            # Messages name the host only: result URLs are signed.
            raise ProviderUnavailable(f"a finished {what} could not be downloaded: {exc}") from None

    def scrub(self, text: str) -> str:
        return scrub(text, self._api_key)


def request_failure(
    exc: BaseException, *, may_create: bool, timed_out: bool | None = None
) -> ProviderUnavailable:
    """The ProviderUnavailable of a request that got no answer: not ambiguous when nothing
    was sent (connection refused, connect or pool timeout); otherwise ambiguous when the
    request `may_create` a job. `timed_out` defaults to `exc` being an httpx timeout."""
    if isinstance(exc, NOT_SENT):
        return ProviderUnavailable("the provider could not be reached")
    if timed_out is None:
        timed_out = isinstance(exc, httpx.TimeoutException)
    if timed_out:
        return ProviderUnavailable(
            "the provider did not answer in time"
            + (": it may still run the job" if may_create else ""),
            ambiguous=may_create,
        )
    return ProviderUnavailable(
        "the connection to the provider broke"
        + (" after the request was sent: it may still run the job" if may_create else ""),
        ambiguous=may_create,
    )


def unavailable(
    response: httpx.Response,
    *,
    may_create: bool,
    code: int | None = None,
    what: str | None = None,
    retry_after_default: float | None = None,
) -> ProviderUnavailable:
    """A 429 or 5xx answer as ProviderUnavailable: ambiguous on 504/524 when the request
    `may_create` a job; `retry_after_s` from the answer's headers, else `retry_after_default`.
    `code` is the status that counts (default the HTTP status), `what` what the provider did
    (default "answered HTTP <code>")."""
    code = response.status_code if code is None else code
    ambiguous = may_create and code in AMBIGUOUS_STATUSES
    retry_after = retry_after_s(response.headers)
    return ProviderUnavailable(
        f"the provider {what or f'answered HTTP {code}'}"
        + (": it may still run the job" if ambiguous else ""),
        retry_after_s=retry_after_default if retry_after is None else retry_after,
        ambiguous=ambiguous,
    )


def retry_after_s(headers: httpx.Headers) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI's) or Retry-After (seconds or an HTTP
    date); None when neither says."""
    milliseconds = _seconds(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    value = headers.get("retry-after")
    seconds = _seconds(value)
    return seconds if seconds is not None else parse_retry_after(value)


def _seconds(value: str | None) -> float | None:
    try:
        number = float(value or "")
    except ValueError:
        return None
    return max(0.0, number) if math.isfinite(number) else None


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The answer's body when it is a JSON object, else None."""
    try:
        answer = response.json()
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def channel_fault(
    fault: str, reason: str, details: Mapping[str, Any], *, message: str = ""
) -> Failed:
    """The outcome of a refusal that is the channel's own account or setup (`fault`: auth,
    quota, config, ...): provider_error, telling the caller the problem is not theirs."""
    return Failed(
        "provider_error",
        said(f"{reason}; {OPERATOR_SIDE}", message),
        details={"channel_fault": fault, **details},
    )


def log_channel_fault(logger: logging.Logger, adapter: str, where: str, what: str) -> None:
    """Tell the operator the channel needs them. The upstream's body is never logged: it may
    echo the key."""
    logger.error("%s upstream %s: %s", adapter, where, what)


def poll_backoff(interval_s: float, polls: int, cap_s: float) -> float:
    """`interval_s * 1.5**polls`, at most `cap_s`."""
    return float(min(interval_s * 1.5 ** min(max(polls, 0), _MAX_BACKOFF_STEPS), cap_s))


def said(prefix: str, message: str) -> str:
    """`prefix`, then what the upstream said (already scrubbed) if it said anything."""
    return f"{prefix}: {message}" if message else prefix


def path_segment(value: str) -> str:
    """An id the upstream echoed back, quoted to stay one segment of a URL path."""
    return urllib.parse.quote(value, safe="")


def scrub(text: str, secret: str) -> str:
    """`text` without `secret`, cut to a message's length."""
    if secret:
        text = text.replace(secret, "***")
    return text[:MAX_MESSAGE]


def decode_data_url(url: str, max_bytes: int) -> tuple[bytes, str | None]:
    """The bytes and declared type of a base64 `data:` URL (an upstream may inline small
    files). Raises ResultRefused when it is no base64 one or is larger than `max_bytes`."""
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise ResultRefused("the provider's inline file is not base64")
    if len(payload) * 3 // 4 > max_bytes:
        raise ResultRefused("the provider's inline file is larger than the size limit")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ResultRefused("the provider's inline file is not valid base64") from None
    declared = header.removeprefix("data:").removesuffix(";base64").split(";", 1)[0]
    return data, declared or None


def sniff_media_type(data: bytes) -> str | None:
    """The content type of image or video bytes by their magic numbers, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[4:8] == b"ftyp":
        return "video/quicktime" if data[8:12] == b"qt  " else "video/mp4"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return None
