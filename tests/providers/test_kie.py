"""The kie-style jobs API adapter against a fake kie on loopback.

The error answers here are the ones gengate itself never sends (402, 455, 501, 505, kie's
HTTP 200 with the error in the body, hangs, dropped connections); the adapter against a real
second gengate is in test_kie_gengate.py.
"""

from __future__ import annotations

import dataclasses
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
from app.providers.kie import KieProvider
from app.providers.local_render import probe_media
from tests.fakes.kie import Canned, FakeKie, Script, envelope, running_kie
from tests.providers.support import no_progress, poll_to_end, submitted
from tests.support.receiver import receiving
from tests.support.server import free_port, wait_until

KEY = "kie-secret-key-4b8e2d6f0a"
MODEL = "gpt-image-2"
LOOPBACK = UrlPolicy(allow_private=True, timeout_s=5.0)


@pytest.fixture
def fake() -> Iterator[FakeKie]:
    with running_kie(KEY) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
        yield client


def provider_for(
    base_url: str, http: httpx.AsyncClient, *, key: str = KEY, **options: Any
) -> KieProvider:
    values: dict[str, Any] = {"fetch_policy": LOOPBACK, "request_timeout_s": 5.0, **options}
    return KieProvider(base_url=base_url, api_key=key, upstream_model=MODEL, http=http, **values)


@pytest.fixture
def provider(fake: FakeKie, http: httpx.AsyncClient) -> KieProvider:
    return provider_for(fake.base_url, http)


def image_job(task_id: str = "task_0193a0b1c2d3e4f5a6b7c8d9", **params: Any) -> ProviderJob:
    return ProviderJob(
        task_id=task_id,
        model_id="gpt-image-2-text-to-image",
        scene="Text to image",
        media_type="image",
        input={"prompt": "a lighthouse at dusk", "aspect_ratio": "1:1", **params},
        attempt=1,
    )


async def finished_with(fake: FakeKie, provider: KieProvider, script: Script) -> Outcome:
    fake.script = script
    job = image_job()
    pending = await submitted(provider, job)
    return await poll_to_end(provider, job, pending.upstream_id)


def test_it_is_a_provider(provider: KieProvider) -> None:
    typed: Provider = provider
    assert typed.name == "kie"
    assert typed.idempotent_submit is False  # kie ignores X-Request-Id unless told otherwise


# --- submit ---------------------------------------------------------------------------


async def test_submit_sends_the_model_input_callback_and_our_task_id(
    fake: FakeKie, http: httpx.AsyncClient
) -> None:
    provider = provider_for(fake.base_url, http, callback_url="https://gw.example/cb/kie-a")
    reported: list[int] = []

    async def report(progress: int) -> None:
        reported.append(progress)

    job = image_job(resolution="1K")
    outcome = await provider.submit(job, report=report)

    assert isinstance(outcome, Pending)
    assert outcome.upstream_id in fake.tasks
    assert reported == [5]
    (request,) = fake.on("createTask")
    assert request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["x-request-id"] == job.task_id
    assert request.json() == {
        "model": MODEL,
        "input": {"prompt": "a lighthouse at dusk", "aspect_ratio": "1:1", "resolution": "1K"},
        "callBackUrl": "https://gw.example/cb/kie-a",
    }


async def test_without_a_callback_url_none_is_sent(fake: FakeKie, provider: KieProvider) -> None:
    await submitted(provider, image_job())
    assert "callBackUrl" not in fake.on("createTask")[0].json()


@pytest.mark.parametrize("suffix", ["", "/", "/api/v1", "/api/v1/jobs/"])
async def test_the_base_url_may_name_the_api(
    fake: FakeKie, http: httpx.AsyncClient, suffix: str
) -> None:
    provider = provider_for(fake.base_url + suffix, http)
    await submitted(provider, image_job())
    assert fake.on("createTask")[0].path == "/api/v1/jobs/createTask"


