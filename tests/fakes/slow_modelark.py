"""A fake ModelArk that answers every request after a delay (50 ms by default), for polling
throughput: thousands of upstream tasks held at once and polled by one worker.

The answers are the ones of tests/fakes/modelark.py (`FakeModelArk` decides them); only the
serving differs. One asyncio loop in a thread of its own serves keep-alive HTTP/1.1, so a few
hundred requests waiting out their delay cost coroutines, not threads, and the delay is the
only thing a poll waits for.

| request                                   | answer (after the delay)                         |
|-------------------------------------------|--------------------------------------------------|
| `GET .../tasks/{id}` of a held task       | as `FakeModelArk`: queued -> running -> the      |
|                                           | script's outcome; the poll's arrival and answer  |
|                                           | times are recorded (`polls`)                     |
| `GET .../tasks/{id}`, unknown id          | 404, or with `adopt_unknown` a new held task     |
| anything else (POST, DELETE, the video)   | as `FakeModelArk` (kept in `requests`)           |
| `GET /fake/stats`                         | at once: poll counts as JSON, for another process|

Switches: `hold(count)` registers held tasks (as if created earlier) and returns their ids,
for tests that put the matching rows in the database themselves; `adopt_unknown` does the
same for any id polled, for a fake in another process (the bench); `script` as in the base.
Polls are not added to `requests`, so that a long run does not grow it.

Run it alone: `python -m tests.fakes.slow_modelark --port 8791 --delay 0.05 --adopt`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from tests.fakes.modelark import (
    DEFAULT_KEY,
    TASKS_PATH,
    FakeModelArk,
    FakeTask,
    Script,
)
from tests.fakes.serving import Request

STATS_PATH = "/fake/stats"
DEFAULT_DELAY_S = 0.05
_HELD_BODY = {"model": "seedance-2-0-pro", "content": [{"type": "text", "text": "held"}]}
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}


@dataclass(frozen=True)
class Poll:
    """One GET of a task: when it arrived and when it was answered (epoch seconds)."""

    arrived_at: float
    answered_at: float


class SlowModelArk(FakeModelArk):
    def __init__(self, api_key: str, *, delay_s: float = DEFAULT_DELAY_S) -> None:
        super().__init__(api_key)
        self.delay_s = delay_s
        self.adopt_unknown = False
        self.polls: dict[str, list[Poll]] = {}
        self.poll_count = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def hold(self, count: int, *, prefix: str = "cgt-held-") -> list[str]:
        """Register `count` tasks the upstream holds (each in the current script's hands)."""
        ids = [prefix + secrets.token_hex(8) for _ in range(count)]
        with self._lock:
            for task_id in ids:
                self.tasks[task_id] = FakeTask(id=task_id, body=_HELD_BODY, script=self.script)
        return ids

    def stats(self) -> dict[str, int]:
        with self._lock:
            finished = sum(1 for t in self.tasks.values() if t.status not in ("queued", "running"))
            return {
                "polls": self.poll_count,
                "tasks": len(self.tasks),
                "finished": finished,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
            }

    async def serve(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        """Answer `request` after the delay, recording it when it is a poll."""
        if request.path == STATS_PATH:
            return 200, {"Content-Type": "application/json"}, json.dumps(self.stats()).encode()
        arrived_at = time.time()
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            with self._lock:
                self.in_flight -= 1
        task_id = _polled_task(request)
        if task_id is None:
            return self.handle(request)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._auth_refusal(request)
        with self._lock:
            if task_id not in self.tasks and self.adopt_unknown:
                self.tasks[task_id] = FakeTask(id=task_id, body=_HELD_BODY, script=self.script)
            self.poll_count += 1
            self.polls.setdefault(task_id, []).append(Poll(arrived_at, time.time()))
        return self._get(task_id)


def _polled_task(request: Request) -> str | None:
    prefix = TASKS_PATH + "/"
    if request.method != "GET" or not request.path.startswith(prefix):
        return None
    return request.path.removeprefix(prefix)


async def _connection(
    fake: SlowModelArk, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Serve the requests of one keep-alive connection, one after the other."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _version = request_line.split(" ", 2)
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines if line)
            }
            length = int(headers.get("content-length") or 0)
            body = await reader.readexactly(length) if length else b""
            path, _, query = target.partition("?")
            request = Request(method, path, dict(urllib.parse.parse_qsl(query)), headers, body)
            status, extra, payload = await fake.serve(request)
            closing = headers.get("connection", "").lower() == "close"
            head_lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
            head_lines += [f"{name}: {value}" for name, value in extra.items()]
            head_lines.append(f"Content-Length: {len(payload)}")
            if closing:
                head_lines.append("Connection: close")
            writer.write(("\r\n".join(head_lines) + "\r\n\r\n").encode("latin-1") + payload)
            await writer.drain()
            if closing:
                return
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass  # the client closed the connection, or sent something that is not HTTP
    finally:
        writer.close()


@contextmanager
def running_slow_modelark(
    api_key: str = DEFAULT_KEY,
    *,
    delay_s: float = DEFAULT_DELAY_S,
    script: Script | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[SlowModelArk]:
    """The fake on `host` in a thread of its own, with its `base_url` set; stopped on exit."""
    fake = SlowModelArk(api_key, delay_s=delay_s)
    if script is not None:
        fake.script = script
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Future[None] = loop.create_future()
    failure: list[BaseException] = []

    connections: set[asyncio.Task[None]] = set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            await _connection(fake, reader, writer)
        except asyncio.CancelledError:
            pass  # the fake is stopping (a task of ours, ended by us)
        finally:
            connections.discard(task)

    async def main() -> None:
        try:
            server = await asyncio.start_server(connected, host, port, backlog=4096)
        except OSError as exc:
            failure.append(exc)
            started.set()
            return
        fake.base_url = f"http://{host}:{server.sockets[0].getsockname()[1]}"
        started.set()
        await stop
        server.close()
        # Kept-alive connections end here, not when their clients close them.
        for task in list(connections):
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        await server.wait_closed()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait()
    if failure:
        thread.join()
        loop.close()
        raise failure[0]
    try:
        yield fake
    finally:
        loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(timeout=5)
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--api-key", default=DEFAULT_KEY)
    parser.add_argument("--delay", type=float, default=DEFAULT_DELAY_S, help="seconds")
    parser.add_argument("--adopt", action="store_true", help="hold any task id polled")
    parser.add_argument(
        "--queued-polls", type=int, default=1, help="polls a task stays queued before it runs"
    )
    args = parser.parse_args()
    script = Script(queued_polls=args.queued_polls)
    with running_slow_modelark(
        args.api_key, delay_s=args.delay, script=script, host=args.host, port=args.port
    ) as fake:
        fake.adopt_unknown = args.adopt
        print(f"slow fake ModelArk at {fake.base_url}", flush=True)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
