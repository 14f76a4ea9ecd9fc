"""`make profile`: where a request's time goes in gengate, endpoint by endpoint, under load.

One gengate uvicorn process on PostgreSQL + Redis (a database and a Redis prefix of its own,
no workers: the request path only). For each endpoint: a short wrk warm-up, then wrk load
while py-spy samples the process. Each profile is written to
bench/results/profiles/<endpoint>.speedscope.json (open it at https://www.speedscope.app);
the summary printed (and kept in summary.json beside them) gives the requests per second
reached under the profiler and the functions and libraries with the most own time.

Own time is the leaf Python frame of each sample. Native frames are off by default, so time in
C code (uvloop, httptools, psycopg's C core, json) counts against the Python frame that
called into it: uvloop's own work shows up as asyncio's `run`, and a garbage collection as
whatever frame happened to trigger it.
"""

from __future__ import annotations

import argparse
import functools
import json
import secrets
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

from bench import db, gengate, loadgen
from bench.__main__ import LOG_DIR, ROOT
from bench.gengate import Gengate
from bench.servers import BIN, BenchError, Server, running

DB_NAME = "gengate_profile"
PROFILE_DIR = Path(__file__).parent / "results" / "profiles"
RATE = 200  # samples per second
TOP_FUNCTIONS = 15
TOP_LIBRARIES = 10
ATTACH_TIMEOUT_S = 10.0
K = TypeVar("K")
STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()

console = Console(width=None if sys.stdout.isatty() else 150)


# --- endpoints ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """What wrk sends: a path on the server, a script of bench/wrk and its arguments."""

    path: str
    script: str
    args: list[str]


@dataclass(frozen=True)
class Endpoint:
    name: str
    title: str
    setup: Callable[[httpx.Client, Path], Load]  # checks one answer, returns the load
    settings: tuple[tuple[str, str], ...] = ()  # the server's environment beside the defaults


def _body_file(work: Path, name: str, body: dict[str, Any]) -> str:
    path = work / f"{name}.json"
    path.write_text(json.dumps(body))
    return str(path)


def _create_task_load(client: httpx.Client, work: Path) -> Load:
    gengate.create_task(client)
    body = _body_file(work, "create", gengate.CREATE_BODY)
    return Load(gengate.CREATE_PATH, "post.lua", [body])


STREAM_TASKS = 500


def _record_info_load(client: httpx.Client, work: Path, *, tasks: int = 1) -> Load:
    """recordInfo over `tasks` new tasks in turn (one: the same task read over and over)."""
    task_ids = [gengate.create_task(client) for _ in range(tasks)]
    gengate.checked_data(client.get(gengate.RECORD_PATH + task_ids[0]), taskId=task_ids[0])
    ids = work / f"record-ids-{tasks}.txt"
    ids.write_text("".join(f"{task_id}\n" for task_id in task_ids))
    return Load("", "get_ids.lua", [str(ids), gengate.RECORD_PATH])


def _mcp_generate_load(client: httpx.Client, work: Path) -> Load:
    gengate.mcp_create_task(client)
    body = _body_file(work, "mcp-generate", gengate.MCP_CREATE_BODY)
    return Load(gengate.MCP_PATH, "post.lua", [body])


def _mcp_status_load(client: httpx.Client, work: Path) -> Load:
    task_id = gengate.mcp_create_task(client)
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "get_generation_status", "arguments": {"taskId": task_id}},
    }
    answer = client.post(gengate.MCP_PATH, json=request)
    try:
        result = answer.json()["result"]
        ok = answer.status_code == 200 and not result.get("isError")
        ok = ok and result["structuredContent"]["taskId"] == task_id
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise BenchError(
            f"get_generation_status answered {answer.status_code}: {answer.text[:500]}"
        )
    body = _body_file(work, "mcp-status", request)
    return Load(gengate.MCP_PATH, "post.lua", [body])


ENDPOINTS = [
    Endpoint("createTask", "POST createTask", _create_task_load),
    Endpoint("recordInfo", "GET recordInfo (one task)", _record_info_load),
    # As the bench's stream phase: answers from memory off, so every read is the database's.
    Endpoint(
        "recordInfoStream",
        "GET recordInfo (a stream of tasks, answers from memory off)",
        functools.partial(_record_info_load, tasks=STREAM_TASKS),
        (("GENGATE_TASK_VIEW_CACHE_SECONDS", "0"),),
    ),
    Endpoint("mcpGenerateImage", "MCP tools/call generate_image", _mcp_generate_load),
    Endpoint("mcpGenerationStatus", "MCP tools/call get_generation_status", _mcp_status_load),
]


# --- py-spy ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpyOptions:
    seconds: int
    rate: int
    gil: bool
    native: bool
    nonblocking: bool


def _py_spy() -> str:
    path = BIN / "py-spy"
    if not path.exists():
        raise BenchError("py-spy is not installed: `make profile` installs the dev extras")
    return str(path)