async def test_an_upstream_that_dedupes_returns_the_same_task_for_a_resubmission(
    http: httpx.AsyncClient,
) -> None:
    with running_kie(KEY, dedupes=True) as fake:
        provider = provider_for(fake.base_url, http, idempotent_submit=True)
        assert provider.idempotent_submit is True
        first = await submitted(provider, image_job("task_a"))
        again = await submitted(provider, image_job("task_a"))
        other = await submitted(provider, image_job("task_b"))

    assert again.upstream_id == first.upstream_id
    assert other.upstream_id != first.upstream_id
    assert len(fake.tasks) == 2


async def test_an_upstream_that_ignores_the_header_runs_it_twice(
    fake: FakeKie, provider: KieProvider
) -> None:
    """Why `idempotent_submit` is the operator's declaration and not assumed."""
    first = await submitted(provider, image_job("task_a"))
    again = await submitted(provider, image_job("task_a"))
    assert again.upstream_id != first.upstream_id


# --- polling --------------------------------------------------------------------------


async def test_polls_through_the_waiting_states_to_a_copied_image(
    fake: FakeKie, provider: KieProvider, http: httpx.AsyncClient
) -> None:
    fake.script = Script(
        waiting_polls=2, queuing_polls=1, generating_polls=2, queue_position=3, progress=40
    )
    job = image_job()
    pending = await submitted(provider, job)

    seen = [await provider.poll(job, pending.upstream_id) for _ in range(5)]
    assert all(isinstance(o, Pending) for o in seen)
    pendings = [o for o in seen if isinstance(o, Pending)]
    assert [o.queue_position for o in pendings] == [2, 2, None, None, None]  # 1-based there
    assert [o.progress for o in pendings] == [0, 0, 0, 40, 40]
    assert {o.upstream_id for o in pendings} == {pending.upstream_id}

    outcome = await provider.poll(job, pending.upstream_id)
    assert isinstance(outcome, Completed)
    (output,) = outcome.outputs
    assert output.content_type == "image/png"
    assert output.data == fake.files[f"{pending.upstream_id}-0"][0]
    assert probe_media(output.data).width == 64
    assert outcome.cost is None  # kie reports no cost on the record
    queries = fake.on("recordInfo")
    assert {r.query["taskId"] for r in queries} == {pending.upstream_id}
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in queries)
    (download,) = [r for r in fake.requests if r.path.startswith("/files/")]
    assert "authorization" not in download.headers  # the key stays with the API
    # The upstream URL expiring afterwards loses nothing: the bytes were copied at once.
    fake.expire_results(pending.upstream_id)
    assert (await http.get(f"{fake.base_url}/files/{pending.upstream_id}-0")).status_code == 404


async def test_the_poll_interval_backs_off_with_the_polls_so_far(
    fake: FakeKie, http: httpx.AsyncClient
) -> None:
    provider = provider_for(fake.base_url, http, poll_interval_s=2.0, max_poll_interval_s=10.0)
    fake.script = Script(waiting_polls=10)
    pending = await submitted(provider, image_job())
    assert pending.poll_after_s == 2.0

    after = []
    for polls in (0, 1, 2, 10, 5000):
        job = dataclasses.replace(image_job(), polls=polls)
        outcome = await provider.poll(job, pending.upstream_id)
        assert isinstance(outcome, Pending)
        after.append(outcome.poll_after_s)
    assert after == [2.0, 3.0, 4.5, 10.0, 10.0]  # a day of polls does not overflow


@pytest.mark.parametrize(
    ("reported", "progress"),
    [(45, 45), (0.45, 45), ("0.45", 45), ("70", 70), (100, 99), (-3, 0), ("soon", 0)],
)
async def test_progress_as_percent_or_fraction(
    fake: FakeKie, provider: KieProvider, reported: object, progress: int
) -> None:
    fake.script = Script(waiting_polls=0, generating_polls=3, progress=reported)
    job = image_job()
    pending = await submitted(provider, job)

    outcome = await provider.poll(job, pending.upstream_id)

    assert isinstance(outcome, Pending)
    assert outcome.progress == progress


