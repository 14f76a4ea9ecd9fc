"""The ModelArk (Seedance) adapter against a fake ModelArk on loopback."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import av
import httpx
import pytest

from app.net.url_guard import UrlPolicy
from app.providers.base import (
    Completed,
    Failed,
    Outcome,
    Pending,
    Provider,
    ProviderJob,
    ProviderUnavailable,
)
from app.providers.modelark import ModelArkProvider
from tests.fakes.modelark import Canned, FakeModelArk, Script, error_body, running_modelark
from tests.providers.support import no_progress, poll_to_end, submitted
from tests.support.server import free_port

KEY = "ark-secret-key-7f3c9a1e5b"
MODEL = "seedance-1-5-pro-251215"
LOOPBACK = UrlPolicy(allow_private=True, timeout_s=5.0)


@pytest.fixture
def fake() -> Iterator[FakeModelArk]:
    with running_modelark(KEY) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def provider_for(
    base_url: str, http: httpx.AsyncClient, *, key: str = KEY, **options: Any
) -> ModelArkProvider:
    values: dict[str, Any] = {"fetch_policy": LOOPBACK, "request_timeout_s": 5.0, **options}
    return ModelArkProvider(
        base_url=base_url, api_key=key, upstream_model=MODEL, http=http, **values
    )


@pytest.fixture
def provider(fake: FakeModelArk, http: httpx.AsyncClient) -> ModelArkProvider:
    return provider_for(fake.base_url, http)


def video_job(**params: Any) -> ProviderJob:
    scene = "Image to video" if "image_urls" in params else "Text to video"
    return ProviderJob(
        task_id="task-1",
        model_id="seedance-2.0-text-to-video",
        scene=scene,
        media_type="video",
        input={"prompt": "a red kite over the sea", **params},
        attempt=1,
    )


async def finished_with(fake: FakeModelArk, provider: ModelArkProvider, script: Script) -> Outcome:
    fake.script = script
    job = video_job()
    pending = await submitted(provider, job)
    return await poll_to_end(provider, job, pending.upstream_id)


def video_duration_s(data: bytes) -> float:
    with av.open(io.BytesIO(data), mode="r") as container:
        return float(container.duration or 0) / av.time_base


# --- the request ----------------------------------------------------------------------


def test_it_is_a_provider(provider: ModelArkProvider) -> None:
    typed: Provider = provider
    assert typed.name == "modelark"


async def test_text_to_video_body_carries_the_prompt_and_parameters(
    fake: FakeModelArk, provider: ModelArkProvider
) -> None:
    job = video_job(aspect_ratio="9:16", resolution="1080p", duration="10", generate_audio=True)
    pending = await submitted(provider, job)

    (request,) = fake.on("POST")
    assert request.path == "/api/v3/contents/generations/tasks"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.json() == {
        "model": MODEL,
        "content": [{"type": "text", "text": "a red kite over the sea"}],
        "ratio": "9:16",
        "resolution": "1080p",
        "duration": 10,
        "generate_audio": True,
    }
    assert pending.upstream_id in fake.tasks
    assert pending.poll_after_s > 0


async def test_one_image_is_the_first_frame_with_seed_camera_and_callback(
    fake: FakeModelArk, http: httpx.AsyncClient
) -> None:
    callback = "https://gateway.example/api/v1/upstream/ark-main/callback"
    provider = provider_for(fake.base_url, http, callback_url=callback)
    image = "https://cdn.example/cat.png"
    await submitted(provider, video_job(image_urls=[image], seed=42, camera_fixed=True))

    body = fake.on("POST")[0].json()
    assert body["content"] == [
        {"type": "text", "text": "a red kite over the sea"},
        {"type": "image_url", "image_url": {"url": image}, "role": "first_frame"},
    ]
    assert body["seed"] == 42
    assert body["camera_fixed"] is True
    assert body["callback_url"] == callback
    assert "generate_audio" not in body


async def test_several_images_are_reference_images(
    fake: FakeModelArk, provider: ModelArkProvider
) -> None:
    urls = ["https://cdn.example/a.png", "https://cdn.example/b.png"]
    await submitted(provider, video_job(input_urls=urls))

    items = fake.on("POST")[0].json()["content"][1:]
    assert [(i["image_url"]["url"], i["role"]) for i in items] == [
        (urls[0], "reference_image"),
        (urls[1], "reference_image"),
    ]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"duration": "five"}, "duration"),
        ({"seed": 1.5}, "seed"),
        ({"generate_audio": "yes"}, "generate_audio"),
        ({"image_urls": "https://cdn.example/a.png"}, "image_urls"),
    ],
)
async def test_a_bad_value_fails_as_invalid_input_without_a_request(
    fake: FakeModelArk, provider: ModelArkProvider, params: dict[str, Any], named: str
) -> None:
    outcome = await provider.submit(video_job(**params), report=no_progress)

    assert isinstance(outcome, Failed)
    assert outcome.code == "invalid_input"
    assert named in outcome.message
    assert fake.requests == []


async def test_a_base_url_ending_in_api_v3_is_accepted(
    fake: FakeModelArk, http: httpx.AsyncClient
) -> None:
    provider = provider_for(fake.base_url + "/api/v3/", http)
    await submitted(provider, video_job())
    assert fake.on("POST")[0].path == "/api/v3/contents/generations/tasks"


# --- polling --------------------------------------------------------------------------


async def test_polls_through_queued_and_running_to_a_copied_video(
    fake: FakeModelArk, provider: ModelArkProvider, http: httpx.AsyncClient
) -> None:
    fake.script = Script(queued_polls=2, running_polls=2, progress=40)
    job = video_job()
    pending = await submitted(provider, job)

    seen = [await provider.poll(job, pending.upstream_id) for _ in range(4)]
    assert all(isinstance(o, Pending) for o in seen)
    assert [o.progress for o in seen if isinstance(o, Pending)] == [0, 0, 40, 40]
    assert fake.tasks[pending.upstream_id].status == "running"

    outcome = await provider.poll(job, pending.upstream_id)
    assert isinstance(outcome, Completed)
    (output,) = outcome.outputs
    assert output.content_type == "video/mp4"
    assert output.data == fake.videos[pending.upstream_id]
    assert video_duration_s(output.data) > 0
    assert outcome.cost == {
        "unit": "tokens",
        "model": MODEL,
        "completion_tokens": 108900,
        "total_tokens": 108900,
    }
    gets = [r for r in fake.on("GET") if r.path.startswith("/api/v3/")]
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in gets)
    (download,) = [r for r in fake.on("GET") if r.path.startswith("/files/")]
    assert "authorization" not in download.headers  # the key stays with the API
    # The upstream URL expiring afterwards loses nothing: the bytes were copied at once.
    fake.expire_video(pending.upstream_id)
    gone = await http.get(f"{fake.base_url}/files/{pending.upstream_id}.mp4")
    assert gone.status_code == 404


async def test_a_result_url_that_is_gone_is_polled_again(
    fake: FakeModelArk, provider: ModelArkProvider
) -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        await finished_with(fake, provider, Script(video_stored=False))

    assert "could not be downloaded" in str(caught.value)
    assert "X-Tos-Signature" not in str(caught.value)  # presigned URLs are secrets


async def test_a_result_url_refused_by_the_policy_fails_the_task(
    fake: FakeModelArk, http: httpx.AsyncClient
) -> None:
    provider = provider_for(fake.base_url, http, fetch_policy=UrlPolicy())

    outcome = await finished_with(fake, provider, Script())

    assert isinstance(outcome, Failed)
    assert outcome.code == "provider_error"
    assert "loopback" in outcome.message


async def test_a_result_that_is_not_mp4_fails_the_task(
    fake: FakeModelArk, provider: ModelArkProvider
) -> None:
    outcome = await finished_with(fake, provider, Script(video=b"<html>sign in</html>"))

    assert isinstance(outcome, Failed)
    assert outcome.code == "provider_error"


@pytest.mark.parametrize(
    ("upstream_code", "code"),
    [
        ("InputTextSensitiveContentDetected", "content_policy"),
        ("InputImageSensitiveContentDetected.PrivacyInformation", "content_policy"),
        ("OutputVideoSensitiveContentDetected.PolicyViolation", "content_policy"),
        ("OutputAudioSensitiveContentDetected", "content_policy"),
        ("InvalidParameter", "invalid_input"),
        ("MissingParameter", "invalid_input"),
        ("InternalServiceError", "provider_error"),
        ("ModelLoadingError", "provider_error"),
    ],
)
async def test_a_failed_task_maps_its_error_code(
    fake: FakeModelArk, provider: ModelArkProvider, upstream_code: str, code: str
) -> None:
    script = Script(outcome="failed", error_code=upstream_code, error_message="no luck here")
    outcome = await finished_with(fake, provider, script)

    assert isinstance(outcome, Failed)
    assert outcome.code == code
    assert "no luck here" in outcome.message
    assert outcome.details["upstream_code"] == upstream_code


@pytest.mark.parametrize(
    ("status", "code"), [("cancelled", "canceled"), ("expired", "provider_timeout")]
)
async def test_cancelled_and_expired_tasks(
    fake: FakeModelArk, provider: ModelArkProvider, status: str, code: str
) -> None:
    outcome = await finished_with(fake, provider, Script(outcome=status))

    assert isinstance(outcome, Failed)
    assert outcome.code == code


@pytest.mark.parametrize(
    "body",
    [
        b"<html>bad gateway</html>",
        b"[1, 2]",
        b'{"id": "cgt-1"}',
        b'{"id": "cgt-1", "status": "paused"}',
        b'{"id": "cgt-1", "status": "succeeded", "content": {}}',
    ],
)
async def test_a_malformed_poll_answer_is_a_provider_error(
    fake: FakeModelArk, provider: ModelArkProvider, body: bytes
) -> None:
    job = video_job()
    pending = await submitted(provider, job)
    fake.fail_next(Canned(200, body))

    outcome = await provider.poll(job, pending.upstream_id)

    assert isinstance(outcome, Failed)
    assert outcome.code == "provider_error"


async def test_an_unknown_upstream_task_is_a_provider_error(provider: ModelArkProvider) -> None:
    outcome = await provider.poll(video_job(), "cgt-never-created")

    assert isinstance(outcome, Failed)
    assert outcome.code == "provider_error"
    assert outcome.details["upstream_code"] == "ResourceNotFound"


# --- HTTP failures --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream_code", "code"),
    [
        ("InputTextSensitiveContentDetected", "content_policy"),
        ("InvalidParameter", "invalid_input"),
    ],
)
async def test_a_refused_submit_maps_its_error_code(
    fake: FakeModelArk,
    provider: ModelArkProvider,
    upstream_code: str,
    code: str,
) -> None:
    fake.fail_next(
        Canned(400, error_body(upstream_code, "ratio 5:1 is not supported"), method="POST")
    )

    outcome = await provider.submit(video_job(), report=no_progress)

    assert isinstance(outcome, Failed)
    assert outcome.code == code
    assert "ratio 5:1 is not supported" in outcome.message
    assert outcome.details == {"upstream_code": upstream_code, "status": 400}


async def test_an_unknown_model_is_a_provider_error(
    fake: FakeModelArk, provider: ModelArkProvider
) -> None:
    fake.fail_next(Canned(404, error_body("InvalidEndpointOrModel.NotFound"), method="POST"))

    outcome = await provider.submit(video_job(), report=no_progress)

    assert isinstance(outcome, Failed)
    assert outcome.code == "provider_error"


async def test_a_wrong_key_is_the_channels_fault_and_never_repeated(
    fake: FakeModelArk, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "ark-wrong-key-31415926"
    provider = provider_for(fake.base_url, http, key=wrong)
    caplog.set_level(logging.DEBUG)

    submitted_outcome = await provider.submit(video_job(), report=no_progress)
    polled = await provider.poll(video_job(), "cgt-anything")

    for outcome in (submitted_outcome, polled):
        assert isinstance(outcome, Failed)
        assert outcome.code == "provider_error"
        assert outcome.details["channel_fault"] == "auth"
        assert wrong not in repr(outcome)
    assert "refused this channel's credential" in caplog.text
    assert wrong not in caplog.text


async def test_a_forbidden_answer_is_the_channels_fault(
    fake: FakeModelArk, provider: ModelArkProvider
) -> None:
    fake.fail_next(Canned(403, error_body("AccountOverdueError"), method="POST"))

    outcome = await provider.submit(video_job(), report=no_progress)

    assert isinstance(outcome, Failed)
    assert outcome.details == {"channel_fault": "auth", "status": 403}


async def test_429_is_retryable_with_its_retry_after(
    fake: FakeModelArk, provider: ModelArkProvider
) -> None:
    fake.fail_next(Canned(429, error_body("RateLimitExceeded"), {"Retry-After": "7"}))

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.submit(video_job(), report=no_progress)

    assert isinstance(caught.value, ProviderUnavailable)
    assert caught.value.retry_after_s == 7
    assert caught.value.ambiguous is False
    assert fake.tasks == {}


@pytest.mark.parametrize(("status", "ambiguous"), [(500, False), (503, False), (504, True)])
async def test_5xx_on_submit_is_retryable_and_a_gateway_timeout_ambiguous(
    fake: FakeModelArk, provider: ModelArkProvider, status: int, ambiguous: bool
) -> None:
    fake.fail_next(Canned(status, b"oops", method="POST"))

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.submit(video_job(), report=no_progress)

    assert caught.value.ambiguous is ambiguous
    assert caught.value.retry_after_s is None


async def test_5xx_on_poll_is_retryable_and_never_ambiguous(
    fake: FakeModelArk, provider: ModelArkProvider
) -> None:
    job = video_job()
    pending = await submitted(provider, job)
    fake.fail_next(Canned(504, b"", method="GET"), Canned(500, b"", method="GET"))

    for _ in range(2):
        with pytest.raises(ProviderUnavailable) as caught:
            await provider.poll(job, pending.upstream_id)
        assert caught.value.ambiguous is False
    assert isinstance(await provider.poll(job, pending.upstream_id), Pending)


@pytest.mark.parametrize("body", [b"not json at all", b'{"status": "queued"}', b'"cgt-1"'])
async def test_a_malformed_submit_answer_is_a_provider_error(
    fake: FakeModelArk, provider: ModelArkProvider, body: bytes
) -> None:
    fake.fail_next(Canned(200, body, method="POST"))

    outcome = await provider.submit(video_job(), report=no_progress)

    assert isinstance(outcome, Failed)
    assert outcome.code == "provider_error"


async def test_a_hanging_submit_is_ambiguous_and_a_hanging_poll_is_not(
    fake: FakeModelArk, http: httpx.AsyncClient
) -> None:
    provider = provider_for(fake.base_url, http, request_timeout_s=0.3)
    job = video_job()
    pending = await submitted(provider, job)
    fake.fail_next(Canned(hang=True, method="POST"), Canned(hang=True, method="GET"))

    with pytest.raises(ProviderUnavailable) as on_submit:
        await provider.submit(job, report=no_progress)
    with pytest.raises(ProviderUnavailable) as on_poll:
        await provider.poll(job, pending.upstream_id)

    assert on_submit.value.ambiguous is True
    assert "may still run the job" in str(on_submit.value)
    assert on_poll.value.ambiguous is False


async def test_nothing_listening_is_retryable_and_not_ambiguous(http: httpx.AsyncClient) -> None:
    provider = provider_for(f"http://127.0.0.1:{free_port()}", http)

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.submit(video_job(), report=no_progress)

    assert caught.value.ambiguous is False


# --- cancel ---------------------------------------------------------------------------


async def test_cancel_of_a_queued_task_cancels_it(
    fake: FakeModelArk, provider: ModelArkProvider
) -> None:
    fake.script = Script(queued_polls=5)
    job = video_job()
    pending = await submitted(provider, job)

    assert await provider.cancel(pending.upstream_id) is True

    (request,) = fake.on("DELETE")
    assert request.path == f"/api/v3/contents/generations/tasks/{pending.upstream_id}"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    outcome = await provider.poll(job, pending.upstream_id)
    assert isinstance(outcome, Failed)
    assert outcome.code == "canceled"


async def test_cancel_of_a_running_or_unknown_task_is_refused_quietly(
    fake: FakeModelArk, provider: ModelArkProvider
) -> None:
    fake.script = Script(queued_polls=0, running_polls=5)
    job = video_job()
    pending = await submitted(provider, job)
    assert isinstance(await provider.poll(job, pending.upstream_id), Pending)
    assert fake.tasks[pending.upstream_id].status == "running"

    assert await provider.cancel(pending.upstream_id) is False
    assert await provider.cancel("cgt-never-created") is False
    assert fake.tasks[pending.upstream_id].status == "running"


async def test_cancel_during_an_outage_raises_retryable(
    fake: FakeModelArk, provider: ModelArkProvider
) -> None:
    fake.fail_next(Canned(503, b"", {"Retry-After": "3"}, method="DELETE"))

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.cancel("cgt-1")

    assert caught.value.retry_after_s == 3


async def test_an_id_with_path_characters_stays_one_segment(
    fake: FakeModelArk, provider: ModelArkProvider
) -> None:
    await provider.poll(video_job(), "../../files/x")

    (request,) = fake.on("GET")
    assert request.path == "/api/v3/contents/generations/tasks/..%2F..%2Ffiles%2Fx"


# --- the key --------------------------------------------------------------------------


async def test_the_key_never_appears_in_an_outcome_or_a_log(
    fake: FakeModelArk, provider: ModelArkProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    leaky = f"request by {KEY} refused"
    fake.fail_next(
        Canned(400, error_body("InvalidParameter", leaky), method="POST"),
        Canned(400, error_body("InputTextSensitiveContentDetected", leaky), method="POST"),
        Canned(403, error_body("AccessDenied", leaky), method="POST"),
        Canned(500, error_body("InternalServiceError", leaky), method="POST"),
    )
    seen: list[str] = []
    for _ in range(4):
        try:
            seen.append(repr(await provider.submit(video_job(), report=no_progress)))
        except ProviderUnavailable as exc:
            seen.append(repr(exc))
    failed = await finished_with(fake, provider, Script(outcome="failed", error_message=leaky))
    seen.append(repr(failed))

    assert "invalid_input" in seen[0] and "content_policy" in seen[1]
    assert "request by *** refused" in seen[0]
    for text in [*seen, caplog.text]:
        assert KEY not in text