@contextmanager
def sampling(pid: int, out: Path, opts: SpyOptions, log: Path) -> Iterator[None]:
    """py-spy attached to `pid` for `opts.seconds`; the body runs once it samples."""
    cmd = [_py_spy(), "record", "--pid", str(pid), "--format", "speedscope", "--output", str(out)]
    cmd += ["--rate", str(opts.rate), "--duration", str(opts.seconds), "--full-filenames"]
    if opts.gil:
        cmd.append("--gil")
    if opts.native:
        cmd.append("--native")
    if opts.nonblocking:
        cmd.append("--nonblocking")
    out.unlink(missing_ok=True)
    with log.open("wb") as sink:
        spy = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    try:
        _wait_attached(spy, log)
        yield
        try:
            spy.wait(timeout=opts.seconds + 30)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"py-spy did not finish:\n{log.read_text(errors='replace')}") from exc
        if spy.returncode != 0 or not out.exists():
            raise BenchError(
                f"py-spy exited {spy.returncode}:\n{log.read_text(errors='replace')[-2000:]}"
            )
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait(timeout=10)


def _wait_attached(spy: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + ATTACH_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "Sampling process" in text:
            return
        if spy.poll() is not None:
            hint = ""
            if "permission" in text.lower() or "ptrace" in text.lower():
                hint = (
                    "\npy-spy needs to ptrace the server: run as root or with CAP_SYS_PTRACE "
                    "(or kernel.yama.ptrace_scope=0)"
                )
            raise BenchError(f"py-spy could not attach (exit {spy.returncode}):\n{text}{hint}")
        time.sleep(0.02)
    raise BenchError(f"py-spy did not start sampling within {ATTACH_TIMEOUT_S:.0f} s")


# --- reading a speedscope file -----------------------------------------------------------


def library_of(file: str) -> tuple[str, str]:
    """(library, short file name) for a frame's file as py-spy gives it (full path)."""
    path = file.replace("\\", "/")
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in path:
            short = path.rsplit(marker, 1)[1]
            top = short.split("/", 1)[0]
            return top.removesuffix(".py").split(".", 1)[0], short
    if path.startswith("<frozen "):
        return f"stdlib:{path[8:].split('.', 1)[0].rstrip('>')}", path
    if not path.startswith("/"):
        return "other", path  # <string>, an exec'd snippet
    for base, label in ((ROOT, None), (STDLIB, "stdlib")):
        try:
            short = Path(path).resolve().relative_to(base).as_posix()
        except ValueError:
            continue
        top = short.split("/", 1)[0].removesuffix(".py")
        if label:
            return f"{label}:{top}", short
        ours = {"app": "gengate", "mcp_server": "gengate mcp_server", "bench": "bench"}
        return ours.get(top, "other"), short
    return "other", path


@dataclass
class Summary:
    sampled_s: float  # total weight of all samples (all threads)
    threads: int
    functions: list[tuple[str, str, float]]  # (function, library, own seconds)
    libraries: list[tuple[str, float]]  # (library, own seconds)


def summarize(profile: dict[str, Any], top_functions: int, top_libraries: int) -> Summary:
    """Sum the samples' weights by their leaf frame: per function and per library."""
    frames = profile["shared"]["frames"]
    placed = [library_of(frame.get("file") or "") for frame in frames]
    by_function: dict[tuple[str, str, str], float] = defaultdict(float)
    by_library: dict[str, float] = defaultdict(float)
    total = 0.0
    for thread in profile["profiles"]:
        for stack, weight in zip(thread["samples"], thread["weights"], strict=True):
            total += weight
            if not stack:
                continue
            leaf = stack[-1]  # speedscope stacks run from the root to the leaf
            library, short = placed[leaf]
            by_function[(frames[leaf]["name"], short, library)] += weight
            by_library[library] += weight
    return Summary(
        sampled_s=total,
        threads=len(profile["profiles"]),
        functions=[
            (f"{name} ({short})", library, seconds)
            for (name, short, library), seconds in _largest(by_function, top_functions)
        ],
        libraries=_largest(by_library, top_libraries),
    )


def _largest(weights: dict[K, float], n: int) -> list[tuple[K, float]]:
    return sorted(weights.items(), key=lambda item: item[1], reverse=True)[:n]


def shorten_files(profile: dict[str, Any]) -> None:
    """Frame files relative to their package, the repository or the stdlib: no machine paths."""
    for frame in profile["shared"]["frames"]:
        if frame.get("file"):
            frame["file"] = library_of(frame["file"])[1]


# --- a run -------------------------------------------------------------------------------


def profile_endpoint(
    endpoint: Endpoint, server: Server, gg: Gengate, work: Path, opts: SpyOptions
) -> dict[str, Any]:
    with httpx.Client(base_url=server.url, headers=gg.auth, timeout=10) as client:
        load = endpoint.setup(client, work)
    url = server.url + load.path
    warm = loadgen.run_wrk(url, load.script, load.args, seconds=loadgen.WARMUP_S, headers=gg.auth)
    out = PROFILE_DIR / f"{endpoint.name}.speedscope.json"
    with sampling(server.proc.pid, out, opts, LOG_DIR / f"py-spy-{endpoint.name}.log"):
        raw = loadgen.run_wrk(url, load.script, load.args, seconds=opts.seconds, headers=gg.auth)
    errors = raw["non200"] + raw["socket_errors"] + raw["timeouts"]
    if errors > loadgen.MAX_ERROR_SHARE * max(raw["requests"], 1):
        raise BenchError(
            f"{errors} of {raw['requests']} requests failed at {url}: {raw['sample'] or '-'}"
        )
    profile = json.loads(out.read_text())
    summary = summarize(profile, TOP_FUNCTIONS, TOP_LIBRARIES)
    shorten_files(profile)
    out.write_text(json.dumps(profile))
    seconds = raw["duration_us"] / 1e6
    return {
        "title": endpoint.title,
        "rps": (raw["requests"] - raw["non200"]) / seconds,
        "warmup_rps": (warm["requests"] - warm["non200"]) / (warm["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": errors,
        "seconds": seconds,
        "sampled_s": summary.sampled_s,
        "threads": summary.threads,
        "functions": summary.functions,
        "libraries": summary.libraries,
        "file": str(out.relative_to(ROOT)),
    }


def print_result(name: str, result: dict[str, Any]) -> None:
    total = result["sampled_s"] or 1.0
    console.print(
        f"\n[bold]{name}[/bold]: {result['title']} — {result['rps']:,.0f} req/s under py-spy "
        f"({result['warmup_rps']:,.0f} in the unprofiled warm-up), "
        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms; "
        f"{result['sampled_s']:.1f} s of samples (not idle) in {result['seconds']:.1f} s, "
        f"{result['threads']} thread(s)\n{result['file']}",
        highlight=False,
    )
    libraries = Table("library", "own s", "own %", title="libraries by own time")
    for library, seconds in result["libraries"]:
        libraries.add_row(library, f"{seconds:.2f}", f"{100 * seconds / total:.1f}")
    functions = Table("function", "library", "own s", "own %", title="functions by own time")
    for function, library, seconds in result["functions"]:
        functions.add_row(function, library, f"{seconds:.2f}", f"{100 * seconds / total:.1f}")
    console.print(libraries)
    console.print(functions)


def _drop_database(dbname: str) -> None:
    with psycopg.connect(db.url("postgres"), autocommit=True) as conn:
        name = sql.Identifier(dbname)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def run(chosen: list[Endpoint], opts: SpyOptions) -> bool:
    """Profile each chosen endpoint on one gengate; print and save the summaries."""
    _py_spy()
    loadgen.ensure_wrk()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    redis_prefix = f"profile-{secrets.token_hex(6)}"
    results: dict[str, dict[str, Any]] = {}
    ok = True
    try:
        with tempfile.TemporaryDirectory(prefix="gengate-profile-") as tmp:
            work = Path(tmp)
            (work / "var").mkdir()
            env = gengate.make_env(db.reset_database(DB_NAME), work / "var", redis_prefix)
            gg = gengate.prepare(env)
            for endpoint in chosen:  # a server of its own for each, with its settings
                console.print(f"[bold]{endpoint.title}[/bold] …")
                env = {**gg.with_workers(False), **dict(endpoint.settings)}
                try:
                    with running(
                        "gengate-profile", "app.main:create_app", env, LOG_DIR, factory=True
                    ) as server:
                        results[endpoint.name] = profile_endpoint(endpoint, server, gg, work, opts)
                except BenchError as exc:
                    ok = False
                    console.print(f"[red]{endpoint.name}: {exc}[/red]", highlight=False)
    finally:
        gengate.cleanup_redis(redis_prefix)
        _drop_database(DB_NAME)
    for name, result in results.items():
        print_result(name, result)
    summary_file = PROFILE_DIR / "summary.json"
    # Endpoints not run this time keep their last summary.
    saved = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    summary_file.write_text(json.dumps({**saved, **results}, indent=2) + "\n")
    console.print(
        f"\nwrote {summary_file.relative_to(ROOT)}; open the .speedscope.json files at "
        "https://www.speedscope.app"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    names = [endpoint.name for endpoint in ENDPOINTS]
    parser.add_argument("--endpoint", action="append", choices=names, help="only these")
    parser.add_argument("--seconds", type=int, default=loadgen.DURATION_S, help="load per endpoint")
    parser.add_argument("--rate", type=int, default=RATE, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true", help="only samples holding the GIL")
    parser.add_argument("--native", action="store_true", help="include native (C) frames")
    parser.add_argument(
        "--nonblocking",
        action="store_true",
        help="sample without pausing the server: less overhead, stacks may tear",
    )
    args = parser.parse_args()
    chosen = [e for e in ENDPOINTS if e.name in (args.endpoint or names)]
    opts = SpyOptions(args.seconds, args.rate, args.gil, args.native, args.nonblocking)
    try:
        return 0 if run(chosen, opts) else 1
    except BenchError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