async def test_credits_on_the_record_are_the_upstream_cost(
    fake: FakeKie, provider: KieProvider
) -> None:
    outcome = await finished_with(fake, provider, Script(credits=12))

    assert isinstance(outcome, Completed)
    assert outcome.cost == {"unit": "credits", "model": MODEL, "credits": 12}


async def test_every_result_url_is_downloaded(fake: FakeKie, provider: KieProvider) -> None:
    outcome = await finished_with(fake, provider, Script(results=3))

    assert isinstance(outcome, Completed)
    assert len(outcome.outputs) == 3
    assert len({o.data for o in outcome.outputs}) == 3  # three files, not one thrice
    assert len([r for r in fake.requests if r.path.startswith("/files/")]) == 3


async def test_a_video_result(fake: FakeKie, http: httpx.AsyncClient) -> None:
    provider = KieProvider(
        base_url=fake.base_url,
        api_key=KEY,
        upstream_model="seedance-2.0-text-to-video",
        http=http,
        fetch_policy=LOOPBACK,
    )
    outcome = await finished_with(fake, provider, Script())

    assert isinstance(outcome, Completed)
    (output,) = outcome.outputs
    assert output.content_type == "video/mp4"
    assert output.data[4:8] == b"ftyp"


async def test_the_content_type_is_sniffed_when_the_answer_does_not_say(
    fake: FakeKie, provider: KieProvider
) -> None:
    outcome = await finished_with(fake, provider, Script(content_type="application/octet-stream"))

    assert isinstance(outcome, Completed)
    assert outcome.outputs[0].content_type == "image/png"


async def test_a_result_that_is_no_image_or_video_fails_the_task(
    fake: FakeKie, provider: KieProvider
) -> None:
    script = Script(result=b"<html>sign in</html>", content_type="text/html")
    outcome = await finished_with(fake, provider, script)

    assert isinstance(outcome, Failed)
    assert outcome.code == "provider_error"


async def test_a_result_url_that_is_gone_is_polled_again(
    fake: FakeKie, provider: KieProvider
) -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        await finished_with(fake, provider, Script(result_stored=False))

    assert "could not be downloaded" in str(caught.value)
    assert "Signature" not in str(caught.value)  # signed URLs are secrets
    assert caught.value.ambiguous is False


async def test_a_result_url_refused_by_the_policy_fails_the_task(
    fake: FakeKie, http: httpx.AsyncClient
) -> None:
    provider = provider_for(fake.base_url, http, fetch_policy=UrlPolicy())

    outcome = await finished_with(fake, provider, Script())

    assert isinstance(outcome, Failed)
    assert outcome.code == "provider_error"
    assert "loopback" in outcome.message


@pytest.mark.parametrize(
    ("fail_code", "fail_msg", "code"),
    [
        # gengate's own fail codes mean the same here
        ("invalid_input", "resolution 9K is not offered", "invalid_input"),
        ("content_policy", "the prompt broke the content policy", "content_policy"),
        ("input_unreachable", "input image could not be fetched", "input_unreachable"),
        ("provider_timeout", "the provider did not answer in time", "provider_timeout"),
        ("provider_error", "the provider failed", "provider_error"),
        ("canceled", "canceled by the caller", "canceled"),
        # the upstream's own deadline, and its internal failure, are the provider's
        ("expired", "not finished before the task's deadline", "provider_timeout"),
        ("internal_error", "gengate failed while running the task", "provider_error"),
        # kie's codes and messages
        (
            "400",
            "Your prompt was flagged by Website as violating content policies",
            "content_policy",
        ),
        ("500", "The content may contain sensitive information", "content_policy"),
        ("422", "image_size is not one of the allowed values", "invalid_input"),
        ("400", "The image is too small", "invalid_input"),
        ("500", "Internal error, please try again later", "provider_error"),
        ("501", "generation failed", "provider_error"),
        ("", "", "provider_error"),
    ],
)
async def test_a_failed_task_maps_its_fail_code(
    fake: FakeKie, provider: KieProvider, fail_code: str, fail_msg: str, code: str
) -> None:
    script = Script(outcome="fail", fail_code=fail_code, fail_msg=fail_msg)
    outcome = await finished_with(fake, provider, script)

    assert isinstance(outcome, Failed)
    assert outcome.code == code
    assert fail_msg in outcome.message
    assert outcome.details == ({"upstream_fail_code": fail_code} if fail_code else {})


