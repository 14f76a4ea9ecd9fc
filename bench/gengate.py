"""gengate under test: its environment, a migrated database, one unlimited API key."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.servers import BIN, BenchError

MODEL = "gpt-image-2-text-to-image"
CREATE_BODY = {"model": MODEL, "input": {"prompt": "a benchmark", "aspect_ratio": "1:1"}}
CREATE_PATH = "/api/v1/jobs/createTask"
MCP_PATH = "/api/mcp"
# generate_image over MCP with the same model and prompt; no Accept header: a plain JSON answer.
MCP_CREATE_BODY = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "generate_image", "arguments": CREATE_BODY},
}
RECORD_PATH = "/api/v1/jobs/recordInfo?taskId="
# The Redis every gengate under test uses (the callbacks stage: see bench/callbacks.py); keys
# go under a prefix of the run's own either way.
REDIS_URL = os.environ.get("BENCH_REDIS_URL") or "redis://127.0.0.1:6379/0"
TIERS = {
    "unlimited": {
        "create_per_minute": 1_000_000_000,
        "query_per_minute": 1_000_000_000,
        "max_active_tasks": 1_000_000_000,
    }
}


@dataclass(frozen=True)
class Gengate:
    """One prepared gengate database and the key that may use it."""

    env: dict[str, str]
    api_key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def with_workers(self, in_process: bool) -> dict[str, str]:
        return {**self.env, "GENGATE_WORKERS_IN_PROCESS": "true" if in_process else "false"}


def make_env(db_url: str, var_dir: Path, redis_prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "GENGATE_ENV": "production",
        "GENGATE_SIGNING_SECRET": secrets.token_urlsafe(36),  # 48 characters
        "GENGATE_DATABASE_URL": db_url,
        "GENGATE_REDIS_URL": REDIS_URL,
        "GENGATE_REDIS_PREFIX": redis_prefix,
        "GENGATE_VAR_DIR": str(var_dir),
        "GENGATE_TIERS": json.dumps(TIERS),
        "GENGATE_WORKERS_IN_PROCESS": "false",
    }


def _cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(BIN / "gengate"), "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"gengate {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def prepare(env: dict[str, str]) -> Gengate:
    """Migrate the (fresh) database and create an account with an unlimited key."""
    _cli(env, "db", "upgrade")
    account = _cli(env, "accounts", "create", "--name", "bench", "--credits", "1000000000")
    key = _cli(env, "keys", "create", "--account", account["id"], "--tier", "unlimited")
    return Gengate(env=env, api_key=key["key"])


def checked_data(answer: httpx.Response, **expected: str) -> dict[str, Any]:
    """The `data` of a 200 envelope, checked against `expected`; BenchError otherwise."""
    try:
        body = answer.json()
        data: dict[str, Any] = body["data"]
        ok = answer.status_code == 200 and body["code"] == 200
        ok = ok and all(data.get(k) == v for k, v in expected.items())
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        what = f"{answer.request.method} {answer.request.url.path}"
        raise BenchError(f"{what} answered {answer.status_code}: {answer.text[:500]}")
    return data


def create_task(client: httpx.Client) -> str:
    """createTask with the bench body; BenchError unless a waiting task came back."""
    answer = client.post(CREATE_PATH, json=CREATE_BODY)
    task_id: str = checked_data(answer, state="waiting")["taskId"]
    return task_id


def mcp_create_task(client: httpx.Client) -> str:
    """generate_image over MCP, without an Accept header; BenchError unless a task came back."""
    answer = client.post(MCP_PATH, json=MCP_CREATE_BODY)
    try:
        result = answer.json()["result"]
        task_id: str = result["structuredContent"]["taskId"]
        ok = answer.status_code == 200 and not result.get("isError")
        ok = ok and result["structuredContent"].get("state") == "waiting"
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise BenchError(f"POST {MCP_PATH} answered {answer.status_code}: {answer.text[:500]}")
    return task_id


def cleanup_redis(prefix: str, *, url: str = REDIS_URL) -> None:
    """Delete the keys a run left under `prefix` (in the Redis at `url`)."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
