"""The OpenAI Images adapter: `images/generations` and `images/edits` through the `openai` SDK.

Any upstream speaking OpenAI's Images API (OpenAI itself, Azure-style proxies, resellers) is
reached through `base_url`. The SDK's own retries are off: retrying, failover and breakers
are the worker's and the channel layer's decisions, and they need to see every failure.

How upstream answers map to outcomes:

| upstream answer                               | outcome                                       |
|-----------------------------------------------|-----------------------------------------------|
| 200, `data[0].b64_json` a PNG, JPEG or WebP   | `Completed([Output])`, `cost` = the `usage`   |
| 400 `moderation_blocked` / content policy     | `Failed("content_policy")` (caller's input)   |
| other 400 (and 404, 409, 413, 422)            | `Failed("invalid_input")` (caller's input)    |
| 401, 403: the channel's credential            | `Failed("provider_error")`, details           |
|                                               | `{"channel_fault": "auth"}`: a breaker counts |
|                                               | it; the caller is told it is not their fault  |
| 429, 5xx except 504/524                       | raises `ProviderUnavailable` (retryable;      |
|                                               | `retry_after_s` from Retry-After if given)    |
| 504, 524: a gateway gave up waiting           | `ProviderUnavailable(ambiguous=True)`         |
| refused, connect or pool timeout (not sent)   | `ProviderUnavailable`                         |
| read timeout, reset after the body was sent   | `ProviderUnavailable(ambiguous=True)`         |
| 200 not JSON, or JSON without an image        | `Failed("provider_error")`                    |

`ambiguous=True` means the upstream may have accepted (and will bill) the job: the caller must
not resubmit it to another channel.

OpenAI's image call is synchronous and takes no idempotency key: the job lives only as long
as the HTTP request, and the upstream cannot look it up by our task id afterwards. So `poll`
(called only after a worker lost the request, e.g. in a crash) cannot recover the result and
answers `Failed("provider_error")`, which is refunded; a resubmission after such a crash may
be billed twice upstream, which only the operator's upstream bill shows.

The API key is handed in by the caller and goes nowhere but the SDK's Authorization header:
it is never logged and is scrubbed from every message built from an upstream answer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Mapping
from typing import Any

import httpx
import openai
from PIL import Image

from app.providers.base import (
    Completed,
    Failed,
    Outcome,
    Output,
    ProgressReporter,
    ProviderJob,
    ProviderUnavailable,
)
from app.providers.inputs import SourceReader
from app.providers.local_render import (
    IMAGE_LONG_SIDES,
    ImageFormat,
    decode_image,
    encode_image,
)
from app.providers.upstream import (
    channel_fault,
    log_channel_fault,
    request_failure,
    scrub,
    sniff_media_type,
    unavailable,
)

log = logging.getLogger(__name__)

STANDARD_SIZES = ("1024x1024", "1536x1024", "1024x1536")
_LANDSCAPE = {"3:2", "16:9", "4:3", "21:9"}
_PORTRAIT = {"2:3", "9:16", "3:4"}
_CALLER_FAULT_STATUSES = {400, 404, 409, 413, 422}
_CONTENT_POLICY_CODES = {"moderation_blocked", "content_policy_violation"}
# What the Images API makes, and all an edit takes.
_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})


class OpenAIImagesProvider:
    name = "openai"
    idempotent_submit = False  # a synchronous call with no idempotency key

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        upstream_model: str,
        read_sources: SourceReader,
        request_timeout_s: float = 300.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._model = upstream_model
        self._read_sources = read_sources
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            max_retries=0,
            timeout=httpx.Timeout(request_timeout_s, connect=connect_timeout_s),
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def submit(self, job: ProviderJob, *, report: ProgressReporter) -> Outcome:
        params = job.input
        try:
            arguments = _image_arguments(params, model=self._model)
        except ValueError as exc:
            return Failed("invalid_input", str(exc))
        urls = list(params.get("input_urls") or params.get("image_urls") or [])
        sources = await self._read_sources(urls, job.task_id) if urls else []
        if isinstance(sources, Failed):
            return sources
        await report(5)
        try:
            if sources:
                images = [_upload(i, data) for i, data in enumerate(sources)]
                response = await self._client.images.edit(image=images, **arguments)
            else:
                response = await self._client.images.generate(**arguments)
        except openai.APIStatusError as exc:
            return self._status_outcome(exc)
        except openai.APIConnectionError as exc:
            raise self._connection_failure(exc) from None
        except ValueError:
            # The SDK hands a 200 whose body claims JSON but is not straight to json.loads.
            return Failed("provider_error", "the provider answered with malformed JSON")
        await report(95)
        outcome = _completed(response, model=self._model)
        long_side = IMAGE_LONG_SIDES.get(str(params.get("resolution")), 0)
        if isinstance(outcome, Completed) and long_side > 1024:
            # 2K and 4K are priced as such; OpenAI's largest size is 1536 px, so the image
            # is enlarged to the tier's long side (the README says so).
            fmt = arguments["output_format"]
            try:
                enlarged = await asyncio.to_thread(
                    _enlarge, outcome.outputs[0].data, long_side, fmt
                )
            except ValueError as exc:
                return Failed("provider_error", f"the provider's image cannot be enlarged: {exc}")
            outcome = Completed([Output(enlarged, f"image/{fmt}")], cost=outcome.cost)
        return outcome

    async def poll(self, job: ProviderJob, upstream_id: str) -> Outcome:
        return Failed("provider_error", "the upstream call was interrupted and cannot be looked up")

    async def cancel(self, upstream_id: str) -> bool:
        return False  # the call is synchronous: there is nothing upstream to cancel

    def _status_outcome(self, exc: openai.APIStatusError) -> Outcome:
        status = exc.status_code
        upstream_message = scrub(_error_message(exc), self._api_key)
        if status in (401, 403):
            # Upstream 401 bodies often echo part of the key; none of it goes anywhere.
            log_channel_fault(
                log, "openai", self._base_url, f"refused this channel's credential (HTTP {status})"
            )
            return channel_fault(
                "auth",
                f"the provider refused this gateway channel's credentials (HTTP {status})",
                {"status": status},
            )
        if status == 429 or status >= 500:
            raise unavailable(exc.response, may_create=True) from None
        if _is_content_policy(exc):
            return Failed(
                "content_policy",
                "the provider's moderation refused the request"
                + (f": {upstream_message}" if upstream_message else ""),
            )
        if status in _CALLER_FAULT_STATUSES:
            return Failed(
                "invalid_input",
                "the provider rejected the input"
                + (f": {upstream_message}" if upstream_message else ""),
            )
        return Failed("provider_error", f"the provider answered HTTP {status}")

    def _connection_failure(self, exc: openai.APIConnectionError) -> ProviderUnavailable:
        # The SDK wraps the transport's exception: that one tells whether anything was sent.
        return request_failure(
            exc.__cause__ or exc,
            may_create=True,
            timed_out=isinstance(exc, openai.APITimeoutError),
        )


def _image_arguments(params: Mapping[str, Any], *, model: str) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "model": model,
        "prompt": str(params.get("prompt", "")),
        "n": 1,
        "size": size_for(str(params.get("aspect_ratio", "1:1")), params.get("resolution")),
        "quality": _choice(params, "quality", ("low", "medium", "high"), "medium"),
        "output_format": _choice(params, "output_format", ("png", "jpeg", "webp"), "png"),
    }
    # Sent only when asked for: not every Images-compatible upstream knows them.
    if params.get("moderation") is not None:
        arguments["moderation"] = _choice(params, "moderation", ("low", "auto"), "auto")
    if params.get("background") is not None:
        allowed = ("transparent", "opaque", "auto")
        arguments["background"] = _choice(params, "background", allowed, "auto")
    if params.get("output_compression") is not None:
        arguments["output_compression"] = int(params["output_compression"])
    return arguments


def size_for(aspect_ratio: str, resolution: object) -> str:
    """OpenAI's size for our aspect ratio and resolution; ValueError on unknown values.

    An explicit standard size wins; 1K/2K/4K only pick the orientation, because the
    standard sizes are all the GPT image models share.
    """
    if isinstance(resolution, str) and resolution in STANDARD_SIZES:
        return resolution
    if resolution not in (None, "1K", "2K", "4K"):
        allowed = ", ".join([*STANDARD_SIZES, "1K", "2K", "4K"])
        raise ValueError(f"resolution {resolution!r} is not available: expected one of {allowed}")
    if aspect_ratio == "auto":
        return "auto"
    if aspect_ratio == "1:1":
        return "1024x1024"
    if aspect_ratio in _LANDSCAPE:
        return "1536x1024"
    if aspect_ratio in _PORTRAIT:
        return "1024x1536"
    raise ValueError(f"aspect_ratio {aspect_ratio!r} is not available for this model")


def _choice(params: Mapping[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = params.get(name)
    if value is None:
        return default
    if value not in allowed:
        raise ValueError(f"{name} {value!r} is not available: expected one of {', '.join(allowed)}")
    return str(value)


def _upload(index: int, data: bytes) -> tuple[str, bytes, str]:
    content_type = _image_type(data) or "application/octet-stream"
    extension = content_type.rsplit("/", 1)[-1]
    return (f"input-{index}.{extension}", data, content_type)


def _image_type(data: bytes) -> str | None:
    content_type = sniff_media_type(data)
    return content_type if content_type in _IMAGE_TYPES else None


def _completed(response: object, *, model: str) -> Outcome:
    # Without strict validation the SDK returns whatever parsed: text for a non-JSON body.
    if not isinstance(response, openai.types.ImagesResponse) or not response.data:
        return Failed("provider_error", "the provider answered without an image")
    encoded = response.data[0].b64_json
    if not isinstance(encoded, str):
        return Failed("provider_error", "the provider answered without an image")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return Failed("provider_error", "the provider answered with an image that is not base64")
    content_type = _image_type(data)
    if content_type is None:
        return Failed("provider_error", "the provider answered with a file that is not an image")
    cost: dict[str, Any] | None = None
    if response.usage is not None:
        cost = {"unit": "tokens", "model": model, **response.usage.model_dump(exclude_none=True)}
    return Completed([Output(data, content_type)], cost=cost)


def _enlarge(data: bytes, long_side: int, output_format: ImageFormat) -> bytes:
    image = decode_image(data, keep_alpha=True)
    scale = long_side / max(image.width, image.height)
    size = (round(image.width * scale), round(image.height * scale))
    return encode_image(image.resize(size, Image.Resampling.LANCZOS), output_format)


def _is_content_policy(exc: openai.APIStatusError) -> bool:
    if exc.code in _CONTENT_POLICY_CODES:
        return True
    return exc.type == "image_generation_user_error" and "safety" in _error_message(exc).lower()


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        message = body.get("message")
        if isinstance(message, str):
            return message
    return ""