async def test_an_unknown_upstream_task_is_a_provider_error(provider: KieProvider) -> None:
    outcome = await provider.poll(image_job(), "kie-never-created")

    assert isinstance(outcome, Failed)
    assert outcome.code == "provider_error"
    assert outcome.details == {"upstream_code": 404}
    assert "no longer knows this task" in outcome.message


@pytest.mark.parametrize(
    "body",
    [
        b"<html>bad gateway</html>",
        b"[1, 2]",
        envelope(200, "success"),
        envelope(200, "success", {"taskId": "kie1"}),
        envelope(200, "success", {"taskId": "kie1", "state": "paused"}),
        envelope(200, "success", {"taskId": "kie1", "state": "success", "resultJson": None}),
        envelope(200, "success", {"taskId": "kie1", "state": "success", "resultJson": "{oops"}),
        envelope(
            200,
            "success",
            {"taskId": "kie1", "state": "success", "resultJson": '{"resultUrls": []}'},
        ),
    ],
)
async def test_a_malformed_poll_answer_is_a_provider_error(
    fake: FakeKie, provider: KieProvider, body: bytes
) -> None:
    job = image_job()
    pending = await submitted(provider, job)
    fake.fail_next(Canned(200, body, endpoint="recordInfo"))

    outcome = await provider.poll(job, pending.upstream_id)

    assert isinstance(outcome, Failed)
    assert outcome.code == "provider_error"


async def test_a_result_json_given_as_an_object_is_read(
    fake: FakeKie, provider: KieProvider
) -> None:
    done = await finished_with(fake, provider, Script())
    assert isinstance(done, Completed)
    url = f"{fake.base_url}/files/{next(iter(fake.tasks))}-0"
    record = {"taskId": "kie1", "state": "success", "resultJson": {"resultUrls": [url]}}
    fake.fail_next(Canned(200, envelope(200, "success", record), endpoint="recordInfo"))

    outcome = await provider.poll(image_job(), "kie1")

    assert isinstance(outcome, Completed)
    assert outcome.outputs[0].data == done.outputs[0].data


async def test_the_callback_url_reaches_the_upstream_and_its_callback_arrives(
    fake: FakeKie, http: httpx.AsyncClient
) -> None:
    with receiving() as receiver:
        provider = provider_for(fake.base_url, http, callback_url=receiver.url + "/cb/kie-a")
        job = image_job()
        pending = await submitted(provider, job)
        assert fake.tasks[pending.upstream_id].body["callBackUrl"] == receiver.url + "/cb/kie-a"

        fake.finish(pending.upstream_id)
        wait_until(lambda: receiver.on("/cb/kie-a"), timeout=5, what="the upstream callback")

    (callback,) = receiver.on("/cb/kie-a")
    body = json.loads(callback.body)
    assert body["code"] == 200
    assert body["data"]["taskId"] == pending.upstream_id
    assert body["data"]["state"] == "success"
    # The callback only makes the poll due; the poll decides.
    assert isinstance(await provider.poll(job, pending.upstream_id), Completed)


# --- refusals -------------------------------------------------------------------------


def _canned(code: int, msg: str, *, in_body: bool, endpoint: str, data: Any = None) -> Canned:
    """A refusal as gengate sends it (HTTP status = code) or as kie does (HTTP 200)."""
    return Canned(200 if in_body else code, envelope(code, msg, data), endpoint=endpoint)


