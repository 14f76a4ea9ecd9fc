"""A TCP proxy that a test can cut and restore, to play a database or Redis outage.

`cut()` closes every proxied connection (both ends, with a reset) and stops listening, so
new connections are refused, as when the server is down or restarting. `stall()` keeps
every connection open and accepts new ones, but nothing passes any more: a server that
hangs. `restore()` resets what a stall held and forwards again on the same port. The
proxy runs on the test's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

_CHUNK = 64 * 1024


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = _free_port()
        self._server: asyncio.Server | None = None
        self._stalled = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self.connections = 0  # accepted since start, to show traffic really went through

    @property
    def open_connections(self) -> int:
        """Client and upstream ends held open now (while stalled: the clients waiting)."""
        return len(self._writers)

    @property
    def is_cut(self) -> bool:
        return self._server is None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )

    async def restore(self) -> None:
        if self._stalled:
            self._stalled = False
            for writer in list(self._writers):  # every connection is held while stalled
                _reset(writer)
            self._writers.clear()
        if self._server is None:
            await self.start()

    async def stall(self) -> None:
        self._stalled = True
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def cut(self) -> None:
        self._stalled = False
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def close(self) -> None:
        await self.cut()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just as the cut began
            _reset(client_w)
            return
        if self._stalled:
            self._writers.add(client_w)  # held silent until a cut or restore resets it
            return
        try:
            upstream_r, upstream_w = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            _reset(client_w)
            return
        self.connections += 1
        self._writers.update((client_w, upstream_w))
        pipes = [
            asyncio.create_task(_pipe(client_r, upstream_w)),
            asyncio.create_task(_pipe(upstream_r, client_w)),
        ]
        self._pipes.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
                self._pipes.discard(pipe)
            # While stalled the connection stays open and silent until a cut or restore.
            if not self._stalled:
                for writer in (client_w, upstream_w):
                    self._writers.discard(writer)
                    with contextlib.suppress(Exception):
                        writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(Exception):
        writer.write_eof()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a reset (SO_LINGER 0), as a crashed server's kernel would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
