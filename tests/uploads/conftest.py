"""Upload fixtures: small limits, and a public URL that would record any fetch of our own."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from PIL import Image

MAX_BYTES = 300_000
MAX_PIXELS = 4_000_000


@dataclass
class Recorder:
    """A loopback TCP listener that counts connections: gengate must never open one."""

    url: str
    connections: list[bytes] = field(default_factory=list)


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    recorder = Recorder(url="")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        recorder.connections.append(await reader.read(200))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    recorder.url = f"http://127.0.0.1:{port}"
    async with server:
        yield recorder


@pytest.fixture
def settings_env(settings_env: dict[str, str], recorder: Recorder) -> dict[str, str]:
    # Our URLs name a loopback address, as a development server's do; private URLs stay
    # refused (the default), so only recognising them as our own can make them work.
    return {
        **settings_env,
        "GENGATE_PUBLIC_URL": recorder.url,
        "GENGATE_UPLOAD_MAX_BYTES": str(MAX_BYTES),
        "GENGATE_UPLOAD_MAX_PIXELS": str(MAX_PIXELS),
    }


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 48), **save: object) -> bytes:
    image = Image.new("RGB", size, (200, 40, 90))
    for x in range(0, size[0], 4):
        image.putpixel((x, x % size[1]), (10, 220, 30))
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return out.getvalue()