@pytest.mark.parametrize("in_body", [False, True], ids=["http-status", "body-code"])
@pytest.mark.parametrize(
    ("status", "fault"),
    [(401, "auth"), (403, "auth"), (402, "quota"), (505, "feature_disabled"), (404, "config")],
)
async def test_the_channels_own_faults_are_logged_and_never_the_callers(
    fake: FakeKie,
    provider: KieProvider,
    caplog: pytest.LogCaptureFixture,
    status: int,
    fault: str,
    in_body: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.fail_next(_canned(status, "refused", in_body=in_body, endpoint="createTask"))

    outcome = await provider.submit(image_job(), report=no_progress)

    assert isinstance(outcome, Failed)
    assert outcome.code == "provider_error"
    assert outcome.details == {"channel_fault": fault, "upstream_code": status}
    assert "not with your request" in outcome.message
    (record,) = [r for r in caplog.records if r.name == "app.providers.kie"]
    assert record.levelno == logging.ERROR
    assert fault in record.getMessage()


@pytest.mark.parametrize("in_body", [False, True], ids=["http-status", "body-code"])
@pytest.mark.parametrize(
    ("status", "msg", "code"),
    [
        (422, "aspect_ratio must be one of 1:1, 3:2", "invalid_input"),
        (400, "prompt is required", "invalid_input"),
        (422, "the prompt was flagged by the content policy", "content_policy"),
        (501, "generation failed", "provider_error"),
        (409, "X-Request-Id was already used with different parameters", "provider_error"),
        (418, "teapot", "provider_error"),
    ],
)
async def test_a_refused_submit_maps_its_code(
    fake: FakeKie, provider: KieProvider, status: int, msg: str, code: str, in_body: bool
) -> None:
    fake.fail_next(_canned(status, msg, in_body=in_body, endpoint="createTask"))

    outcome = await provider.submit(image_job(), report=no_progress)

    assert isinstance(outcome, Failed)
    assert outcome.code == code
    assert msg in outcome.message
    assert outcome.details["upstream_code"] == status
    assert "channel_fault" not in outcome.details


@pytest.mark.parametrize(
    ("msg", "data"),
    [
        ("model is not supported", {"error": "model is not supported", "field": "model"}),
        ("callBackUrl is not allowed: loopback", {"field": "callBackUrl"}),
        ("The model gpt-image-9 does not exist", None),
        ("Unsupported model", None),
    ],
)
async def test_a_refusal_of_what_the_channel_sets_is_the_channels_fault(
    fake: FakeKie, provider: KieProvider, msg: str, data: Any
) -> None:
    fake.fail_next(_canned(422, msg, in_body=False, endpoint="createTask", data=data))

    outcome = await provider.submit(image_job(), report=no_progress)

    assert isinstance(outcome, Failed)
    assert outcome.code == "provider_error"
    assert outcome.details == {"channel_fault": "config", "upstream_code": 422}


@pytest.mark.parametrize("field", ["input_urls", "input_urls[0]", "image_urls"])
async def test_an_input_url_the_upstream_cannot_use_is_refunded_not_charged(
    fake: FakeKie, provider: KieProvider, field: str
) -> None:
    msg = f"{field} is not allowed: address 127.0.0.1 is loopback"
    fake.fail_next(_canned(400, msg, in_body=False, endpoint="createTask", data={"field": field}))

    outcome = await provider.submit(image_job(), report=no_progress)

    assert isinstance(outcome, Failed) and outcome.code == "input_unreachable"
    assert msg in outcome.message


async def test_a_wrong_key_is_the_channels_fault_on_submit_and_poll(
    fake: FakeKie, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "kie-wrong-key-27182818"
    provider = provider_for(fake.base_url, http, key=wrong)
    caplog.set_level(logging.DEBUG)

    submitted_outcome = await provider.submit(image_job(), report=no_progress)
    polled = await provider.poll(image_job(), "kie-anything")

    for outcome in (submitted_outcome, polled):
        assert isinstance(outcome, Failed)
        assert outcome.details["channel_fault"] == "auth"
        assert "the key *** is invalid" in outcome.message
        assert wrong not in repr(outcome)
    assert "channel fault auth" in caplog.text
    assert wrong not in caplog.text


@pytest.mark.parametrize("in_body", [False, True], ids=["http-status", "body-code"])
@pytest.mark.parametrize("status", [429, 455, 500, 502, 503])
async def test_throttling_maintenance_and_server_errors_are_retryable_refusals(
    fake: FakeKie, provider: KieProvider, status: int, in_body: bool
) -> None:
    fake.fail_next(_canned(status, "try later", in_body=in_body, endpoint="createTask"))

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.submit(image_job(), report=no_progress)

    # The upstream answered: it refused, so another channel may take the job.
    assert caught.value.ambiguous is False
    assert caught.value.retry_after_s is None
    assert fake.tasks == {}
    if status == 455:
        assert "maintenance" in str(caught.value)


async def test_429_carries_its_retry_after(fake: FakeKie, provider: KieProvider) -> None:
    fake.fail_next(
        Canned(429, envelope(429, "rate limit exceeded"), {"Retry-After": "7"}),
        # gengate also says it in the body; kie in an HTTP 200 can only say it there
        Canned(200, envelope(429, "rate limit exceeded", {"retryAfter": 3})),
    )

    for expected in (7, 3):
        with pytest.raises(ProviderUnavailable) as caught:
            await provider.submit(image_job(), report=no_progress)
        assert caught.value.retry_after_s == expected
        assert caught.value.ambiguous is False


@pytest.mark.parametrize("status", [504, 524])
async def test_a_gateway_timeout_on_submit_is_ambiguous(
    fake: FakeKie, provider: KieProvider, status: int
) -> None:
    fake.fail_next(Canned(status, b"<html>gateway timeout</html>", endpoint="createTask"))

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.submit(image_job(), report=no_progress)

    assert caught.value.ambiguous is True
    assert "may still run the job" in str(caught.value)


async def test_5xx_on_poll_is_retryable_and_never_ambiguous(
    fake: FakeKie, provider: KieProvider
) -> None:
    job = image_job()
    pending = await submitted(provider, job)
    fake.fail_next(
        Canned(504, b"", endpoint="recordInfo"),
        Canned(200, envelope(455, "maintenance"), {"Retry-After": "30"}, endpoint="recordInfo"),
    )

    for retry_after in (None, 30):
        with pytest.raises(ProviderUnavailable) as caught:
            await provider.poll(job, pending.upstream_id)
        assert caught.value.ambiguous is False
        assert caught.value.retry_after_s == retry_after
    assert isinstance(await provider.poll(job, pending.upstream_id), Pending)


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b'"kie1"',
        envelope(200, "success"),
        envelope(200, "success", {"taskId": ""}),
        envelope(200, "success", {"taskId": 7}),
    ],
)
async def test_a_yes_without_a_readable_task_id_is_ambiguous(
    fake: FakeKie, provider: KieProvider, body: bytes
) -> None:
    """The upstream said it took the job, so it may run (and bill) it: not resubmitted
    elsewhere."""
    fake.fail_next(Canned(200, body, endpoint="createTask"))

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.submit(image_job(), report=no_progress)

    assert caught.value.ambiguous is True


