"""The operator's channel commands: list with health, a task's attempts, usage, bad files."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli import app as cli
from app.core.config import Settings
from tests.channels.support import VIDEO, channel_app, channel_file, modelark_channel
from tests.conftest import make_customer
from tests.fakes.modelark import Canned, error_body, running_modelark
from tests.support.apps import runtime_of, wait_for_terminal

KEY = "ark-test-key-0123456789"
runner = CliRunner()


def _json(*args: str) -> Any:
    result = runner.invoke(cli, ["--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def _json_off_loop(*args: str) -> Any:
    """The command's JSON; run off the test's event loop, as the CLI runs its own."""
    return await asyncio.to_thread(_json, *args)


async def test_list_attempts_and_usage_after_a_failover(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_ARK_KEY", KEY)
    with running_modelark(KEY) as primary, running_modelark(KEY) as fallback:
        primary.fail_next(*[Canned(503, error_body("ServiceUnavailable"), method="POST")] * 5)
        path = channel_file(
            tmp_path / "channels.toml",
            modelark_channel("primary", primary.base_url, priority=10),
            modelark_channel("fallback", fallback.base_url, priority=1),
        )
        monkeypatch.setenv("GENGATE_CHANNELS_PATH", str(path))
        monkeypatch.setenv("GENGATE_BREAKER_FAILURES", "2")
        monkeypatch.setenv("GENGATE_ALLOW_PRIVATE_URLS", "true")
        overrides = {"breaker_failures": 2}
        async with channel_app(settings, path, **overrides) as (app, client):
            customer = await make_customer(runtime_of(app))
            task_ids = []
            for _ in range(2):
                created = await client.post(
                    "/api/v1/jobs/createTask",
                    json={"model": VIDEO, "input": {"prompt": "waves"}},
                    headers=customer.headers,
                )
                task_ids.append(created.json()["data"]["taskId"])
                data = await wait_for_terminal(client, customer.headers, task_ids[-1])
                assert data["state"] == "success"

    listed = {c["name"]: c for c in (await _json_off_loop("channels", "list"))["channels"]}
    assert set(listed) == {"primary", "fallback", "local"}
    assert (listed["primary"]["breaker"], listed["primary"]["consecutive_failures"]) == ("open", 2)
    assert "503" in listed["primary"]["last_failure"]
    assert listed["fallback"]["breaker"] == "closed"
    assert listed["fallback"]["attempts"] == 4  # two submits, two polls
    assert "api_key" not in json.dumps(listed) and KEY not in json.dumps(listed)

    attempts = (await _json_off_loop("channels", "attempts", "--task", task_ids[0]))["attempts"]
    assert [(a["channel"], a["outcome"]) for a in attempts] == [
        ("primary", "refused"),
        ("fallback", "accepted"),
        ("fallback", "succeeded"),
    ]
    assert all(isinstance(a["latency_ms"], int) for a in attempts)

    (row,) = (await _json_off_loop("report", "usage", "--since", "1h"))["rows"]
    assert (row["model"], row["channel"], row["tasks"], row["succeeded"]) == (
        VIDEO,
        "fallback",
        2,
        2,
    )
    assert row["upstream_cost"]["tokens"]["total_tokens"] == 2 * 108900
    people = await asyncio.to_thread(
        runner.invoke, cli, ["report", "usage", "--since", "2026-01-01"]
    )
    assert people.exit_code == 0 and "fallback" in people.stdout


def test_a_bad_channel_file_or_since_is_a_clear_error(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[channel]]\nname = "x"\nadapter = "openia"\nmodels = ["image-upscale"]\n')
    monkeypatch.setenv("GENGATE_CHANNELS_PATH", str(bad))
    result = runner.invoke(cli, ["--json", "channels", "list"])
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error.startswith("invalid channel file: ") and "adapter 'openia'" in error
    monkeypatch.delenv("GENGATE_CHANNELS_PATH")
    result = runner.invoke(cli, ["--json", "report", "usage", "--since", "yesterday"])
    assert json.loads(result.stdout) == {
        "error": "since: 'yesterday' is neither a duration (30m, 24h, 7d) nor a date like "
        "2026-11-01",
        "field": "since",
    }
