"""The Replicate adapter against a fake Replicate on loopback."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

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
from app.providers.local_render import render_text_to_image
from app.providers.replicate import ReplicateProvider, check_upstream_model
from tests.fakes.replicate import (
    DEFAULT_MODEL,
    DEFAULT_VERSION,
    NSFW_ERROR,
    WEBHOOK_SECRET,
    Canned,
    FakeReplicate,
    Script,
    problem_body,
    running_replicate,
)
from tests.providers.support import no_progress, poll_to_end, submitted
from tests.support.apps import eventually
from tests.support.receiver import receiving
from tests.support.server import free_port

KEY = "r8_secret_token_4d1e9b7c2a"
LOOPBACK = UrlPolicy(allow_private=True, timeout_s=5.0)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def fake() -> Iterator[FakeReplicate]:
    with running_replicate(KEY) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


def provider_for(
    base_url: str,
    http: httpx.AsyncClient,
    *,
    key: str = KEY,
    model: str = DEFAULT_MODEL,
    **options: Any,
) -> ReplicateProvider:
    values: dict[str, Any] = {
        "fetch_policy": LOOPBACK,
        "request_timeout_s": 5.0,
        "prefer_wait_s": None,  # the polling path; `Prefer: wait` has tests of its own
        **options,
    }
    return ReplicateProvider(
        base_url=base_url, api_key=key, upstream_model=model, http=http, **values
    )


@pytest.fixture
def provider(fake: FakeReplicate, http: httpx.AsyncClient) -> ReplicateProvider:
    return provider_for(fake.base_url, http)


def image_job(polls: int = 0, **params: Any) -> ProviderJob:
    return ProviderJob(
        task_id="task-1",
        model_id="flux-schnell",
        scene="Text to image",
        media_type="image",
        input={"prompt": "a lighthouse at dusk", **params},
        attempt=1,
        polls=polls,
    )


def video_job(**params: Any) -> ProviderJob:
    return ProviderJob(
        task_id="task-2",
        model_id="wan-video",
        scene="Text to video",
        media_type="video",
        input={"prompt": "waves on a pier", **params},
        attempt=1,
    )


async def finished_with(
    fake: FakeReplicate, provider: ReplicateProvider, script: Script
) -> Outcome:
    fake.script = script
    job = image_job()
    pending = await submitted(provider, job)
    return await poll_to_end(provider, job, pending.upstream_id)


def failed(outcome: object, code: str) -> Failed:
    assert isinstance(outcome, Failed), outcome
    assert outcome.code == code, outcome
    return outcome


# --- the request ----------------------------------------------------------------------


def test_it_is_a_provider_that_cannot_deduplicate(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    typed: Provider = provider_for("http://127.0.0.1:9", http, idempotent_submit=True)

    assert typed.name == "replicate"
    assert typed.idempotent_submit is False
    assert "idempotent_submit is ignored" in caplog.text


async def test_an_official_model_is_created_on_its_model_route(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    reported: list[int] = []

    async def report(progress: int) -> None:
        reported.append(progress)

    job = image_job(aspect_ratio="16:9", seed=None, num_outputs=2)
    pending = await provider.submit(job, report=report)

    assert isinstance(pending, Pending)
    (request,) = fake.on("POST")
    assert request.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "prefer" not in request.headers
    # The operator's input passes through as it is; unset values are left out.
    assert request.json() == {
        "input": {"prompt": "a lighthouse at dusk", "aspect_ratio": "16:9", "num_outputs": 2}
    }
    assert pending.upstream_id in fake.predictions
    assert pending.progress == 0
    assert pending.poll_after_s > 0
    assert pending.queue_position is None
    assert reported == [5]


@pytest.mark.parametrize(
    "model", [f"{DEFAULT_MODEL}:{DEFAULT_VERSION}", DEFAULT_VERSION], ids=["pinned", "bare"]
)
async def test_a_version_is_created_on_the_predictions_route(
    fake: FakeReplicate, http: httpx.AsyncClient, model: str
) -> None:
    provider = provider_for(fake.base_url, http, model=model)

    pending = await submitted(provider, image_job())

    (request,) = fake.on("POST")
    assert request.path == "/v1/predictions"
    assert request.json() == {
        "version": DEFAULT_VERSION,
        "input": {"prompt": "a lighthouse at dusk"},
    }
    assert fake.predictions[pending.upstream_id].model == DEFAULT_MODEL


async def test_a_callback_url_becomes_a_webhook_for_the_end_only(
    fake: FakeReplicate, http: httpx.AsyncClient
) -> None:
    callback = "https://gateway.example/api/v1/upstream/replicate-main/callback"
    provider = provider_for(fake.base_url, http, callback_url=callback)

    await submitted(provider, image_job())

    body = fake.on("POST")[0].json()
    assert body["webhook"] == callback
    assert body["webhook_events_filter"] == ["completed"]


async def test_a_base_url_ending_in_v1_is_accepted(
    fake: FakeReplicate, http: httpx.AsyncClient
) -> None:
    provider = provider_for(fake.base_url + "/v1/", http)

    await submitted(provider, image_job())

    assert fake.on("POST")[0].path == "/v1/models/black-forest-labs/flux-schnell/predictions"


@pytest.mark.parametrize(
    "model",
    ["flux-schnell", "a/b/c", "owner/name:latest", "owner/name:", "ABCDEF" * 11, ""],
)
def test_a_malformed_model_name_is_refused_at_construction(
    http: httpx.AsyncClient, model: str
) -> None:
    with pytest.raises(ValueError, match="replicate model"):
        provider_for("http://127.0.0.1:9", http, model=model)
    with pytest.raises(ValueError, match="replicate model"):
        check_upstream_model(model)


@pytest.mark.parametrize(
    "model", [DEFAULT_MODEL, f"{DEFAULT_MODEL}:{DEFAULT_VERSION}", DEFAULT_VERSION, "a.b/c_d-1"]
)
def test_a_well_formed_model_name_passes_the_check(model: str) -> None:
    check_upstream_model(model)


@pytest.mark.parametrize("wait_s", [0, 61])
def test_a_wait_outside_replicates_range_is_refused(http: httpx.AsyncClient, wait_s: int) -> None:
    with pytest.raises(ValueError, match="prefer_wait_s"):
        provider_for("http://127.0.0.1:9", http, prefer_wait_s=wait_s)


# --- Prefer: wait ---------------------------------------------------------------------


async def test_an_image_finished_within_the_wait_completes_at_submit(
    fake: FakeReplicate, http: httpx.AsyncClient
) -> None:
    provider = provider_for(fake.base_url, http, prefer_wait_s=5)

    outcome = await provider.submit(image_job(), report=no_progress)

    assert isinstance(outcome, Completed)
    assert outcome.outputs[0].data.startswith(PNG)
    assert outcome.cost is not None and outcome.cost["predict_time"] == 1.25
    (create,) = fake.on("POST")
    assert create.headers["prefer"] == "wait=5"
    assert fake.on("GET") == []  # no poll needed


async def test_the_default_waits_for_images_and_never_for_videos(
    fake: FakeReplicate, http: httpx.AsyncClient
) -> None:
    provider = ReplicateProvider(
        base_url=fake.base_url,
        api_key=KEY,
        upstream_model=DEFAULT_MODEL,
        http=http,
        fetch_policy=LOOPBACK,
    )

    assert isinstance(await provider.submit(image_job(), report=no_progress), Completed)
    assert isinstance(await provider.submit(video_job(), report=no_progress), Pending)

    image, video = fake.on("POST")
    assert image.headers["prefer"] == "wait=5"
    assert "prefer" not in video.headers


async def test_a_prediction_ending_during_the_wait_is_answered_when_it_ends(
    fake: FakeReplicate, http: httpx.AsyncClient
) -> None:
    fake.script = Script(finish_within_wait=False, finish_after_s=0.3)
    provider = provider_for(fake.base_url, http, prefer_wait_s=10)

    outcome = await provider.submit(image_job(), report=no_progress)

    assert isinstance(outcome, Completed)
    assert fake.on("GET") == []


async def test_a_prediction_outlasting_the_wait_is_pending_and_polled(
    fake: FakeReplicate, http: httpx.AsyncClient
) -> None:
    fake.script = Script(finish_within_wait=False)
    # The fake holds the create for the whole second: the wait extends the read timeout.
    provider = provider_for(fake.base_url, http, prefer_wait_s=1, request_timeout_s=0.5)
    job = image_job()

    pending = await submitted(provider, job)

    assert fake.predictions[pending.upstream_id].status == "starting"
    assert isinstance(await poll_to_end(provider, job, pending.upstream_id), Completed)


async def test_a_timeout_of_a_waiting_create_is_ambiguous(
    fake: FakeReplicate, http: httpx.AsyncClient
) -> None:
    # The read timeout is the wait plus the request timeout: a hold alone never trips it.
    provider = provider_for(fake.base_url, http, prefer_wait_s=1, request_timeout_s=0.2)
    fake.fail_next(Canned(hang=True, method="POST"))

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.submit(image_job(), report=no_progress)

    assert caught.value.ambiguous is True
    assert "may still run the job" in str(caught.value)


async def test_a_download_failing_after_the_wait_leaves_the_prediction_to_the_poll(
    fake: FakeReplicate, http: httpx.AsyncClient
) -> None:
    fake.script = Script(files_stored=False)
    provider = provider_for(fake.base_url, http, prefer_wait_s=5)
    job = image_job()

    pending = await submitted(provider, job)

    assert fake.predictions[pending.upstream_id].status == "succeeded"
    with pytest.raises(ProviderUnavailable, match="could not be downloaded"):
        await provider.poll(job, pending.upstream_id)


async def test_a_refusal_within_the_wait_fails_at_submit(
    fake: FakeReplicate, http: httpx.AsyncClient
) -> None:
    fake.script = Script(outcome="failed", error=NSFW_ERROR)
    provider = provider_for(fake.base_url, http, prefer_wait_s=5)

    outcome = await provider.submit(image_job(), report=no_progress)

    assert "NSFW content detected" in failed(outcome, "content_policy").message


# --- polling --------------------------------------------------------------------------


async def test_polls_through_starting_and_processing_to_a_copied_image(
    fake: FakeReplicate, provider: ReplicateProvider, http: httpx.AsyncClient
) -> None:
    logs = "Using seed: 42\n  0%|          | 0/4 [00:00<?, ?it/s]\n 45%|####5     | 2/4\n"
    fake.script = Script(starting_polls=2, processing_polls=2, logs=logs)
    job = image_job()
    pending = await submitted(provider, job)

    seen = [await provider.poll(job, pending.upstream_id) for _ in range(4)]
    assert [o.progress for o in seen if isinstance(o, Pending)] == [0, 0, 45, 45]

    outcome = await provider.poll(job, pending.upstream_id)
    assert isinstance(outcome, Completed)
    (output,) = outcome.outputs
    assert output.content_type == "image/png"
    assert output.data == fake.files[f"{pending.upstream_id}-0.png"]
    assert outcome.cost == {
        "unit": "seconds",
        "model": DEFAULT_MODEL,
        "predict_time": 1.25,
        "total_time": 2.5,
    }
    api_gets = fake.on("GET")
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in api_gets)
    assert api_gets[0].path == f"/v1/predictions/{pending.upstream_id}"
    (download,) = fake.on("GET", "/files/")
    assert "authorization" not in download.headers  # the token stays with the API
    # The upstream URL expiring afterwards loses nothing: the bytes were copied at once.
    fake.expire_files(pending.upstream_id)
    gone = await http.get(f"{fake.base_url}/files/{pending.upstream_id}-0.png")
    assert gone.status_code == 404


async def test_processing_without_a_percentage_reports_half_way(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    fake.script = Script(starting_polls=0, processing_polls=3, logs="loading weights\n")
    job = image_job()
    pending = await submitted(provider, job)

    outcome = await provider.poll(job, pending.upstream_id)

    assert isinstance(outcome, Pending)
    assert outcome.progress == 50


async def test_the_poll_backs_off_with_the_polls_so_far_up_to_a_cap(
    fake: FakeReplicate, http: httpx.AsyncClient
) -> None:
    fake.script = Script(starting_polls=50)
    provider = provider_for(fake.base_url, http, poll_interval_s=2.0, max_poll_interval_s=20.0)
    pending = await submitted(provider, image_job())

    waits = []
    for polls in (0, 1, 2, 10):
        outcome = await provider.poll(image_job(polls=polls), pending.upstream_id)
        assert isinstance(outcome, Pending)
        waits.append(outcome.poll_after_s)

    assert waits == [2.0, 3.0, 4.5, 20.0]


@pytest.mark.parametrize("shape", ["list", "object"])
async def test_every_file_of_a_list_or_an_object_is_copied_in_order(
    fake: FakeReplicate, provider: ReplicateProvider, shape: str
) -> None:
    outcome = await finished_with(fake, provider, Script(files=3, shape=shape))

    assert isinstance(outcome, Completed)
    (prediction_id,) = fake.predictions
    expected = [fake.files[f"{prediction_id}-{i}.png"] for i in range(3)]
    assert [o.data for o in outcome.outputs] == expected
    assert len(set(expected)) == 3  # three different images, so the order is checked


async def test_a_video_output_is_copied_as_mp4(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    outcome = await finished_with(fake, provider, Script(media="mp4"))

    assert isinstance(outcome, Completed)
    assert outcome.outputs[0].content_type == "video/mp4"
    assert outcome.outputs[0].data[4:8] == b"ftyp"


async def test_an_inline_data_url_and_a_repeated_url_are_read_once_each(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    image = render_text_to_image("inline", width=16, height=16, output_format="jpeg")
    inline = "data:image/jpeg;base64," + base64.b64encode(image).decode()

    outcome = await finished_with(fake, provider, Script(output=[inline, inline]))

    assert isinstance(outcome, Completed)
    assert [(o.data, o.content_type) for o in outcome.outputs] == [(image, "image/jpeg")]


@pytest.mark.parametrize(
    "script",
    [
        Script(shape="none"),
        Script(output="just some text"),
        Script(output=["no", "urls"]),
        Script(output={"seed": 7}),
    ],
    ids=["null", "text", "texts", "object"],
)
async def test_a_success_without_a_file_url_is_a_provider_error(
    fake: FakeReplicate, provider: ReplicateProvider, script: Script
) -> None:
    outcome = await finished_with(fake, provider, script)

    assert "without a file URL" in failed(outcome, "provider_error").message


async def test_an_unreadable_data_url_is_a_provider_error(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    outcome = await finished_with(fake, provider, Script(output="data:image/png;base64,!!!"))

    failed(outcome, "provider_error")


async def test_a_result_that_is_no_image_or_video_is_a_provider_error(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    # Served as image/png: the bytes decide, not the header.
    outcome = await finished_with(fake, provider, Script(file_bytes=b"<html>sign in</html>"))

    assert "no image or video" in failed(outcome, "provider_error").message


async def test_an_expired_result_url_is_polled_again(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        await finished_with(fake, provider, Script(files_stored=False))

    assert "could not be downloaded" in str(caught.value)
    assert "sig=" not in str(caught.value)  # signed URLs are secrets
    assert caught.value.ambiguous is False


async def test_a_result_url_refused_by_the_policy_fails_the_task(
    fake: FakeReplicate, http: httpx.AsyncClient
) -> None:
    provider = provider_for(fake.base_url, http, fetch_policy=UrlPolicy())

    outcome = await finished_with(fake, provider, Script())

    assert "loopback" in failed(outcome, "provider_error").message


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NSFW_ERROR, "content_policy"),
        ("All generated images contained NSFW content. Try a different prompt.", "content_policy"),
        ("Input flagged by the safety checker", "content_policy"),
        ("The input or output was flagged as sensitive. Please try again (E005)", "content_policy"),
        ("CUDA out of memory", "provider_error"),
        ("Prediction interrupted; please retry (code: PA)", "provider_error"),
    ],
)
async def test_a_failed_prediction_maps_its_error(
    fake: FakeReplicate, provider: ReplicateProvider, error: str, code: str
) -> None:
    outcome = await finished_with(fake, provider, Script(outcome="failed", error=error))

    assert error[:40] in failed(outcome, code).message


@pytest.mark.parametrize(
    ("status", "code"), [("canceled", "canceled"), ("aborted", "provider_error")]
)
async def test_canceled_and_aborted_predictions(
    fake: FakeReplicate, provider: ReplicateProvider, status: str, code: str
) -> None:
    failed(await finished_with(fake, provider, Script(outcome=status)), code)


@pytest.mark.parametrize(
    "body",
    [
        b"<html>bad gateway</html>",
        b"[1, 2]",
        b'{"id": "abc"}',
        b'{"id": "abc", "status": "paused"}',
    ],
)
async def test_a_malformed_poll_answer_is_a_provider_error(
    fake: FakeReplicate, provider: ReplicateProvider, body: bytes
) -> None:
    job = image_job()
    pending = await submitted(provider, job)
    fake.fail_next(Canned(200, body, method="GET"))

    failed(await provider.poll(job, pending.upstream_id), "provider_error")


async def test_an_unknown_prediction_is_a_provider_error_not_the_channels(
    provider: ReplicateProvider,
) -> None:
    outcome = failed(await provider.poll(image_job(), "never-created"), "provider_error")

    assert outcome.details == {"status": 404}


# --- HTTP failures --------------------------------------------------------------------


async def test_a_wrong_token_is_the_channels_fault(
    fake: FakeReplicate, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "r8_wrong_token_31415926"
    provider = provider_for(fake.base_url, http, key=wrong)
    caplog.set_level(logging.DEBUG)

    on_submit = await provider.submit(image_job(), report=no_progress)
    on_poll = await provider.poll(image_job(), "any-prediction")

    for outcome in (on_submit, on_poll):
        assert failed(outcome, "provider_error").details == {"channel_fault": "auth", "status": 401}
        assert wrong not in repr(outcome)
    assert fake.predictions == {}
    assert "refused the token" in caplog.text
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    assert wrong not in caplog.text


async def test_a_forbidden_answer_is_the_channels_fault(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    fake.fail_next(Canned(403, problem_body(403, "Forbidden"), method="POST"))

    outcome = await provider.submit(image_job(), report=no_progress)

    assert failed(outcome, "provider_error").details == {"channel_fault": "auth", "status": 403}


async def test_no_credit_left_is_a_quota_fault_of_the_channel(
    fake: FakeReplicate, provider: ReplicateProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    detail = "You have insufficient credit to run this model."
    fake.fail_next(Canned(402, problem_body(402, "Insufficient credit", detail), method="POST"))

    outcome = failed(await provider.submit(image_job(), report=no_progress), "provider_error")

    assert outcome.details == {"channel_fault": "quota", "status": 402}
    assert "operator's side" in outcome.message
    assert "no credit left" in caplog.text


async def test_an_unknown_model_is_the_operators_mapping_fault(
    fake: FakeReplicate, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    provider = provider_for(fake.base_url, http, model="someone/no-such-model")

    outcome = failed(await provider.submit(image_job(), report=no_progress), "provider_error")

    assert outcome.details == {"channel_fault": "config", "status": 404}
    assert "someone/no-such-model" in caplog.text


async def test_an_unknown_version_is_the_operators_mapping_fault(
    fake: FakeReplicate, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    provider = provider_for(fake.base_url, http, model="ab" * 32)

    outcome = failed(await provider.submit(image_job(), report=no_progress), "provider_error")

    # Replicate answers 422 here, like a refused input: it must not count as the caller's.
    assert outcome.details == {"channel_fault": "config", "status": 422}
    assert "fix the channel's upstream model name" in caplog.text


async def test_an_input_the_model_refuses_is_invalid_input(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    job = ProviderJob("task-3", "flux-schnell", "Text to image", "image", {"seed": 3}, 1)

    outcome = failed(await provider.submit(job, report=no_progress), "invalid_input")

    assert "prompt is required" in outcome.message
    assert outcome.details == {"status": 422, "invalid_fields": ["input.prompt"]}
    assert fake.predictions == {}


async def test_an_input_refused_for_safety_is_content_policy(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    detail = "Your input image may contain NSFW content"
    fake.fail_next(Canned(422, problem_body(422, "Input rejected", detail), method="POST"))

    outcome = await provider.submit(image_job(), report=no_progress)

    assert detail in failed(outcome, "content_policy").message


async def test_another_client_error_is_a_provider_error(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    fake.fail_next(Canned(400, problem_body(400, "Bad request", "webhook is not a URL")))

    outcome = failed(await provider.submit(image_job(), report=no_progress), "provider_error")

    assert "webhook is not a URL" in outcome.message
    assert outcome.details == {"status": 400}


async def test_429_is_retryable_with_its_retry_after(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    throttled = problem_body(429, "Request was throttled.", "Your rate limit resets in ~7s.")
    fake.fail_next(Canned(429, throttled, {"Retry-After": "7"}))

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.submit(image_job(), report=no_progress)

    assert caught.value.retry_after_s == 7
    assert caught.value.ambiguous is False
    assert fake.predictions == {}


@pytest.mark.parametrize(
    ("status", "ambiguous"), [(500, False), (502, False), (503, False), (504, True), (524, True)]
)
async def test_5xx_on_submit_is_retryable_and_a_gateway_timeout_ambiguous(
    fake: FakeReplicate, provider: ReplicateProvider, status: int, ambiguous: bool
) -> None:
    fake.fail_next(Canned(status, b"oops", method="POST"))

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.submit(image_job(), report=no_progress)

    assert caught.value.ambiguous is ambiguous
    assert caught.value.retry_after_s is None


async def test_5xx_on_poll_is_retryable_and_never_ambiguous(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    job = image_job()
    pending = await submitted(provider, job)
    fake.fail_next(
        Canned(504, b"", method="GET"), Canned(503, b"", {"Retry-After": "2"}, method="GET")
    )

    for retry_after_s in (None, 2):
        with pytest.raises(ProviderUnavailable) as caught:
            await provider.poll(job, pending.upstream_id)
        assert caught.value.ambiguous is False
        assert caught.value.retry_after_s == retry_after_s
    assert isinstance(await provider.poll(job, pending.upstream_id), Pending)


@pytest.mark.parametrize("body", [b"not json at all", b'{"status": "starting"}', b'"abc"'])
async def test_a_malformed_create_answer_is_a_provider_error(
    fake: FakeReplicate, provider: ReplicateProvider, body: bytes
) -> None:
    fake.fail_next(Canned(201, body, method="POST"))

    failed(await provider.submit(image_job(), report=no_progress), "provider_error")


async def test_a_create_answer_with_an_id_and_an_odd_status_is_left_to_the_polls(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    fake.fail_next(Canned(201, b'{"id": "abc123", "status": "queued"}', method="POST"))

    pending = await submitted(provider, image_job())

    assert pending.upstream_id == "abc123"


async def test_a_hanging_submit_is_ambiguous_and_a_hanging_poll_is_not(
    fake: FakeReplicate, http: httpx.AsyncClient
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
    assert on_poll.value.ambiguous is False


async def test_a_dropped_connection_is_ambiguous_on_submit_only(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    job = video_job()
    pending = await submitted(provider, job)
    fake.fail_next(Canned(drop=True, method="POST"), Canned(drop=True, method="GET"))

    with pytest.raises(ProviderUnavailable) as on_submit:
        await provider.submit(job, report=no_progress)
    with pytest.raises(ProviderUnavailable) as on_poll:
        await provider.poll(job, pending.upstream_id)

    assert on_submit.value.ambiguous is True
    assert "after the request was sent" in str(on_submit.value)
    assert on_poll.value.ambiguous is False


async def test_nothing_listening_is_retryable_and_not_ambiguous(http: httpx.AsyncClient) -> None:
    provider = provider_for(f"http://127.0.0.1:{free_port()}", http)

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.submit(image_job(), report=no_progress)

    assert caught.value.ambiguous is False


# --- the webhook ----------------------------------------------------------------------


async def test_the_end_of_a_prediction_calls_the_webhook_signed_and_the_poll_decides(
    fake: FakeReplicate, http: httpx.AsyncClient
) -> None:
    fake.script = Script(finish_after_s=0.2, starting_polls=100, media="mp4")
    with receiving() as receiver:
        callback = f"{receiver.url}/api/v1/upstream/replicate-main/callback"
        provider = provider_for(fake.base_url, http, callback_url=callback)
        job = video_job()
        pending = await submitted(provider, job)

        async def delivered() -> bool:
            return bool(fake.webhooks)

        await eventually(delivered, within_s=10, what="the webhook")

    (call,) = receiver.received
    assert call.path == "/api/v1/upstream/replicate-main/callback"
    body = Webhook(WEBHOOK_SECRET).verify(call.body, call.headers)
    assert body["id"] == pending.upstream_id
    assert body["status"] == "succeeded"
    assert fake.webhooks[0].status == 200
    outcome = await provider.poll(job, pending.upstream_id)
    assert isinstance(outcome, Completed)
    assert outcome.outputs[0].content_type == "video/mp4"


# --- cancel ---------------------------------------------------------------------------


async def test_cancel_of_a_running_prediction_cancels_it(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    fake.script = Script(starting_polls=5)
    job = image_job()
    pending = await submitted(provider, job)

    assert await provider.cancel(pending.upstream_id) is True

    (request,) = fake.on("POST", f"/v1/predictions/{pending.upstream_id}")
    assert request.path == f"/v1/predictions/{pending.upstream_id}/cancel"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    failed(await provider.poll(job, pending.upstream_id), "canceled")


async def test_cancel_of_a_finished_or_unknown_prediction_answers_false(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    job = image_job()
    pending = await submitted(provider, job)
    assert isinstance(await poll_to_end(provider, job, pending.upstream_id), Completed)

    assert await provider.cancel(pending.upstream_id) is False
    assert await provider.cancel("never-created") is False
    assert fake.predictions[pending.upstream_id].status == "succeeded"


async def test_cancel_during_an_outage_raises_retryable(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    fake.fail_next(Canned(503, b"", {"Retry-After": "3"}, method="POST"))

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.cancel("abc")

    assert caught.value.retry_after_s == 3


async def test_cancel_with_a_refused_token_answers_false_and_logs(
    fake: FakeReplicate, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    provider = provider_for(fake.base_url, http, key="r8_wrong")

    assert await provider.cancel("abc") is False
    assert "refused the token" in caplog.text


async def test_an_id_with_path_characters_stays_one_segment(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    await provider.poll(image_job(), "../../files/x")

    (request,) = fake.on("GET")
    assert request.path == "/v1/predictions/..%2F..%2Ffiles%2Fx"


# --- the token ------------------------------------------------------------------------


async def test_the_token_never_appears_in_an_outcome_or_a_log(
    fake: FakeReplicate, provider: ReplicateProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    leaky = f"request by {KEY} refused"
    fake.fail_next(
        Canned(422, problem_body(422, "Input validation failed", leaky), method="POST"),
        Canned(422, problem_body(422, "Input rejected", "NSFW: " + leaky), method="POST"),
        Canned(402, problem_body(402, "Insufficient credit", leaky), method="POST"),
        Canned(400, problem_body(400, "Bad request", leaky), method="POST"),
        Canned(500, problem_body(500, "Internal", leaky), method="POST"),
    )
    seen: list[str] = []
    for _ in range(5):
        try:
            seen.append(repr(await provider.submit(image_job(), report=no_progress)))
        except ProviderUnavailable as exc:
            seen.append(repr(exc))
    failure = await finished_with(fake, provider, Script(outcome="failed", error=leaky))
    seen.append(repr(failure))

    assert "invalid_input" in seen[0] and "content_policy" in seen[1]
    assert "request by *** refused" in seen[0]
    for text in [*seen, caplog.text]:
        assert KEY not in text
