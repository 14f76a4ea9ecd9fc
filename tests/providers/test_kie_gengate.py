"""The kie-style jobs API adapter against a real second gengate as its upstream.

The upstream is `gengate serve` in a subprocess with its own workers (one at a time, so a
slow task holds the queue) rendering offline; the test's in-process app (no workers) only
shares its database to make the upstream's account and key.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.net.url_guard import UrlPolicy
from app.providers.base import Completed, Failed, Outcome, Pending, ProviderJob
from app.providers.kie import KieProvider
from app.providers.local_render import probe_media
from tests.conftest import Customer, make_customer
from tests.support.apps import eventually, runtime_of
from tests.support.receiver import receiving
from tests.support.server import LiveServer, start_server

MODEL = "gpt-image-2-text-to-image"
LOOPBACK = UrlPolicy(allow_private=True, timeout_s=10.0)


@dataclass
class Upstream:
    server: LiveServer
    customer: Customer

    async def record(self, task_id: str) -> dict[str, Any]:
        """The upstream's recordInfo data, read directly."""
        async with httpx.AsyncClient(base_url=self.server.base_url) as client:
            answer = await client.get(
                "/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=self.customer.headers
            )
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()["data"]
        return data

    async def balance(self) -> int:
        async with httpx.AsyncClient(base_url=self.server.base_url) as client:
            answer = await client.get("/api/v1/account", headers=self.customer.headers)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["data"]["balance"])


