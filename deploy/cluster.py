"""`make cluster`: the scaled-out topology on one machine, without containers.

Two API processes and two `gengate worker` processes on the PostgreSQL and Redis named by
GENGATE_DATABASE_URL and GENGATE_REDIS_URL (given, not started), HAProxy from the system's
packages in front of the API processes, and, when no bucket is configured, an S3-compatible
server (moto) for the media they share. It migrates the database first (the migration job),
creates the development key as `make run` does (var/dev-api-key), prints
`cluster ready: http://HOST:PORT` once every part answers, and stops everything it started on
Ctrl-C or SIGTERM. Each part's output goes to var/cluster/<part>.log.

Settings (environment): GENGATE_HOST / GENGATE_PORT where the load balancer listens
(127.0.0.1:8000); every other GENGATE_* setting reaches each process unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
# The CLI of this checkout (not whichever `gengate` is first on PATH).
GENGATE = [sys.executable, "-m", "app.cli"]
API_PROCESSES = 2
WORKER_PROCESSES = 2
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
S3_BUCKET = "gengate-media"


class ClusterError(Exception):
    """Something the operator must fix; printed without a traceback."""


@dataclass
class Part:
    """One process of the cluster, its log and how to tell it is up."""

    name: str
    argv: list[str]
    ready: Callable[[], Awaitable[bool]]
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None

    def log_path(self, log_dir: Path) -> Path:
        return log_dir / f"{self.name}.log"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def answers(url: str, *, status: int = 200) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            return (await client.get(url)).status_code == status
    except httpx.HTTPError:
        return False


def logged(log: Path, text: str) -> Callable[[], Awaitable[bool]]:
    def seen() -> bool:
        return log.exists() and text in log.read_text(errors="replace")

    async def check() -> bool:
        return await asyncio.to_thread(seen)

    return check


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    database_url = env.get("GENGATE_DATABASE_URL", "")
    if not database_url.startswith("postgresql"):
        raise ClusterError(
            "GENGATE_DATABASE_URL must name a PostgreSQL database (postgresql://...): the "
            "processes of a cluster share it"
        )
    if not env.get("GENGATE_REDIS_URL"):
        raise ClusterError(
            "GENGATE_REDIS_URL must name a Redis (redis://...): the processes of a cluster "
            "share rate limits and wake-ups through it"
        )
    if shutil.which("haproxy") is None:
        raise ClusterError("haproxy is not installed: apt-get install haproxy")
    env.setdefault("GENGATE_VAR_DIR", str(ROOT / "var"))
    env["GENGATE_WORKERS_IN_PROCESS"] = "false"
    return env


def haproxy_config(host: str, port: int, api_ports: list[int]) -> str:
    servers = "\n".join(
        f"  server api{i} 127.0.0.1:{p} check inter 1s fall 2 rise 1"
        for i, p in enumerate(api_ports, 1)
    )
    return f"""global
  maxconn 4096

defaults
  mode http
  option httplog
  timeout connect 5s
  timeout client 120s
  timeout server 120s

frontend gengate
  bind {host}:{port}
  default_backend api

