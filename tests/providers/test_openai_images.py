"""The OpenAI Images adapter against a fake upstream on loopback, one test per mapping row."""

from __future__ import annotations

import io
import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import pytest
from PIL import Image

from app.providers.base import Completed, Failed, ProviderJob, ProviderUnavailable
from app.providers.openai_images import OpenAIImagesProvider
from tests.fakes.openai_images import FakeOpenAIImages, running_fake
from tests.support.server import free_port

KEY = "sk-test-" + "k3y" * 12
MODEL = "gpt-image-1"
SOURCES: dict[str, bytes] = {}


def _image(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


SOURCES["https://media.example/a.png"] = _image("PNG")
SOURCES["https://media.example/b.jpg"] = _image("JPEG")


async def read_sources(urls: Sequence[str], _task_id: str) -> list[bytes] | Failed:
    return [SOURCES[url] for url in urls]


def job(**params: Any) -> ProviderJob:
    scene = "Image to image" if "input_urls" in params else "Text to image"
    return ProviderJob("task-1", "gpt-image-2-text-to-image", scene, "image", params, 1)


async def no_progress(_progress: int) -> None:
    return None


@pytest.fixture
def fake() -> Iterator[FakeOpenAIImages]:
    with running_fake(KEY) as server:
        yield server


Factory = Callable[..., OpenAIImagesProvider]


@pytest.fixture
async def make_provider(fake: FakeOpenAIImages) -> AsyncIterator[Factory]:
    made: list[OpenAIImagesProvider] = []

    def make(**overrides: Any) -> OpenAIImagesProvider:
        options: dict[str, Any] = {
            "base_url": fake.base_url,
            "api_key": KEY,
            "upstream_model": MODEL,
            "read_sources": read_sources,
            "request_timeout_s": 30.0,
        }
        provider = OpenAIImagesProvider(**{**options, **overrides})
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


@pytest.fixture
def provider(make_provider: Factory) -> OpenAIImagesProvider:
    return make_provider()


def decoded(outcome: object) -> Image.Image:
    assert isinstance(outcome, Completed), outcome
    return Image.open(io.BytesIO(outcome.outputs[0].data))


@pytest.mark.parametrize(
    ("aspect_ratio", "resolution", "size", "pixels"),
    [
        ("1:1", None, "1024x1024", (1024, 1024)),
        ("16:9", None, "1536x1024", (1536, 1024)),
        # 2K and 4K are priced as such: OpenAI's largest size, enlarged to the tier.
        ("3:2", "2K", "1536x1024", (2048, 1365)),
        ("9:16", "4K", "1024x1536", (2731, 4096)),
        ("9:16", "1K", "1024x1536", (1024, 1536)),
        ("3:4", None, "1024x1536", (1024, 1536)),
        ("1:1", "1536x1024", "1536x1024", (1536, 1024)),
        ("auto", None, "auto", (1024, 1024)),
    ],
)
async def test_size_follows_aspect_ratio_and_resolution(
    provider: OpenAIImagesProvider,
    fake: FakeOpenAIImages,
    aspect_ratio: str,
    resolution: str | None,
    size: str,
    pixels: tuple[int, int],
) -> None:
    params = {"prompt": "a lighthouse", "aspect_ratio": aspect_ratio}
    if resolution:
        params["resolution"] = resolution
    outcome = await provider.submit(job(**params), report=no_progress)
    assert decoded(outcome).size == pixels
    (request,) = fake.requests
    assert request.path == "/v1/images/generations"
    assert request.fields["size"] == size
    assert request.fields["model"] == MODEL
    assert request.fields["n"] == 1


@pytest.mark.parametrize(
    ("output_format", "quality", "content_type", "pil_format"),
    [
        ("png", "low", "image/png", "PNG"),
        ("jpeg", "medium", "image/jpeg", "JPEG"),
        ("webp", "high", "image/webp", "WEBP"),
    ],
)
async def test_format_and_quality_pass_through(
    provider: OpenAIImagesProvider,
    fake: FakeOpenAIImages,
    output_format: str,
    quality: str,
    content_type: str,
    pil_format: str,
) -> None:
    outcome = await provider.submit(
        job(prompt="a fox", output_format=output_format, quality=quality), report=no_progress
    )
    assert isinstance(outcome, Completed)
    assert outcome.outputs[0].content_type == content_type
    assert decoded(outcome).format == pil_format
    assert fake.requests[0].fields["quality"] == quality
    assert fake.requests[0].fields["output_format"] == output_format


async def test_usage_is_recorded_as_the_cost(
    provider: OpenAIImagesProvider, fake: FakeOpenAIImages
) -> None:
    progress: list[int] = []

    async def report(value: int) -> None:
        progress.append(value)

    outcome = await provider.submit(job(prompt="a fox"), report=report)
    assert isinstance(outcome, Completed)
    assert outcome.cost is not None
    assert outcome.cost["unit"] == "tokens"
    assert outcome.cost["model"] == MODEL
    assert outcome.cost["total_tokens"] == 1106
    assert outcome.cost["input_tokens_details"] == {"image_tokens": 40, "text_tokens": 10}
    assert progress == sorted(progress) and progress[-1] < 100


async def test_moderation_and_background_are_sent_only_when_given(
    provider: OpenAIImagesProvider, fake: FakeOpenAIImages
) -> None:
    await provider.submit(job(prompt="a fox"), report=no_progress)
    await provider.submit(
        job(prompt="a fox", moderation="low", background="opaque"), report=no_progress
    )
    plain, tuned = fake.requests
    assert "moderation" not in plain.fields and "background" not in plain.fields
    assert tuned.fields["moderation"] == "low"
    assert tuned.fields["background"] == "opaque"


async def test_edits_upload_the_source_bytes(
    provider: OpenAIImagesProvider, fake: FakeOpenAIImages
) -> None:
    urls = ["https://media.example/a.png", "https://media.example/b.jpg"]
    outcome = await provider.submit(
        job(prompt="make it night", input_urls=urls, aspect_ratio="2:3", output_format="jpeg"),
        report=no_progress,
    )
    image = decoded(outcome)
    assert (image.size, image.format) == ((1024, 1536), "JPEG")
    (request,) = fake.requests
    assert request.path == "/v1/images/edits"
    assert [u.data for u in request.images] == [SOURCES[url] for url in urls]
    assert [u.content_type for u in request.images] == ["image/png", "image/jpeg"]
    assert request.fields["size"] == "1024x1536"
    assert request.fields["model"] == MODEL


async def test_moderation_blocked_is_content_policy(
    provider: OpenAIImagesProvider, fake: FakeOpenAIImages
) -> None:
    fake.mode = "moderation_blocked"
    outcome = await provider.submit(job(prompt="something"), report=no_progress)
    assert isinstance(outcome, Failed)
    assert outcome.code == "content_policy"
    assert "safety system" in outcome.message


async def test_other_bad_request_is_invalid_input(
    provider: OpenAIImagesProvider, fake: FakeOpenAIImages
) -> None:
    fake.mode = "bad_request"
    outcome = await provider.submit(job(prompt="something"), report=no_progress)
    assert isinstance(outcome, Failed)
    assert outcome.code == "invalid_input"
    assert "'prompt' is too long" in outcome.message


async def test_a_key_echoed_in_an_error_message_is_scrubbed(
    provider: OpenAIImagesProvider, fake: FakeOpenAIImages
) -> None:
    fake.mode = "bad_request"
    fake.bad_request_message = f"Bad header: Authorization: Bearer {KEY}"
    outcome = await provider.submit(job(prompt="something"), report=no_progress)
    assert isinstance(outcome, Failed) and outcome.code == "invalid_input"
    assert KEY not in repr(outcome)
    assert "Bearer ***" in outcome.message


@pytest.mark.parametrize("mode", ["unauthorized", "forbidden"])
async def test_auth_refusal_is_the_channels_fault_and_never_shows_the_key(
    provider: OpenAIImagesProvider,
    fake: FakeOpenAIImages,
    caplog: pytest.LogCaptureFixture,
    mode: Any,
) -> None:
    fake.mode = mode
    caplog.set_level(logging.DEBUG)
    outcome = await provider.submit(job(prompt="something"), report=no_progress)
    assert isinstance(outcome, Failed)
    assert outcome.code == "provider_error"
    assert outcome.details["channel_fault"] == "auth"
    assert "credentials" in outcome.message and "not with your request" in outcome.message
    assert KEY not in repr(outcome)
    assert "refused this channel's credential" in caplog.text
    assert KEY not in caplog.text


async def test_a_wrong_key_echoed_by_the_upstream_is_not_repeated(
    make_provider: Factory, fake: FakeOpenAIImages, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "sk-wrong-" + "z" * 30
    caplog.set_level(logging.DEBUG)
    outcome = await make_provider(api_key=wrong).submit(job(prompt="x"), report=no_progress)
    assert isinstance(outcome, Failed) and outcome.details["channel_fault"] == "auth"
    assert fake.requests[0].headers["authorization"] == f"Bearer {wrong}"
    assert wrong not in repr(outcome) and wrong not in caplog.text


async def test_rate_limit_is_retryable_with_retry_after(
    provider: OpenAIImagesProvider, fake: FakeOpenAIImages
) -> None:
    fake.mode = "rate_limited"
    with pytest.raises(ProviderUnavailable) as raised:
        await provider.submit(job(prompt="x"), report=no_progress)
    assert raised.value.retry_after_s == 7
    assert raised.value.ambiguous is False
    assert "429" in str(raised.value)


async def test_rate_limit_retry_after_as_a_date(
    provider: OpenAIImagesProvider, fake: FakeOpenAIImages
) -> None:
    fake.mode = "rate_limited"
    fake.retry_after = "Thu, 01 Jan 2099 00:00:00 GMT"
    with pytest.raises(ProviderUnavailable) as raised:
        await provider.submit(job(prompt="x"), report=no_progress)
    assert raised.value.retry_after_s is not None and raised.value.retry_after_s > 10**8


async def test_server_error_is_retryable_and_not_ambiguous(
    provider: OpenAIImagesProvider, fake: FakeOpenAIImages
) -> None:
    fake.mode = "server_error"
    with pytest.raises(ProviderUnavailable) as raised:
        await provider.submit(job(prompt="x"), report=no_progress)
    assert raised.value.ambiguous is False
    assert raised.value.retry_after_s is None


async def test_gateway_timeout_is_ambiguous(
    provider: OpenAIImagesProvider, fake: FakeOpenAIImages
) -> None:
    fake.mode = "gateway_timeout"
    with pytest.raises(ProviderUnavailable) as raised:
        await provider.submit(job(prompt="x"), report=no_progress)
    assert raised.value.ambiguous is True


async def test_timeout_after_the_body_was_sent_is_ambiguous(
    make_provider: Factory, fake: FakeOpenAIImages
) -> None:
    fake.mode = "hang"
    provider = make_provider(request_timeout_s=0.5)
    with pytest.raises(ProviderUnavailable) as raised:
        await provider.submit(job(prompt="x"), report=no_progress)
    assert raised.value.ambiguous is True
    assert fake.requests[0].fields["prompt"] == "x"  # the upstream did get the job


async def test_refused_connection_is_retryable_and_not_ambiguous(make_provider: Factory) -> None:
    provider = make_provider(base_url=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(ProviderUnavailable) as raised:
        await provider.submit(job(prompt="x"), report=no_progress)
    assert raised.value.ambiguous is False


async def test_connection_dropped_after_the_body_is_ambiguous(make_provider: Factory) -> None:
    """A server that reads the whole request and closes without answering."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def swallow() -> None:
        connection, _ = listener.accept()
        with connection:
            received = b""
            while b"\r\n\r\n" not in received:
                received += connection.recv(65536)
            head, _, body = received.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(body) < length:
                body += connection.recv(65536)

    thread = threading.Thread(target=swallow, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        provider = make_provider(base_url=f"http://127.0.0.1:{port}/v1")
        with pytest.raises(ProviderUnavailable) as raised:
            await provider.submit(job(prompt="x"), report=no_progress)
        assert raised.value.ambiguous is True
    finally:
        thread.join(timeout=10)
        listener.close()


@pytest.mark.parametrize("mode", ["malformed_json", "not_json", "no_image"])
async def test_an_answer_without_an_image_is_a_provider_error(
    provider: OpenAIImagesProvider, fake: FakeOpenAIImages, mode: Any
) -> None:
    fake.mode = mode
    outcome = await provider.submit(job(prompt="x"), report=no_progress)
    assert isinstance(outcome, Failed)
    assert outcome.code == "provider_error"


async def test_poll_cannot_look_the_call_up(provider: OpenAIImagesProvider) -> None:
    outcome = await provider.poll(job(prompt="x"), "task-1")
    assert outcome == Failed(
        "provider_error", "the upstream call was interrupted and cannot be looked up"
    )


async def test_a_successful_run_logs_no_key(
    provider: OpenAIImagesProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outcome = await provider.submit(job(prompt="a fox"), report=no_progress)
    assert isinstance(outcome, Completed)
    assert caplog.records  # the SDK's debug logging was captured
    assert KEY not in caplog.text