async def test_a_hanging_submit_is_ambiguous_and_a_hanging_poll_is_not(
    fake: FakeKie, http: httpx.AsyncClient
) -> None:
    provider = provider_for(fake.base_url, http, request_timeout_s=0.3)
    job = image_job()
    pending = await submitted(provider, job)
    fake.fail_next(
        Canned(hang=True, endpoint="createTask"), Canned(hang=True, endpoint="recordInfo")
    )

    with pytest.raises(ProviderUnavailable) as on_submit:
        await provider.submit(job, report=no_progress)
    with pytest.raises(ProviderUnavailable) as on_poll:
        await provider.poll(job, pending.upstream_id)

    assert on_submit.value.ambiguous is True
    assert "may still run the job" in str(on_submit.value)
    assert on_poll.value.ambiguous is False
    # The hung submit's body did reach the upstream.
    assert fake.on("createTask")[-1].json()["input"]["prompt"] == "a lighthouse at dusk"


async def test_a_connection_dropped_after_the_body_is_ambiguous(
    fake: FakeKie, provider: KieProvider
) -> None:
    fake.fail_next(
        Canned(drop=True, endpoint="createTask"), Canned(drop=True, endpoint="recordInfo")
    )

    with pytest.raises(ProviderUnavailable) as on_submit:
        await provider.submit(image_job(), report=no_progress)
    with pytest.raises(ProviderUnavailable) as on_poll:
        await provider.poll(image_job(), "kie1")

    assert on_submit.value.ambiguous is True
    assert on_poll.value.ambiguous is False