@pytest.fixture
async def upstream(
    idle_app: tuple[FastAPI, httpx.AsyncClient], settings_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[Upstream]:
    customer = await make_customer(runtime_of(idle_app[0]))
    env = {
        **settings_env,
        "GENGATE_WORKER_CONCURRENCY": "1",
        # Our callback URL is on loopback, as the test's receiver is.
        "GENGATE_ALLOW_PRIVATE_URLS": "true",
    }
    server = start_server(env, tmp_path)
    try:
        yield Upstream(server, customer)
    finally:
        server.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
        yield client


def provider_for(upstream: Upstream, http: httpx.AsyncClient, **options: Any) -> KieProvider:
    values: dict[str, Any] = {
        "api_key": upstream.customer.key,
        "upstream_model": MODEL,
        "fetch_policy": LOOPBACK,
        "poll_interval_s": 0.1,
        **options,
    }
    return KieProvider(base_url=upstream.server.base_url, http=http, **values)


def image_job(
    prompt: str, task_id: str = "task_0193a0b1c2d3e4f5a6b7c8d9", **params: Any
) -> ProviderJob:
    return ProviderJob(
        task_id=task_id,
        model_id=MODEL,
        scene="Text to image",
        media_type="image",
        input={"prompt": prompt, "aspect_ratio": "1:1", "quality": "low", **params},
        attempt=1,
    )


async def no_progress(_progress: int) -> None:
    return None


async def submitted(provider: KieProvider, job: ProviderJob) -> Pending:
    outcome = await provider.submit(job, report=no_progress)
    assert isinstance(outcome, Pending), outcome
    return outcome


async def polled_to_end(provider: KieProvider, job: ProviderJob, upstream_id: str) -> Outcome:
    async def finished() -> Outcome | None:
        outcome = await provider.poll(job, upstream_id)
        return None if isinstance(outcome, Pending) else outcome

    return await eventually(finished, within_s=60, interval_s=0.1, what="the upstream task")


async def test_a_task_runs_on_the_upstream_gengate_and_its_image_is_copied(
    upstream: Upstream, http: httpx.AsyncClient
) -> None:
    provider = provider_for(upstream, http)
    job = image_job("A lighthouse on a cliff at dusk")

    pending = await submitted(provider, job)
    outcome = await polled_to_end(provider, job, pending.upstream_id)

    assert isinstance(outcome, Completed), outcome
    (output,) = outcome.outputs
    assert output.content_type == "image/png"
    info = probe_media(output.data)
    assert (info.content_type, info.width, info.height) == ("image/png", 1024, 1024)
    record = await upstream.record(pending.upstream_id)
    assert record["state"] == "success"
    assert record["model"] == MODEL
    assert json.loads(record["param"])["input"]["prompt"] == job.input["prompt"]
    # The credits the upstream charged are the upstream cost.
    assert record["credits"] > 0
    assert outcome.cost == {"unit": "credits", "model": MODEL, "credits": record["credits"]}
    assert await upstream.balance() == 1000 - record["credits"]


@pytest.mark.parametrize(
    ("prompt", "params", "message"),
    [
        ("A red kite", {"aspect_ratio": "7:5"}, "aspect_ratio"),
        ("", {}, "prompt is required"),
    ],
)
async def test_a_bad_input_refused_by_the_upstream_is_invalid_input(
    upstream: Upstream,
    http: httpx.AsyncClient,
    prompt: str,
    params: dict[str, Any],
    message: str,
) -> None:
    provider = provider_for(upstream, http)

    outcome = await provider.submit(image_job(prompt, **params), report=no_progress)

    assert isinstance(outcome, Failed)
    assert outcome.code == "invalid_input"
    assert message in outcome.message
    assert outcome.details["upstream_code"] == 400
    assert await upstream.balance() == 1000


@pytest.mark.parametrize("code", ["content_policy", "invalid_input", "provider_error"])
async def test_the_upstreams_fail_codes_pass_through(
    upstream: Upstream, http: httpx.AsyncClient, code: str
) -> None:
    provider = provider_for(upstream, http)
    job = image_job(f"A red kite [[fail:{code}]]")

    pending = await submitted(provider, job)
    outcome = await polled_to_end(provider, job, pending.upstream_id)

    assert isinstance(outcome, Failed)
    assert outcome.code == code
    assert outcome.details == {"upstream_fail_code": code}
    assert "injected failure" in outcome.message


async def test_a_resubmission_with_the_same_task_id_is_the_same_upstream_task(
    upstream: Upstream, http: httpx.AsyncClient
) -> None:
    provider = provider_for(upstream, http, idempotent_submit=True)
    job = image_job("A lighthouse on a cliff at dusk", task_id="task_a")

    first = await submitted(provider, job)
    charged = await upstream.balance()
    again = await submitted(provider, job)
    other = await submitted(provider, image_job(str(job.input["prompt"]), task_id="task_b"))

    assert again.upstream_id == first.upstream_id
    assert other.upstream_id != first.upstream_id
    # The replay was free: only the second task id was charged again.
    price = 1000 - charged
    assert price > 0
    assert await upstream.balance() == 1000 - 2 * price


async def test_cancel_of_a_waiting_upstream_task_cancels_and_refunds_it(
    upstream: Upstream, http: httpx.AsyncClient
) -> None:
    provider = provider_for(upstream, http)
    job = image_job("A slow one [[delay:20000]]")
    pending = await submitted(provider, job)
    assert (await upstream.record(pending.upstream_id))["state"] == "waiting"

    assert await provider.cancel(pending.upstream_id) is True

    outcome = await provider.poll(job, pending.upstream_id)
    assert isinstance(outcome, Failed)
    assert outcome.code == "canceled"
    record = await upstream.record(pending.upstream_id)
    assert (record["state"], record["failCode"]) == ("fail", "canceled")
    assert await upstream.balance() == 1000
    # Finished now: a second cancel is refused (409), as is one of an unknown task (404).
    assert await provider.cancel(pending.upstream_id) is False
    assert await provider.cancel("task_0193a0b1c2d3e4f5a6b7c8d9") is False


async def test_queue_position_and_progress_come_from_the_upstream(
    upstream: Upstream, http: httpx.AsyncClient
) -> None:
    provider = provider_for(upstream, http)
    busy = image_job("Holds the upstream's only worker [[delay:20000]]", task_id="task_busy")
    busy_id = (await submitted(provider, busy)).upstream_id

    async def generating() -> Pending | None:
        outcome = await provider.poll(busy, busy_id)
        assert isinstance(outcome, Pending)
        return outcome if outcome.queue_position is None and outcome.progress > 0 else None

    started = await eventually(generating, within_s=30, what="the busy task to start")
    assert started.progress == 5  # what the upstream's renderer reported
    queued = image_job("Waits its turn", task_id="task_queued")
    queued_id = (await submitted(provider, queued)).upstream_id

    outcome = await provider.poll(queued, queued_id)

    assert isinstance(outcome, Pending)
    assert (await upstream.record(queued_id))["queuePosition"] == 1
    assert outcome.queue_position == 0  # next to start
    assert outcome.progress == 0
    for upstream_id in (queued_id, busy_id):
        assert await provider.cancel(upstream_id) is True


async def test_the_upstream_calls_our_callback_url_when_it_finishes(
    upstream: Upstream, http: httpx.AsyncClient
) -> None:
    with receiving() as receiver:
        provider = provider_for(upstream, http, callback_url=receiver.url + "/cb/gengate-b")
        job = image_job("A lighthouse on a cliff at dusk")
        pending = await submitted(provider, job)

        async def called_back() -> bool:
            return bool(receiver.on("/cb/gengate-b"))

        await eventually(called_back, within_s=60, what="the upstream's callback")

    (callback,) = receiver.on("/cb/gengate-b")
    body = json.loads(callback.body)
    assert body["code"] == 200
    assert body["data"]["taskId"] == pending.upstream_id
    assert "webhook-signature" in callback.headers
    # The callback only makes the poll due; the poll decides.
    assert isinstance(await provider.poll(job, pending.upstream_id), Completed)


async def test_a_wrong_key_or_model_is_the_channels_fault(
    upstream: Upstream, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    wrong_key = provider_for(upstream, http, api_key="sk_" + "x" * 40)
    wrong_model = provider_for(upstream, http, upstream_model="gpt-image-9")

    refused = await wrong_key.submit(image_job("A red kite"), report=no_progress)
    unknown = await wrong_model.submit(image_job("A red kite"), report=no_progress)

    assert isinstance(refused, Failed) and isinstance(unknown, Failed)
    assert refused.details == {"channel_fault": "auth", "upstream_code": 401}
    assert unknown.details == {"channel_fault": "config", "upstream_code": 400}
    assert "model is not supported" in unknown.message
    assert "channel fault auth" in caplog.text and "channel fault config" in caplog.text
    assert upstream.customer.key not in caplog.text
    assert await upstream.balance() == 1000
