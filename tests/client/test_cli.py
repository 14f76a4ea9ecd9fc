"""`gengate generate | status | tasks` against a real server on loopback.

Conventions of every `gengate` command: `--json` prints exactly one object on stdout (an
error too: `{"error", "field", ...}`); a failure exits non-zero with the server's message
and field; people get text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from app.cli import app
from app.client import Client
from tests.client.conftest import (
    IMAGE_MODEL,
    PNG_MAGIC,
    VIDEO_MODEL,
    is_mp4,
    server_asset,
    sha256_of,
)
from tests.conftest import Customer
from tests.support.console import ConsoleServer

runner = CliRunner()


def _env(live: ConsoleServer, key: str | None) -> dict[str, str | None]:
    return {"GENGATE_URL": live.base_url, "GENGATE_API_KEY": key}


def _invoke(live: ConsoleServer, key: str | None, *args: str) -> Result:
    return runner.invoke(app, list(args), env=_env(live, key))


def _one_object(result: Result) -> dict[str, Any]:
    assert result.stderr == "", result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON object, got {result.stdout!r}"
    payload = json.loads(lines[0])
    assert isinstance(payload, dict)
    return payload


def test_generate_wait_downloads_real_files(
    live: ConsoleServer, customer: Customer, tmp_path: Path
) -> None:
    """As a user runs it: the installed command, in a shell, with the environment."""
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "generate",
            IMAGE_MODEL,
            "--prompt",
            "A red bicycle",
            "--param",
            "aspect_ratio=16:9",
            "--wait",
            "--out",
            str(out),
        ],
        env={**os.environ, "GENGATE_URL": live.base_url, "GENGATE_API_KEY": customer.key},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    [path] = list(out.iterdir())
    assert path.name.endswith("-1.png") and path.read_bytes().startswith(PNG_MAGIC)
    task_id = path.name.removesuffix("-1.png")
    [asset] = server_asset(live, customer, task_id)
    assert sha256_of(path) == asset["sha256"]
    assert str(path) in done.stdout and "success" in done.stdout
    assert customer.key not in done.stdout + done.stderr


def test_generate_video_json(live: ConsoleServer, customer: Customer, tmp_path: Path) -> None:
    result = _invoke(
        live,
        customer.key,
        "generate",
        VIDEO_MODEL,
        "-p",
        "A paper boat",
        "-P",
        "duration=5",
        "-P",
        "resolution=480p",
        "--out",
        str(tmp_path),
        "--json",
    )
    assert result.exit_code == 0, result.output
    task = _one_object(result)
    assert task["state"] == "success" and task["taskId"].startswith("task_")
    [file] = task["files"]
    data = Path(file).read_bytes()
    assert is_mp4(data)
    [asset] = server_asset(live, customer, task["taskId"])
    assert sha256_of(Path(file)) == asset["sha256"]


def test_params_are_json_when_they_parse(live: ConsoleServer, customer: Customer) -> None:
    result = _invoke(
        live,
        customer.key,
        "--json",
        "generate",
        IMAGE_MODEL,
        "-P",
        "prompt=A lamp",
        "-P",
        "output_format=webp",
        "-P",
        "output_compression=40",
        "-P",
        "aspect_ratio=4:3",
    )
    assert result.exit_code == 0, result.output
    created = _one_object(result)
    assert set(created) == {"taskId", "model", "state"}

    status = _one_object(_invoke(live, customer.key, "status", created["taskId"], "--json"))
    given = json.loads(status["param"])["input"]
    # 40 went as a number (the model refuses a string there); 4:3 as text.
    assert given["output_compression"] == 40 and given["aspect_ratio"] == "4:3"


def test_status_and_tasks(live: ConsoleServer, customer: Customer) -> None:
    made = _one_object(
        _invoke(live, customer.key, "--json", "generate", IMAGE_MODEL, "-p", "one", "--wait")
    )
    failed = _invoke(
        live,
        customer.key,
        "--json",
        "generate",
        IMAGE_MODEL,
        "-p",
        "[[fail:provider_error]] x",
        "--wait",
    )
    assert failed.exit_code == 1
    failure = _one_object(failed)
    assert failure["failCode"] == "provider_error" and failure["task"]["state"] == "fail"

    people = _invoke(live, customer.key, "status", made["taskId"])
    assert people.exit_code == 0, people.output
    assert made["taskId"] in people.stdout and "success" in people.stdout
    assert "/media/" in people.stdout

    listed = _one_object(_invoke(live, customer.key, "tasks", "--json"))
    assert listed["total"] == 2
    completed = _one_object(
        _invoke(
            live, customer.key, "tasks", "--status", "completed", "--model", IMAGE_MODEL, "--json"
        )
    )
    assert [t["id"] for t in completed["tasks"]] == [made["taskId"]]
    table = _invoke(live, customer.key, "tasks", "--status", "failed")
    assert table.exit_code == 0 and failure["taskId"] in table.stdout
    assert "1 of 1 tasks" in table.stdout

    waited = _invoke(live, customer.key, "status", made["taskId"], "--wait", "--json")
    assert _one_object(waited)["state"] == "success"


@pytest.mark.parametrize(
    ("args", "message", "field"),
    [
        (["generate", "no-such-model", "-p", "x"], "model is not supported", "model"),
        (
            ["generate", IMAGE_MODEL, "-p", "x", "-P", "aspect_ratio=7:3"],
            "aspect_ratio must be one of",
            "aspect_ratio",
        ),
        (["generate", IMAGE_MODEL, "-P", "quality=high"], "prompt is required", "prompt"),
        (["status", "task_nope"], "task not found", None),
    ],
)
def test_server_refusals(
    live: ConsoleServer, customer: Customer, args: list[str], message: str, field: str | None
) -> None:
    as_json = _invoke(live, customer.key, *args, "--json")
    assert as_json.exit_code == 1
    error = _one_object(as_json)
    assert error["error"].startswith(message) and error["field"] == field
    assert error["status"] in (400, 404)

    for_people = _invoke(live, customer.key, *args)
    assert for_people.exit_code == 1 and for_people.stdout == ""
    assert message in for_people.stderr and "Traceback" not in for_people.stderr
    if field:
        assert field in for_people.stderr


def test_key_errors(live: ConsoleServer) -> None:
    missing = _invoke(live, None, "--json", "tasks")
    assert missing.exit_code == 1
    error = _one_object(missing)
    assert error["field"] == "api_key" and "GENGATE_API_KEY" in error["error"]

    wrong = _invoke(live, "sk_" + "0" * 43, "generate", IMAGE_MODEL, "-p", "x")
    assert wrong.exit_code == 1
    assert "authentication failed" in wrong.stderr and "sk_000" not in wrong.stderr


def test_usage_errors(live: ConsoleServer, customer: Customer) -> None:
    malformed = _invoke(live, customer.key, "generate", IMAGE_MODEL, "-P", "no-equals", "--json")
    assert malformed.exit_code == 2
    assert _one_object(malformed)["field"] == "param"

    twice = _invoke(
        live, customer.key, "generate", IMAGE_MODEL, "-p", "a", "-P", "prompt=b", "--json"
    )
    assert twice.exit_code == 2 and _one_object(twice)["field"] == "prompt"

    status = _invoke(live, customer.key, "tasks", "--status", "done", "--json")
    assert status.exit_code == 2 and _one_object(status)["field"] == "status"


def test_unreachable_server(customer: Customer, tmp_path: Path) -> None:
    from tests.support.server import free_port

    result = runner.invoke(
        app,
        ["--json", "status", "task_x"],
        env={"GENGATE_URL": f"http://127.0.0.1:{free_port()}", "GENGATE_API_KEY": customer.key},
    )
    assert result.exit_code == 1
    assert "no answer from" in _one_object(result)["error"]


def test_progress_bar_shows_queue_position_stage_and_progress(
    live: ConsoleServer, customer: Customer
) -> None:
    """Both worker slots busy: the new task waits in the queue, then generates (for longer
    than the longest poll interval, 3 s, so that a poll sees it)."""
    with Client(live.base_url, customer.key) as client:
        busy = [client.create(IMAGE_MODEL, {"prompt": f"[[delay:1500]] {i}"}) for i in (1, 2)]
        shown = runner.invoke(
            app,
            ["generate", IMAGE_MODEL, "-p", "[[delay:3200]] third", "--wait"],
            # FORCE_COLOR: draw the bar although stderr is not a terminal.
            env={**_env(live, customer.key), "FORCE_COLOR": "1", "COLUMNS": "120"},
        )
        assert all(client.get(t.task_id).state == "success" for t in busy)
    assert shown.exit_code == 0, shown.output
    assert "queued, #1 in the queue" in shown.stderr
    assert "generating" in shown.stderr and "100%" in shown.stderr
    assert "success" in shown.stdout