backend api
  balance roundrobin
  option httpchk GET /readyz
  retry-on conn-failure empty-response response-timeout
{servers}
"""


class Cluster:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.host = env.get("GENGATE_HOST", "127.0.0.1")
        self.port = int(env.get("GENGATE_PORT", "8000"))
        self.dir = Path(env["GENGATE_VAR_DIR"]) / "cluster"
        self.parts: list[Part] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def run(self, stop: asyncio.Event) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.env.get("GENGATE_S3_BUCKET"):
            await self._start_s3()
        await self._prepare()
        api_ports = [free_port() for _ in range(API_PROCESSES)]
        for i, port in enumerate(api_ports, 1):
            argv = [*GENGATE, "serve", "--host", "127.0.0.1", "--port", str(port)]
            await self._start(
                Part(f"api{i}", argv, lambda p=port: answers(f"http://127.0.0.1:{p}/readyz"))
            )
        for i in range(1, WORKER_PROCESSES + 1):
            log = self.dir / f"worker{i}.log"
            await self._start(Part(f"worker{i}", [*GENGATE, "worker"], logged(log, "started")))
        config = self.dir / "haproxy.cfg"
        config.write_text(haproxy_config(self.host, self.port, api_ports))
        argv = [shutil.which("haproxy") or "haproxy", "-db", "-f", str(config)]
        await self._start(Part("haproxy", argv, lambda: answers(f"{self.url}/readyz")))
        await self._wait_ready(stop)
        print(f"cluster ready: {self.url}", flush=True)
        print(f"  API processes on 127.0.0.1:{', '.join(map(str, api_ports))}; logs in {self.dir}")
        await self._watch(stop)

    async def _start_s3(self) -> None:
        """moto's S3 server on a free port, with the bucket the processes share."""
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        await self._start(Part("s3", argv, lambda: answers(f"{endpoint}/moto-api/")))
        await self._until(lambda: answers(f"{endpoint}/moto-api/"), "the S3 server")
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
            created = await client.put(f"{endpoint}/{S3_BUCKET}")
            if created.status_code != 200:
                raise ClusterError(f"could not create the S3 bucket: {created.status_code}")
        self.env.update(
            {
                "GENGATE_MEDIA_BACKEND": "s3",
                "GENGATE_S3_BUCKET": S3_BUCKET,
                "GENGATE_S3_ENDPOINT_URL": endpoint,
                "GENGATE_S3_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "cluster",
                "AWS_SECRET_ACCESS_KEY": "cluster",
            }
        )

    async def _prepare(self) -> None:
        """The migration job, then the development key (and, in development, the signing
        secret every process shares), before any process serves."""
        migrate = await asyncio.create_subprocess_exec(
            *GENGATE, "db", "upgrade", env=self.env, cwd=ROOT
        )
        if await migrate.wait() != 0:
            raise ClusterError("the migration failed (see above)")
        if self.env.get("GENGATE_ENV", "development") == "development":
            prepare = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "deploy.dev_key", env=self.env, cwd=ROOT
            )
            if await prepare.wait() != 0:
                raise ClusterError("could not create the development key (see above)")

    async def _start(self, part: Part) -> None:
        log = part.log_path(self.dir).open("wb")
        part.process = await asyncio.create_subprocess_exec(
            *part.argv,
            env={**self.env, **part.env},
            cwd=ROOT,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop the parts in order
        )
        log.close()
        self.parts.append(part)

    async def _wait_ready(self, stop: asyncio.Event) -> None:
        for part in self.parts:
            await self._until(part.ready, part.name, stop=stop)

    async def _until(
        self,
        check: Callable[[], Awaitable[bool]],
        what: str,
        *,
        stop: asyncio.Event | None = None,
    ) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not await check():
            self._raise_if_exited()
            if stop is not None and stop.is_set():
                raise ClusterError("stopped before the cluster was ready")
            if time.monotonic() > deadline:
                raise ClusterError(f"{what} did not answer within {READY_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.2)

    def _raise_if_exited(self) -> None:
        for part in self.parts:
            if part.process is not None and part.process.returncode is not None:
                tail = part.log_path(self.dir).read_text(errors="replace")[-2000:]
                raise ClusterError(
                    f"{part.name} exited with status {part.process.returncode}:\n{tail}"
                )

    async def _watch(self, stop: asyncio.Event) -> None:
        """Until Ctrl-C / SIGTERM; a part that exits on its own ends the cluster."""
        while not stop.is_set():
            self._raise_if_exited()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)

    async def stop(self) -> None:
        """SIGTERM every part, newest first (the load balancer, then the processes behind
        it), and SIGKILL what has not exited in time."""
        for part in reversed(self.parts):
            process = part.process
            if process is None or process.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        print("cluster stopped", flush=True)


async def main() -> int:
    try:
        cluster = Cluster(base_env())
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await cluster.run(stop)
        return 0
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        await cluster.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
