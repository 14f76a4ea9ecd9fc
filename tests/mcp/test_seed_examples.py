"""Every curl example of the seed, verbatim but for the host, against a local server."""

import itertools
import json
import re
import shlex
import time
from pathlib import Path
from typing import Any

import httpx

from tests.mcp.conftest import McpTarget, payload_text

EXAMPLES = Path(__file__).with_name("seed_curl_examples.txt")


def _examples() -> list[tuple[dict[str, str], dict[str, Any]]]:
    """(headers, body) of each curl command in the examples file."""
    commands = re.split(r"\n(?=curl )", EXAMPLES.read_text().split("\n\n", 1)[1].strip())
    parsed = []
    for command in commands:
        words = shlex.split(command.replace("\\\n", " "))
        headers, body = {}, None
        for flag, value in itertools.pairwise(words):
            if flag == "-H":
                name, _, text = value.partition(": ")
                headers[name] = text
            elif flag == "-d":
                body = json.loads(value)
        assert body is not None
        parsed.append((headers, body))
    return parsed


def _send(target: McpTarget, headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    headers = {**headers, "Authorization": target.customer.headers["Authorization"]}
    return httpx.post(target.url, content=json.dumps(body), headers=headers, timeout=30)


def test_the_examples_file_holds_all_nine(target: McpTarget) -> None:
    methods = [body["method"] for _headers, body in _examples()]
    assert methods == ["initialize", "tools/list"] + ["tools/call"] * 6 + ["tools/list"]


def test_every_seed_example_works(target: McpTarget) -> None:
    task_ids: dict[str, str] = {}
    for headers, body in _examples():
        if (
            body["method"] == "tools/call"
            and body["params"]["arguments"].get("taskId") == "task_xxx"
        ):
            body["params"]["arguments"]["taskId"] = task_ids["demo-image-001"]
        response = _send(target, headers, body)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        answer = response.json()
        assert answer["jsonrpc"] == "2.0" and answer["id"] == body["id"], answer
        result = answer["result"]
        if body["method"] == "initialize":
            assert result["serverInfo"]["name"] == "gengate"
            assert result["protocolVersion"] == "2025-06-18"
        elif body["method"] == "tools/list":
            names = {t["name"] for t in result["tools"]}
            assert {
                "list_models",
                "generate_image",
                "generate_video",
                "get_generation_status",
            } <= names
        else:
            assert result["isError"] is False, result
            assert payload_text(result) == result["structuredContent"]
            structured = result["structuredContent"]
            if "taskId" in structured and structured.get("state") == "waiting":
                task_ids[headers.get("X-Request-Id", structured["taskId"])] = structured["taskId"]
    # Replaying the idempotent examples returns the same tasks and charges nothing more.
    # Measured once every task has finished: a refund in between would move the balance.
    for task_id in task_ids.values():
        _wait_finished(target, task_id)
    balance = target.call("get_account", {})["structuredContent"]["balance"]
    for headers, body in _examples():
        if "X-Request-Id" in headers:
            result = _send(target, headers, body).json()["result"]
            assert result["structuredContent"]["taskId"] == task_ids[headers["X-Request-Id"]]
    assert target.call("get_account", {})["structuredContent"]["balance"] == balance


def _wait_finished(target: McpTarget, task_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = target.call("get_generation_status", {"taskId": task_id, "wait_seconds": 10})
        if status["structuredContent"]["state"] != "waiting":
            return
    raise AssertionError(f"task {task_id} still waiting after 60 s")


def test_seed_image_task_reaches_success_with_a_real_image(target: McpTarget) -> None:
    headers, body = next(
        (h, b) for h, b in _examples() if h.get("X-Request-Id") == "demo-image-001"
    )
    task_id = _send(target, headers, body).json()["result"]["structuredContent"]["taskId"]
    status = target.call("get_generation_status", {"taskId": task_id, "wait_seconds": 30})
    data = status["structuredContent"]
    assert data["state"] == "success", data
    assert data["costTime"] == data["completeTime"] - data["createTime"]
    url = json.loads(data["resultJson"])["resultUrls"][0]
    image = httpx.get(url, timeout=10)
    assert (
        image.headers["content-type"] == "image/png" and image.content[:8] == b"\x89PNG\r\n\x1a\n"
    )


def test_metadata_without_a_key(target: McpTarget) -> None:
    response = httpx.get(target.url, timeout=10)
    assert response.status_code == 200
    meta = response.json()
    assert meta["name"] == "gengate" and meta["endpoint"] == "/api/mcp"
    assert meta["transport"] == "streamable-http"
    assert {"2025-06-18", "2025-11-25", "2026-07-28"} <= set(meta["protocolVersions"])
    assert meta["auth"]["type"] == "bearer"
    tools = {t["name"]: t["description"] for t in meta["tools"]}
    assert set(tools) == {
        "list_models",
        "generate_image",
        "generate_video",
        "imagine",
        "reimagine",
        "get_generation_status",
        "list_tasks",
        "cancel_task",
        "estimate_cost",
        "get_account",
        "upload_image",
    }
    assert all(tools.values())


def test_both_argument_formats_and_callback_spellings(target: McpTarget) -> None:
    direct = target.call(
        "generate_image",
        {
            "model": "gpt-image-2-text-to-image",
            "prompt": "A clean product photo",
            "aspect_ratio": "1:1",
            "callBackUrl": "https://your-domain.com/webhooks/aigptimage",
        },
    )
    nested = target.call(
        "generate_image",
        {
            "model": "gpt-image-2-text-to-image",
            "input": {"prompt": "A clean product photo", "aspect_ratio": "1:1"},
            "callbackUrl": "https://your-domain.com/webhooks/aigptimage",
        },
    )
    params = []
    for result in (direct, nested):
        assert result["isError"] is False, result
        task_id = result["structuredContent"]["taskId"]
        status = target.call("get_generation_status", {"taskId": task_id})["structuredContent"]
        params.append(json.loads(status["param"]))
    assert params[0] == params[1]
    assert params[0]["callBackUrl"] == "https://your-domain.com/webhooks/aigptimage"


def test_request_id_header_and_argument_are_idempotent(target: McpTarget) -> None:
    args = {"model": "gpt-image-2-text-to-image", "prompt": "same"}
    by_header = [target.call("generate_image", args, X_Request_Id="mcp-1") for _ in range(2)]
    by_argument = [target.call("generate_image", {**args, "request_id": "mcp-2"}) for _ in range(2)]
    for pair in (by_header, by_argument):
        assert pair[0]["structuredContent"]["taskId"] == pair[1]["structuredContent"]["taskId"]
    assert (
        by_header[0]["structuredContent"]["taskId"] != by_argument[0]["structuredContent"]["taskId"]
    )
    clash = target.call("generate_image", {**args, "prompt": "other"}, X_Request_Id="mcp-1")
    assert clash["isError"] is True
    assert (
        clash["structuredContent"]["error"]
        == "X-Request-Id was already used with different parameters"
    )


def test_rest_and_mcp_share_tasks(target: McpTarget) -> None:
    created = target.call(
        "generate_image", {"model": "gpt-image-2-text-to-image", "prompt": "shared"}
    )
    task_id = created["structuredContent"]["taskId"]
    deadline = time.monotonic() + 30
    while True:
        rest = httpx.get(
            target.server.base_url + "/api/v1/jobs/recordInfo",
            params={"taskId": task_id},
            headers=target.customer.headers,
        ).json()["data"]
        if rest["state"] != "waiting" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    mcp = target.call("get_generation_status", {"taskId": task_id})["structuredContent"]
    for field in ("taskId", "state", "createTime", "completeTime", "param", "credits"):
        assert rest[field] == mcp[field]
