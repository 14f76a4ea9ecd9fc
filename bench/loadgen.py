"""Drive `wrk` (2 threads, 32 connections) and read the JSON line its Lua `done()` prints."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.servers import BenchError

LUA_DIR = Path(__file__).parent / "wrk"
THREADS = 2
CONNECTIONS = 32
WARMUP_S = 2
DURATION_S = 10
MAX_ERROR_SHARE = 0.01


def ensure_wrk() -> str:
    """Return wrk's path, installing the Debian package when it is missing (we are root)."""
    found = shutil.which("wrk")
    if found:
        return found
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk is not installed and `apt-get install -y wrk` did not install it")
    return found


def run_wrk(
    url: str,
    script: str,
    args: list[str],
    *,
    seconds: int,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run wrk once and return the raw counters of `bench/wrk/common.lua`."""
    cmd = [ensure_wrk(), f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "10s"]
    for name, value in (headers or {}).items():
        cmd += ["-H", f"{name}: {value}"]
    cmd += ["-s", str(LUA_DIR / script), url, "--", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            raw: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            return raw
    raise BenchError(f"wrk printed no result (exit {done.returncode}):\n{done.stdout}{done.stderr}")


def load(
    url: str, script: str, args: list[str], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Warm up, then measure; fail loudly when more than 1% of the answers are not 200."""
    run_wrk(url, script, args, seconds=WARMUP_S, headers=headers)
    raw = run_wrk(url, script, args, seconds=DURATION_S, headers=headers)
    seconds = raw["duration_us"] / 1e6
    errors = raw["non200"] + raw["socket_errors"] + raw["timeouts"]
    total = max(raw["requests"], 1)
    if errors / total > MAX_ERROR_SHARE:
        raise BenchError(
            f"{errors} of {raw['requests']} requests failed ({raw['non200']} not 200, "
            f"{raw['socket_errors']} socket errors, {raw['timeouts']} timeouts) at {url}; "
            f"sample answer: {raw['sample'] or '(none)'}"
        )
    return {
        "rps": (raw["requests"] - raw["non200"]) / seconds,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": errors,
        "requests": raw["requests"],
        "seconds": seconds,
    }
