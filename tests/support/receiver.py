"""A webhook receiver on loopback that records every request and answers as told."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay_s: float = 0.0  # a slow (or hanging) receiver


@dataclass
class Receiver:
    url: str
    received: list[Received]
    # Decides each answer from the request and how many came before it on the same path.
    answer: Callable[[Received, int], Answer]

    def on(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


@contextmanager
def receiving(
    answer: Callable[[Received, int], Answer] | None = None, *, host: str = "127.0.0.1"
) -> Iterator[Receiver]:
    """A receiver on `host` (a loopback address); yields it with its base URL (answers 200
    unless told). Two receivers on different hosts stand for two unrelated receivers."""
    lock = threading.Lock()
    receiver = Receiver("", [], answer or (lambda _request, _before: Answer()))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = Received(
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length),
                time.time(),
            )
            with lock:
                before = len(receiver.on(self.path))
                receiver.received.append(request)
            reply = receiver.answer(request, before)
            if reply.delay_s:
                time.sleep(reply.delay_s)
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except OSError:
                pass  # the sender gave up waiting

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://{host}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