async def test_nothing_listening_is_retryable_and_not_ambiguous(http: httpx.AsyncClient) -> None:
    provider = provider_for(f"http://127.0.0.1:{free_port()}", http)

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.submit(image_job(), report=no_progress)

    assert caught.value.ambiguous is False


# --- cancel ---------------------------------------------------------------------------


async def test_cancel_of_a_waiting_task_cancels_it(fake: FakeKie, provider: KieProvider) -> None:
    fake.script = Script(waiting_polls=5)
    job = image_job()
    pending = await submitted(provider, job)

    assert await provider.cancel(pending.upstream_id) is True

    (request,) = fake.on("cancel")
    assert request.method == "POST"
    assert request.query == {"taskId": pending.upstream_id}
    assert request.headers["authorization"] == f"Bearer {KEY}"
    outcome = await provider.poll(job, pending.upstream_id)
    assert isinstance(outcome, Failed)
    assert outcome.code == "canceled"


async def test_cancel_of_a_generating_finished_or_unknown_task_answers_false(
    fake: FakeKie, provider: KieProvider
) -> None:
    fake.script = Script(waiting_polls=0, generating_polls=5)
    job = image_job()
    pending = await submitted(provider, job)
    assert isinstance(await provider.poll(job, pending.upstream_id), Pending)

    assert await provider.cancel(pending.upstream_id) is False  # 409
    assert await provider.cancel("kie-never-created") is False  # 404
    assert fake.tasks[pending.upstream_id].state == "generating"


async def test_an_upstream_without_cancel_answers_false(http: httpx.AsyncClient) -> None:
    with running_kie(KEY, has_cancel=False) as fake:
        provider = provider_for(fake.base_url, http)
        pending = await submitted(provider, image_job())

        assert await provider.cancel(pending.upstream_id) is False
        assert fake.tasks[pending.upstream_id].state == "waiting"


@pytest.mark.parametrize("in_body", [False, True], ids=["http-status", "body-code"])
async def test_cancel_during_an_outage_raises_retryable(
    fake: FakeKie, provider: KieProvider, in_body: bool
) -> None:
    answer = _canned(503, "unavailable", in_body=in_body, endpoint="cancel")
    fake.fail_next(Canned(answer.status, answer.body, {"Retry-After": "3"}, endpoint="cancel"))

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.cancel("kie1")

    assert caught.value.retry_after_s == 3


async def test_cancel_with_a_refused_credential_answers_false_and_logs(
    fake: FakeKie, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    provider = provider_for(fake.base_url, http, key="kie-wrong-key-1")

    assert await provider.cancel("kie1") is False
    assert "channel fault auth" in caplog.text


# --- the key --------------------------------------------------------------------------


async def test_the_key_never_appears_in_an_outcome_or_a_log(
    fake: FakeKie, provider: KieProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    leaky = f"request by {KEY} refused"
    fake.fail_next(
        Canned(422, envelope(422, leaky), endpoint="createTask"),
        Canned(200, envelope(402, leaky), endpoint="createTask"),
        Canned(403, envelope(403, leaky), endpoint="createTask"),
        Canned(500, envelope(500, leaky), endpoint="createTask"),
        Canned(429, envelope(429, leaky), endpoint="createTask"),
    )
    seen: list[str] = []
    for _ in range(5):
        try:
            seen.append(repr(await provider.submit(image_job(), report=no_progress)))
        except ProviderUnavailable as exc:
            seen.append(repr(exc))
    failed = await finished_with(fake, provider, Script(outcome="fail", fail_msg=leaky))
    seen.append(repr(failed))

    assert "invalid_input" in seen[0] and "quota" in seen[1] and "auth" in seen[2]
    assert "request by *** refused" in seen[0]
    for text in [*seen, caplog.text]:
        assert KEY not in text
