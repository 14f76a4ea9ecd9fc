"""A webhook receiver for the callbacks phase, run as a process of its own.

`python -m bench.receiver PORT DELAY_S`: every POST is answered 200 after DELAY_S seconds,
and its `webhook-id` is kept with the time it was answered. `GET /stats` tells how many
arrived, how many distinct ids, and when the first and last were answered. Plain asyncio,
so a thousand held requests cost a thousand coroutines, not threads.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

BACKLOG = 4096
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class Stats:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.first_answered_at: float | None = None
        self.last_answered_at: float | None = None

    def answered(self, webhook_id: str) -> None:
        now = time.time()
        self.ids.append(webhook_id)
        self.first_answered_at = self.first_answered_at or now
        self.last_answered_at = now

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "received": len(self.ids),
                "distinct": len(set(self.ids)),
                "first_answered_at": self.first_answered_at,
                "last_answered_at": self.last_answered_at,
            }
        ).encode()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: Stats) -> None:
    delay_s = float(sys.argv[2])
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines if line)
        }
        await reader.readexactly(int(headers.get("content-length") or 0))
        if request_line.startswith("GET /stats"):
            body = stats.as_json()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body))
            writer.write(b"Content-Type: application/json\r\nConnection: close\r\n\r\n" + body)
        else:
            await asyncio.sleep(delay_s)
            stats.answered(headers.get("webhook-id", ""))
            writer.write(OK)
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    stats = Stats()
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, stats), "127.0.0.1", int(sys.argv[1]), backlog=BACKLOG
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
