"""The fal queue adapter against a fake fal queue on loopback."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

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
from app.providers.fal import FalProvider, app_id, media_files
from app.providers.local_render import probe_media, render_text_to_image
from tests.fakes.fal import Canned, FakeFal, Script, detail_body, running_fal
from tests.providers import support
from tests.providers.support import no_progress
from tests.support.apps import eventually
from tests.support.receiver import receiving
from tests.support.server import free_port

KEY = "fal-key-id-7f3c9a1e:5b2d8c4f6a0e1d3b"
MODEL = "fal-ai/flux/dev"
LOOPBACK = UrlPolicy(allow_private=True, timeout_s=5.0)


@pytest.fixture
def fake() -> Iterator[FakeFal]:
    with running_fal(KEY) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
        yield client


def provider_for(
    base_url: str, http: httpx.AsyncClient, *, key: str = KEY, **options: Any
) -> FalProvider:
    values: dict[str, Any] = {
        "fetch_policy": LOOPBACK,
        "request_timeout_s": 5.0,
        "upstream_model": MODEL,
        **options,
    }
    return FalProvider(base_url=base_url, api_key=key, http=http, **values)


@pytest.fixture
def provider(fake: FakeFal, http: httpx.AsyncClient) -> FalProvider:
    return provider_for(fake.base_url, http)


def image_job(polls: int = 0, **params: Any) -> ProviderJob:
    return ProviderJob(
        task_id="task-1",
        model_id="flux-dev",
        scene="Text to image",
        media_type="image",
        input={"prompt": "a red kite over the sea", **params},
        attempt=1,
        polls=polls,
    )


async def submitted(provider: FalProvider, job: ProviderJob | None = None) -> Pending:
    return await support.submitted(provider, job or image_job())


async def poll_to_end(provider: FalProvider, upstream_id: str) -> Outcome:
    return await support.poll_to_end(provider, image_job(), upstream_id)


async def finished_with(fake: FakeFal, provider: FalProvider, script: Script) -> Outcome:
    fake.script = script
    pending = await submitted(provider)
    return await poll_to_end(provider, pending.upstream_id)


def failed(outcome: Outcome, code: str) -> Failed:
    assert isinstance(outcome, Failed), outcome
    assert outcome.code == code, outcome
    return outcome


def test_the_adapter_is_a_provider(provider: FalProvider) -> None:
    as_protocol: Provider = provider
    assert as_protocol.name == "fal"
    assert as_protocol.idempotent_submit is False


def test_a_fal_channel_cannot_claim_idempotent_submits(http: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError, match="idempotency"):
        provider_for("https://queue.fal.run", http, idempotent_submit=True)


@pytest.mark.parametrize(
    ("model", "app"),
    [
        ("fal-ai/flux/dev", "fal-ai/flux"),
        ("fal-ai/flux-pro/v1.1-ultra/redux", "fal-ai/flux-pro"),
        ("fal-ai/fast-sdxl", "fal-ai/fast-sdxl"),
        ("/me/my-app/", "me/my-app"),
        ("workflows/me/my-flow/run", "workflows/me/my-flow"),
    ],
)
def test_the_app_id_is_the_owner_and_the_app(model: str, app: str) -> None:
    assert app_id(model) == app


@pytest.mark.parametrize("model", ["flux", "", "workflows/me"])
def test_a_model_without_an_app_is_refused(http: httpx.AsyncClient, model: str) -> None:
    with pytest.raises(ValueError, match="owner and an app"):
        provider_for("https://queue.fal.run", http, upstream_model=model)


# --- submit ---------------------------------------------------------------------------


async def test_submit_queues_the_input_and_reports_the_queue_position(
    fake: FakeFal, provider: FalProvider
) -> None:
    fake.script = Script(queued_polls=3)
    job = image_job(image_size="landscape_4_3", seed=None, num_images=2)

    pending = await submitted(provider, job)

    assert pending.upstream_id in fake.queue
    assert pending.queue_position == 3
    assert pending.progress == 0
    (request,) = fake.on("submit")
    assert request.path == "/fal-ai/flux/dev"
    assert request.headers["authorization"] == f"Key {KEY}"
    # The input is the body as it stands, without the keys the caller left null.
    assert request.json() == {
        "prompt": "a red kite over the sea",
        "image_size": "landscape_4_3",
        "num_images": 2,
    }
    assert "fal_webhook" not in request.query


async def test_submit_names_the_callback_as_the_webhook(
    fake: FakeFal, http: httpx.AsyncClient
) -> None:
    callback = "https://gate.example/api/v1/upstream/fal-main/callback?x=1"
    provider = provider_for(fake.base_url, http, callback_url=callback)

    await submitted(provider)

    (request,) = fake.on("submit")
    assert request.query["fal_webhook"] == callback


async def test_a_status_url_for_another_app_is_logged(
    fake: FakeFal, provider: FalProvider, caplog: pytest.LogCaptureFixture
) -> None:
    answer = {"request_id": "r-1", "status_url": "https://q.example/x/y/requests/r-1/status"}
    fake.fail_next(*[Canned(200, json.dumps(answer).encode(), on="submit")] * 2)

    pending = await submitted(provider)
    await submitted(provider)

    assert pending.upstream_id == "r-1"
    assert pending.queue_position is None
    assert caplog.text.count("status URL other than .../fal-ai/flux/requests/r-1/status") == 1


async def test_a_status_url_through_a_proxy_path_is_not_logged(
    fake: FakeFal, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    provider = provider_for(fake.base_url + "/", http)
    answer = {
        "request_id": "r-1",
        "status_url": "https://p.example/fal/fal-ai/flux/requests/r-1/status",
    }
    fake.fail_next(Canned(200, json.dumps(answer).encode(), on="submit"))

    await submitted(provider)
    await submitted(provider)  # a real one from the fake

    assert "status URL" not in caplog.text
    assert all(r.path == "/fal-ai/flux/dev" for r in fake.on("submit"))


@pytest.mark.parametrize("body", [b"not json at all", b'{"status": "IN_QUEUE"}', b'"r-1"'])
async def test_a_malformed_submit_answer_is_a_provider_error(
    fake: FakeFal, provider: FalProvider, body: bytes
) -> None:
    fake.fail_next(Canned(200, body, on="submit"))

    failed(await provider.submit(image_job(), report=no_progress), "provider_error")


async def test_a_refused_submit_maps_its_detail(fake: FakeFal, provider: FalProvider) -> None:
    detail = [{"loc": ["body", "num_images"], "msg": "must be at most 4", "type": "less_equal"}]
    flagged = [{"loc": ["body", "prompt"], "msg": "flagged", "type": "content_policy_violation"}]
    fake.fail_next(
        Canned(422, detail_body(detail), on="submit"),
        Canned(422, detail_body(flagged), on="submit"),
        Canned(400, detail_body("prompt is required"), on="submit"),
    )

    invalid = failed(await provider.submit(image_job(), report=no_progress), "invalid_input")
    policy = failed(await provider.submit(image_job(), report=no_progress), "content_policy")
    bad = failed(await provider.submit(image_job(), report=no_progress), "invalid_input")

    assert "num_images: must be at most 4" in invalid.message
    assert invalid.details == {"status": 422, "upstream_types": ["less_equal"]}
    assert "prompt: flagged" in policy.message
    assert "prompt is required" in bad.message
    assert fake.queue == {}


@pytest.mark.parametrize(
    ("status", "body"),
    [(404, detail_body("Application 'nope' not found")), (422, b"{}"), (409, b"")],
)
async def test_other_refusals_are_provider_errors(
    fake: FakeFal, provider: FalProvider, status: int, body: bytes
) -> None:
    fake.fail_next(Canned(status, body, on="submit"))

    outcome = failed(await provider.submit(image_job(), report=no_progress), "provider_error")

    assert outcome.details == {"status": status}


# --- polling --------------------------------------------------------------------------


async def test_polls_down_the_queue_and_through_the_run_to_copied_images(
    fake: FakeFal, provider: FalProvider, http: httpx.AsyncClient
) -> None:
    fake.script = Script(queued_polls=3, running_polls=2, images=2, inference_time=2.5)
    pending = await submitted(provider)
    assert pending.queue_position == 3

    seen = [await provider.poll(image_job(), pending.upstream_id) for _ in range(5)]
    assert all(isinstance(o, Pending) for o in seen)
    assert [(o.queue_position, o.progress) for o in seen if isinstance(o, Pending)] == [
        (2, 0),
        (1, 0),
        (0, 0),
        (None, 50),
        (None, 50),
    ]

    outcome = await provider.poll(image_job(), pending.upstream_id)
    assert isinstance(outcome, Completed)
    assert [o.data for o in outcome.outputs] == [
        fake.files[f"{pending.upstream_id}/0.png"][0],
        fake.files[f"{pending.upstream_id}/1.png"][0],
    ]
    assert [o.content_type for o in outcome.outputs] == ["image/png", "image/png"]
    assert outcome.cost == {"unit": "seconds", "inference_time": 2.5}
    # Status and result use the app id, not the endpoint path (the fake 404s on that).
    assert {r.path for r in fake.on("status")} == {
        f"/fal-ai/flux/requests/{pending.upstream_id}/status"
    }
    assert all(r.query == {"logs": "1"} for r in fake.on("status"))
    (result,) = fake.on("result")
    assert result.path == f"/fal-ai/flux/requests/{pending.upstream_id}"
    api_calls = [*fake.on("submit"), *fake.on("status"), *fake.on("result")]
    assert all(r.headers["authorization"] == f"Key {KEY}" for r in api_calls)
    downloads = fake.on("file")
    assert len(downloads) == 2
    assert all("authorization" not in r.headers for r in downloads)  # the key stays home
    # The upstream files expiring afterwards loses nothing: the bytes were copied at once.
    fake.expire_files(pending.upstream_id)
    gone = await http.get(f"{fake.base_url}/files/{pending.upstream_id}/0.png")
    assert gone.status_code == 404


async def test_progress_follows_the_percentage_the_model_logs(
    fake: FakeFal, provider: FalProvider
) -> None:
    fake.script = Script(queued_polls=0, running_polls=2, log_percent=46)
    pending = await submitted(provider)

    outcome = await provider.poll(image_job(), pending.upstream_id)

    assert isinstance(outcome, Pending)
    assert outcome.progress == 46
    assert outcome.queue_position is None


@pytest.mark.parametrize(("polls", "after_s"), [(0, 2.0), (1, 3.0), (2, 4.5), (9, 30.0)])
async def test_polls_back_off_with_the_poll_count_up_to_a_cap(
    fake: FakeFal, provider: FalProvider, polls: int, after_s: float
) -> None:
    fake.script = Script(queued_polls=5)
    pending = await submitted(provider)
    assert pending.poll_after_s == 2.0

    outcome = await provider.poll(image_job(polls=polls), pending.upstream_id)

    assert isinstance(outcome, Pending)
    assert outcome.poll_after_s == pytest.approx(after_s)


async def test_a_huge_poll_count_stays_at_the_cap(fake: FakeFal, provider: FalProvider) -> None:
    pending = await submitted(provider)

    outcome = await provider.poll(image_job(polls=100_000), pending.upstream_id)

    assert isinstance(outcome, Pending)
    assert outcome.poll_after_s == 30.0


async def test_a_video_result_is_copied(fake: FakeFal, provider: FalProvider) -> None:
    fake.script = Script(kind="video", inference_time=None)
    pending = await submitted(provider)

    outcome = await poll_to_end(provider, pending.upstream_id)

    assert isinstance(outcome, Completed)
    (output,) = outcome.outputs
    assert output.content_type == "video/mp4"
    assert output.data == fake.files[f"{pending.upstream_id}/0.mp4"][0]
    info = probe_media(output.data)
    assert info.duration_s is not None and info.duration_s > 0
    assert outcome.cost is None


async def test_a_result_is_read_for_every_file_whatever_its_shape(
    fake: FakeFal, provider: FalProvider
) -> None:
    png = render_text_to_image("inline", width=32, height=32, output_format="png")
    inline = "data:image/png;base64," + base64.b64encode(png).decode()
    fake.script = Script(images=1, inference_time=None)  # the result's metrics count
    pending = await submitted(provider)
    await poll_to_end(provider, pending.upstream_id)  # makes the fake's files
    stored = f"{fake.base_url}/files/{pending.upstream_id}/0.png"
    output = {
        "image": {"url": stored},  # no content type: probed
        "extra": [{"mask": {"url": inline, "content_type": "image/png"}}],
        "audio": {"url": f"{fake.base_url}/files/none.mp3", "content_type": "audio/mpeg"},
        "again": {"url": stored, "content_type": "image/png"},  # the same file once
        "metrics": {"inference_time": 0.75},
    }
    fake.fail_next(Canned(200, json.dumps(output).encode(), on="result"))

    outcome = await provider.poll(image_job(), pending.upstream_id)

    assert isinstance(outcome, Completed)
    assert [o.data for o in outcome.outputs] == [fake.files[f"{pending.upstream_id}/0.png"][0], png]
    assert outcome.cost == {"unit": "seconds", "inference_time": 0.75}
    assert not any(r.path.endswith(".mp3") for r in fake.on("file"))  # audio is skipped


def test_media_files_are_found_in_document_order() -> None:
    output = {
        "images": [
            {"url": "https://cdn.example/a.png", "content_type": "image/png"},
            {"url": "https://cdn.example/b.jpg"},
        ],
        "video": {"url": "https://cdn.example/c.mp4", "content_type": "video/mp4"},
        "text": {"url": "https://cdn.example/d.txt", "content_type": "text/plain"},
        "links": {"url": "ftp://cdn.example/e.png"},
        "seed": 7,
    }

    assert media_files(output) == [
        ("https://cdn.example/a.png", "image/png"),
        ("https://cdn.example/b.jpg", "unknown"),
        ("https://cdn.example/c.mp4", "video/mp4"),
    ]


async def test_flagged_images_are_dropped_and_the_rest_kept(
    fake: FakeFal, provider: FalProvider
) -> None:
    fake.script = Script(images=3, nsfw=(False, True, False))
    pending = await submitted(provider)

    outcome = await poll_to_end(provider, pending.upstream_id)

    assert isinstance(outcome, Completed)
    files = fake.files
    assert [o.data for o in outcome.outputs] == [
        files[f"{pending.upstream_id}/0.png"][0],
        files[f"{pending.upstream_id}/2.png"][0],
    ]
    assert not any("/1.png" in r.path for r in fake.on("file"))


@pytest.mark.parametrize(
    "script", [Script(images=2, nsfw=(True, True)), Script(outcome="moderated")]
)
async def test_a_result_the_safety_checker_withheld_is_a_content_policy_failure(
    fake: FakeFal, provider: FalProvider, script: Script
) -> None:
    outcome = failed(await finished_with(fake, provider, script), "content_policy")

    assert "moderation" in outcome.message
    assert fake.on("file") == []


async def test_a_result_the_model_refused_for_content_is_a_content_policy_failure(
    fake: FakeFal, provider: FalProvider
) -> None:
    outcome = await finished_with(fake, provider, Script(outcome="content_policy"))

    failed(outcome, "content_policy")
    assert isinstance(outcome, Failed)
    assert "prompt: The content was flagged" in outcome.message
    assert outcome.details["upstream_types"] == ["content_policy_violation"]


async def test_a_result_refused_by_validation_is_invalid_input(
    fake: FakeFal, provider: FalProvider
) -> None:
    outcome = failed(
        await finished_with(fake, provider, Script(outcome="invalid")), "invalid_input"
    )

    assert "image_size: image_size must be one of" in outcome.message
    assert outcome.details == {"status": 422, "upstream_types": ["value_error"]}


@pytest.mark.parametrize(
    ("error_type", "status", "code"),
    [
        ("runner_disconnected", 503, "provider_error"),
        ("runner_scheduling_failure", 503, "provider_error"),
        ("internal_error", 500, "provider_error"),
        ("request_timeout", 504, "provider_timeout"),
        ("startup_timeout", 504, "provider_timeout"),
        ("content_policy_violation", 500, "content_policy"),
    ],
)
async def test_a_request_that_failed_upstream_maps_its_error_type(
    fake: FakeFal, provider: FalProvider, error_type: str, status: int, code: str
) -> None:
    script = Script(outcome="failed", error_type=error_type, error_status=status)

    outcome = failed(await finished_with(fake, provider, script), code)

    assert outcome.details == {"status": status, "upstream_code": error_type}
    assert "The runner failed the request" in outcome.message


async def test_a_result_outage_after_a_clean_status_is_retried(
    fake: FakeFal, provider: FalProvider
) -> None:
    fake.script = Script(queued_polls=0, running_polls=0)
    pending = await submitted(provider)
    fake.fail_next(Canned(503, b"<html>nginx</html>", {"Retry-After": "4"}, on="result"))

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.poll(image_job(), pending.upstream_id)

    assert caught.value.retry_after_s == 4
    assert caught.value.ambiguous is False
    assert isinstance(await provider.poll(image_job(), pending.upstream_id), Completed)


@pytest.mark.parametrize(
    "body",
    [
        b"<html>oops</html>",
        b"[1, 2]",
        b'{"seed": 7, "timings": {}}',
        b'{"images": [{"url": "not a url"}]}',
    ],
)
async def test_a_result_without_a_file_is_a_provider_error(
    fake: FakeFal, provider: FalProvider, body: bytes
) -> None:
    fake.script = Script(queued_polls=0, running_polls=0)
    pending = await submitted(provider)
    fake.fail_next(Canned(200, body, on="result"))

    failed(await provider.poll(image_job(), pending.upstream_id), "provider_error")


async def test_a_result_fal_no_longer_holds_fails_the_task(
    fake: FakeFal, provider: FalProvider
) -> None:
    fake.script = Script(queued_polls=0, running_polls=0)
    pending = await submitted(provider)
    fake.fail_next(Canned(404, detail_body("Request not found"), on="result"))

    outcome = failed(await provider.poll(image_job(), pending.upstream_id), "provider_error")

    assert "no longer holds the result" in outcome.message


async def test_an_unknown_request_id_is_a_provider_error(provider: FalProvider) -> None:
    outcome = failed(await provider.poll(image_job(), "never-queued"), "provider_error")

    assert outcome.details == {"status": 404}


@pytest.mark.parametrize(
    "body",
    [b"<html>bad gateway</html>", b"[1, 2]", b'{"request_id": "r"}', b'{"status": "PAUSED"}'],
)
async def test_a_malformed_status_answer_is_a_provider_error(
    fake: FakeFal, provider: FalProvider, body: bytes
) -> None:
    pending = await submitted(provider)
    fake.fail_next(Canned(200, body, on="status"))

    failed(await provider.poll(image_job(), pending.upstream_id), "provider_error")


async def test_a_file_that_expired_upstream_is_polled_again_until_the_result_is_gone(
    fake: FakeFal, provider: FalProvider
) -> None:
    fake.script = Script(stored=False, queued_polls=0, running_polls=0)
    pending = await submitted(provider)

    # Each poll rereads the result and tries the file again: transient for the worker...
    for _ in range(2):
        with pytest.raises(ProviderUnavailable) as caught:
            await provider.poll(image_job(), pending.upstream_id)
        assert "could not be downloaded" in str(caught.value)
        assert "token=" not in str(caught.value)  # file URLs may carry secrets
    assert len(fake.on("file")) == 2
    # ... until fal drops the result itself (an hour; six minutes for a large one).
    fake.fail_next(Canned(404, detail_body("Request not found"), on="result"))
    failed(await provider.poll(image_job(), pending.upstream_id), "provider_error")


async def test_a_file_refused_by_the_policy_fails_the_task(
    fake: FakeFal, http: httpx.AsyncClient
) -> None:
    provider = provider_for(fake.base_url, http, fetch_policy=UrlPolicy())

    outcome = failed(await finished_with(fake, provider, Script()), "provider_error")

    assert "loopback" in outcome.message
    assert fake.on("file") == []


@pytest.mark.parametrize(
    "script",
    [
        Script(content=b"<html>sign in</html>"),
        Script(kind="video", content=b"<html>sign in</html>"),
        Script(content=b"<html>sign in</html>", content_type=""),
    ],
)
async def test_a_file_that_is_no_image_or_video_fails_the_task(
    fake: FakeFal, provider: FalProvider, script: Script
) -> None:
    outcome = failed(await finished_with(fake, provider, script), "provider_error")

    assert "not an image or video" in outcome.message


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("data:image/png,rawbytes", "not base64"),
        ("data:image/png;base64,@@@@", "not valid base64"),
        ("data:image/png;base64," + "A" * 200, "larger than the size limit"),
    ],
)
async def test_a_bad_inline_file_fails_the_task(
    fake: FakeFal, http: httpx.AsyncClient, url: str, says: str
) -> None:
    provider = provider_for(fake.base_url, http, fetch_policy=UrlPolicy(max_bytes=100))
    fake.script = Script(queued_polls=0, running_polls=0)
    pending = await submitted(provider)
    fake.fail_next(Canned(200, json.dumps({"image": {"url": url}}).encode(), on="result"))

    outcome = failed(await provider.poll(image_job(), pending.upstream_id), "provider_error")

    assert says in outcome.message


async def test_a_namespaced_app_uses_its_three_segment_app_id(
    fake: FakeFal, http: httpx.AsyncClient
) -> None:
    provider = provider_for(fake.base_url, http, upstream_model="workflows/me/my-flow/run")
    fake.script = Script(queued_polls=0, running_polls=0)
    pending = await submitted(provider)

    assert isinstance(await provider.poll(image_job(), pending.upstream_id), Completed)
    (status,) = fake.on("status")
    assert status.path == f"/workflows/me/my-flow/requests/{pending.upstream_id}/status"


async def test_an_id_with_path_characters_stays_one_segment(
    fake: FakeFal, provider: FalProvider
) -> None:
    await provider.poll(image_job(), "../../files/x")

    (request,) = fake.on("status")
    assert request.path == "/fal-ai/flux/requests/..%2F..%2Ffiles%2Fx/status"


# --- the webhook ----------------------------------------------------------------------


async def test_fal_posts_the_webhook_when_the_request_completes(
    fake: FakeFal, http: httpx.AsyncClient
) -> None:
    with receiving() as receiver:
        callback = f"{receiver.url}/api/v1/upstream/fal-main/callback"
        provider = provider_for(fake.base_url, http, callback_url=callback)
        fake.script = Script(run_s=0.05)
        pending = await submitted(provider)

        async def delivered() -> bool:
            return bool(receiver.on("/api/v1/upstream/fal-main/callback"))

        await eventually(delivered, within_s=10, what="fal's webhook")

    (hook,) = receiver.received
    event = json.loads(hook.body)
    assert event["request_id"] == pending.upstream_id
    assert event["status"] == "OK"
    assert event["payload"]["images"][0]["url"].startswith(fake.base_url)
    assert hook.headers["x-fal-webhook-request-id"] == pending.upstream_id
    # The webhook only makes the poll due: the poll decides, with no status walk first.
    outcome = await provider.poll(image_job(), pending.upstream_id)
    assert isinstance(outcome, Completed)
    assert len(fake.on("status")) == 1


# --- HTTP failures --------------------------------------------------------------------


async def test_a_wrong_key_is_the_channels_fault(
    fake: FakeFal, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "fal-wrong-key:31415926"
    provider = provider_for(fake.base_url, http, key=wrong)
    caplog.set_level(logging.DEBUG)

    on_submit = await provider.submit(image_job(), report=no_progress)
    on_poll = await provider.poll(image_job(), "r-anything")

    for outcome in (on_submit, on_poll):
        refused = failed(outcome, "provider_error")
        assert refused.details == {"channel_fault": "auth", "status": 401}
        assert wrong not in repr(refused)
    assert "refused this channel's credential" in caplog.text
    assert wrong not in caplog.text


@pytest.mark.parametrize(
    ("status", "body", "fault"),
    [
        (403, detail_body("User is locked. Reason: Exhausted balance. Top up."), "quota"),
        (402, b"", "quota"),
        (403, detail_body("Forbidden"), "auth"),
    ],
)
async def test_an_exhausted_balance_is_the_channels_quota(
    fake: FakeFal,
    provider: FalProvider,
    caplog: pytest.LogCaptureFixture,
    status: int,
    body: bytes,
    fault: str,
) -> None:
    fake.fail_next(Canned(status, body, on="submit"))

    outcome = failed(await provider.submit(image_job(), report=no_progress), "provider_error")

    assert outcome.details == {"channel_fault": fault, "status": status}
    assert ("has no balance left" in caplog.text) is (fault == "quota")


async def test_429_is_retryable_with_its_retry_after(fake: FakeFal, provider: FalProvider) -> None:
    fake.fail_next(Canned(429, detail_body("Too many concurrent requests"), {"Retry-After": "7"}))

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.submit(image_job(), report=no_progress)

    assert caught.value.retry_after_s == 7
    assert caught.value.ambiguous is False
    assert fake.queue == {}


@pytest.mark.parametrize(
    ("status", "ambiguous"), [(500, False), (502, False), (503, False), (504, True), (524, True)]
)
async def test_5xx_on_submit_is_retryable_and_a_gateway_timeout_ambiguous(
    fake: FakeFal, provider: FalProvider, status: int, ambiguous: bool
) -> None:
    fake.fail_next(Canned(status, b"oops", on="submit"))

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.submit(image_job(), report=no_progress)

    assert caught.value.ambiguous is ambiguous
    assert ("may still run the job" in str(caught.value)) is ambiguous


async def test_5xx_on_poll_is_retryable_and_never_ambiguous(
    fake: FakeFal, provider: FalProvider
) -> None:
    pending = await submitted(provider)
    fake.fail_next(Canned(504, b"", on="status"), Canned(500, b"", on="status"))

    for _ in range(2):
        with pytest.raises(ProviderUnavailable) as caught:
            await provider.poll(image_job(), pending.upstream_id)
        assert caught.value.ambiguous is False
    assert isinstance(await provider.poll(image_job(), pending.upstream_id), Pending)


async def test_a_hanging_submit_is_ambiguous_and_a_hanging_poll_is_not(
    fake: FakeFal, http: httpx.AsyncClient
) -> None:
    provider = provider_for(fake.base_url, http, request_timeout_s=0.3)
    pending = await submitted(provider)
    # The upstream takes the second request, then the answer never comes.
    fake.fail_next(Canned(hang=True, on="submit", create=True), Canned(hang=True, on="status"))

    with pytest.raises(ProviderUnavailable) as on_submit:
        await provider.submit(image_job(), report=no_progress)
    with pytest.raises(ProviderUnavailable) as on_poll:
        await provider.poll(image_job(), pending.upstream_id)

    assert on_submit.value.ambiguous is True
    assert "may still run the job" in str(on_submit.value)
    assert len(fake.queue) == 2  # which is why the job must not go to another channel
    assert on_poll.value.ambiguous is False


async def test_a_connection_dropped_after_the_submit_was_sent_is_ambiguous(
    fake: FakeFal, provider: FalProvider
) -> None:
    pending = await submitted(provider)
    fake.fail_next(Canned(reset=True, on="submit", create=True), Canned(reset=True, on="status"))

    with pytest.raises(ProviderUnavailable) as on_submit:
        await provider.submit(image_job(), report=no_progress)
    with pytest.raises(ProviderUnavailable) as on_poll:
        await provider.poll(image_job(), pending.upstream_id)

    assert on_submit.value.ambiguous is True
    assert "after the request was sent" in str(on_submit.value)
    assert on_poll.value.ambiguous is False


async def test_nothing_listening_is_retryable_and_not_ambiguous(http: httpx.AsyncClient) -> None:
    provider = provider_for(f"http://127.0.0.1:{free_port()}", http)

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.submit(image_job(), report=no_progress)

    assert caught.value.ambiguous is False


# --- cancel ---------------------------------------------------------------------------


async def test_cancel_of_a_queued_request_removes_it(fake: FakeFal, provider: FalProvider) -> None:
    fake.script = Script(queued_polls=5)
    pending = await submitted(provider)

    assert await provider.cancel(pending.upstream_id) is True

    (request,) = fake.on("cancel")
    assert request.method == "PUT"
    assert request.path == f"/fal-ai/flux/requests/{pending.upstream_id}/cancel"
    assert request.headers["authorization"] == f"Key {KEY}"
    assert pending.upstream_id not in fake.queue
    failed(await provider.poll(image_job(), pending.upstream_id), "provider_error")


async def test_cancel_of_a_running_request_is_accepted_but_it_may_finish(
    fake: FakeFal, provider: FalProvider
) -> None:
    fake.script = Script(queued_polls=0, running_polls=2)
    pending = await submitted(provider)
    assert isinstance(await provider.poll(image_job(), pending.upstream_id), Pending)

    assert await provider.cancel(pending.upstream_id) is True

    assert fake.queue[pending.upstream_id].cancel_requested is True
    assert isinstance(await poll_to_end(provider, pending.upstream_id), Completed)


async def test_cancel_of_a_finished_or_unknown_request_is_refused_quietly(
    fake: FakeFal, provider: FalProvider
) -> None:
    fake.script = Script(queued_polls=0, running_polls=0)
    pending = await submitted(provider)
    assert isinstance(await provider.poll(image_job(), pending.upstream_id), Completed)

    assert await provider.cancel(pending.upstream_id) is False
    assert await provider.cancel("never-queued") is False
    assert [r.path.rsplit("/", 2)[-2] for r in fake.on("cancel")] == [
        pending.upstream_id,
        "never-queued",
    ]


async def test_cancel_with_a_refused_key_is_logged_and_refused(
    fake: FakeFal, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    provider = provider_for(fake.base_url, http, key="fal-wrong:key")

    assert await provider.cancel("r-1") is False
    assert "refused this channel's credential" in caplog.text


async def test_cancel_during_an_outage_raises_retryable(
    fake: FakeFal, provider: FalProvider
) -> None:
    fake.fail_next(Canned(503, b"", {"Retry-After": "3"}, on="cancel"))

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.cancel("r-1")

    assert caught.value.retry_after_s == 3
    assert caught.value.ambiguous is False


# --- the key --------------------------------------------------------------------------


async def test_the_key_never_appears_in_an_outcome_or_a_log(
    fake: FakeFal, provider: FalProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    leaky = f"request by {KEY} refused"
    fake.fail_next(
        Canned(422, detail_body([{"loc": ["body", "prompt"], "msg": leaky}]), on="submit"),
        Canned(400, detail_body(leaky), on="submit"),
        Canned(403, detail_body(leaky), on="submit"),
        Canned(500, detail_body(leaky), on="submit"),
    )
    seen: list[str] = []
    for _ in range(4):
        try:
            seen.append(repr(await provider.submit(image_job(), report=no_progress)))
        except ProviderUnavailable as exc:
            seen.append(repr(exc))
    fake.script = Script(queued_polls=0, running_polls=0, outcome="failed")
    pending = await submitted(provider)
    fake.fail_next(Canned(503, detail_body(leaky), on="result"))
    seen.append(repr(await provider.poll(image_job(), pending.upstream_id)))

    assert "invalid_input" in seen[0] and "request by *** refused" in seen[0]
    assert "request by *** refused" in seen[4]
    for text in [*seen, caplog.text]:
        assert KEY not in text
