"""A private redis-server a test can kill and start again, and a way to read a logger."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis.exceptions
from redis.asyncio import Redis

from tests.faults.conftest import Records
from tests.support.apps import eventually
from tests.support.faultproxy import _free_port


class RedisServer:
    """`redis-server` on a spare port of its own (never the shared one), without persistence,
    so a restart comes back empty, as after a crash."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is needed (the suite's CI installs it)"
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self._process = subprocess.Popen(
            argv, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        async with Redis.from_url(self.url) as client:

            async def answers() -> bool:
                assert self._process is not None and self._process.poll() is None, "it exited"
                try:
                    return bool(await client.ping())  # type: ignore[misc]
                except redis.exceptions.ConnectionError:
                    return False  # still starting

            await eventually(answers, within_s=15, what="redis-server to answer PING")

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would; returns once the process is gone."""
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        self._process.wait(timeout=10)
        self._process = None

    def stop(self) -> None:
        if self._process is not None:
            self.kill()


@contextmanager
def logged(name: str) -> Iterator[Records]:
    """What `name`'s logger writes at INFO and above while the block runs."""
    records = Records()
    logger = logging.getLogger(name)
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)


async def limit_keys(redis: Redis, prefix: str) -> list[bytes]:
    """The rate limiter's counters in Redis under a test's key prefix."""
    return [key async for key in redis.scan_iter(match=f"{prefix}:limits*")]
