"""The seed's models through real adapters: the channel file of tests.fakes.stack over fake
OpenAI Images, ModelArk and kie upstreams, as an operator would try it by hand."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.channels.attempts import list_attempts
from app.core.config import Settings
from tests.channels.support import channel_app
from tests.conftest import make_customer
from tests.fakes.kie import DEFAULT_KEY as KIE_KEY
from tests.fakes.kie import FakeKie, running_kie
from tests.fakes.modelark import DEFAULT_KEY as ARK_KEY
from tests.fakes.modelark import FakeModelArk, running_modelark
from tests.fakes.openai_images import FakeOpenAIImages, running_fake
from tests.fakes.stack import OPENAI_KEY, channel_toml
from tests.support.apps import runtime_of, wait_for_terminal


@pytest.fixture
def fakes(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[FakeOpenAIImages, FakeModelArk, FakeKie]]:
    monkeypatch.setenv("FAKE_OPENAI_KEY", OPENAI_KEY)
    monkeypatch.setenv("FAKE_ARK_KEY", ARK_KEY)
    monkeypatch.setenv("FAKE_KIE_KEY", KIE_KEY)
    with (
        running_fake(OPENAI_KEY) as openai,
        running_modelark(ARK_KEY) as ark,
        running_kie(KIE_KEY) as kie,
    ):
        yield openai, ark, kie


def _png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


async def test_the_seed_models_run_on_their_upstreams_and_are_served_by_us(
    settings: Settings,
    tmp_path: Path,
    fakes: tuple[FakeOpenAIImages, FakeModelArk, FakeKie],
) -> None:
    openai, ark, kie = fakes
    path = tmp_path / "channels.toml"
    path.write_text(
        channel_toml(
            openai_url=openai.base_url,
            ark_url=ark.base_url,
            kie_url=kie.base_url,
            kie_key_env="FAKE_KIE_KEY",
        )
    )
    async with channel_app(settings, path) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime, credits=10_000)
        upload = await client.post("/api/v1/files", json={"data": _png()}, headers=customer.headers)
        image_url = upload.json()["data"]["url"]
        requests: dict[str, dict[str, Any]] = {
            "gpt-image-2-text-to-image": {
                "prompt": "a red fox",
                "output_format": "webp",
                "background": "transparent",
                "output_compression": 80,
                "moderation": "low",
            },
            "gpt-image-2-image-to-image": {"prompt": "make it blue", "input_urls": [image_url]},
            "gpt-image-1": {"prompt": "a lighthouse"},
            "seedance-2.0-text-to-video": {"prompt": "waves"},
            "seedance-2.0-image-to-video": {"prompt": "it moves", "image_urls": [image_url]},
            "image-upscale": {"input_urls": [image_url]},
        }
        expected = {
            "gpt-image-2-text-to-image": "openai",
            "gpt-image-2-image-to-image": "openai",
            "gpt-image-1": "openai",
            "seedance-2.0-text-to-video": "ark",
            "seedance-2.0-image-to-video": "ark",
            "image-upscale": "kie",
        }
        tasks = {}
        for model, inputs in requests.items():
            created = await client.post(
                "/api/v1/jobs/createTask",
                json={"model": model, "input": inputs},
                headers=customer.headers,
            )
            assert created.status_code == 200, created.text
            tasks[model] = created.json()["data"]["taskId"]
        results = {}
        for model, task_id in tasks.items():
            data = await wait_for_terminal(client, customer.headers, task_id)
            assert data["state"] == "success", (model, data["failCode"], data["failMsg"])
            results[model] = json.loads(data["resultJson"])["resultUrls"][0]
        # The upstreams delete their files; ours are still served.
        for upstream_id in list(ark.tasks):
            ark.expire_video(upstream_id)
        for upstream_id in list(kie.tasks):
            kie.expire_results(upstream_id)
        for model, url in results.items():
            media = await client.get(url)
            assert media.status_code == 200, (model, media.status_code)
            kind = "video/mp4" if "seedance" in model else "image/"
            assert media.headers["content-type"].startswith(kind), model
        async with runtime.sessions() as session:
            for model, task_id in tasks.items():
                attempts = await list_attempts(session, task_id=task_id)
                assert {a.channel for a in attempts} == {expected[model]}, model
        # OpenAI's own options reach it; the edit sent our upload's bytes; ModelArk got
        # our URL to fetch.
        (generation,) = [
            r
            for r in openai.requests
            if r.path.endswith("/generations") and r.fields.get("prompt") == "a red fox"
        ]
        sent = {k: generation.fields[k] for k in ("background", "output_compression", "moderation")}
        assert sent == {"background": "transparent", "output_compression": 80, "moderation": "low"}
        (edit,) = [r for r in openai.requests if r.path.endswith("/edits")]
        assert edit.images and edit.images[0].data[:8] == b"\x89PNG\r\n\x1a\n"
        (i2v,) = [r.json() for r in ark.on("POST") if "image_url" in r.body.decode()]
        assert i2v["content"][1]["image_url"]["url"] == image_url
