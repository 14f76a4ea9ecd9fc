"""A fake OpenAI Images API on loopback: real HTTP, real images, and its failure answers.

It speaks `POST /v1/images/generations` (JSON) and `POST /v1/images/edits` (multipart) as
OpenAI documents them, checks the bearer key and the parameters, renders an image of the
asked size and format with Pillow, and records every request. `mode` switches it to one of
the failure answers a real upstream gives.
"""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio.to_thread
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Mode = Literal[
    "ok",
    "moderation_blocked",
    "bad_request",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "server_error",
    "gateway_timeout",
    "malformed_json",
    "not_json",
    "no_image",
    "hang",
]

SIZES = {"1024x1024": (1024, 1024), "1536x1024": (1536, 1024), "1024x1536": (1024, 1536)}
QUALITIES = ("low", "medium", "high", "auto")
FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
USAGE = {
    "input_tokens": 50,
    "input_tokens_details": {"image_tokens": 40, "text_tokens": 10},
    "output_tokens": 1056,
    "total_tokens": 1106,
}


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]
    fields: dict[str, Any]  # the JSON body, or the multipart form's text fields
    images: list[Upload] = field(default_factory=list)


@dataclass
class FakeOpenAIImages:
    api_key: str
    base_url: str = ""
    mode: Mode = "ok"
    retry_after: str | None = "7"
    # Replaces the text of a `bad_request` answer (a proxy that echoes the request, say).
    bad_request_message: str = "Invalid value: 'prompt' is too long."
    requests: list[Recorded] = field(default_factory=list)
    # Released when the fake stops, so a hanging answer never outlives its test.
    release: threading.Event = field(default_factory=threading.Event)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/images/generations", self._generations, methods=["POST"]),
                Route("/v1/images/edits", self._edits, methods=["POST"]),
            ]
        )

    async def _generations(self, request: Request) -> Response:
        try:
            fields = await request.json()
        except ValueError:
            return _error(400, "invalid_request_error", None, "the body is not JSON")
        return await self._answer(request, fields, [])

    async def _edits(self, request: Request) -> Response:
        form = await request.form()
        fields: dict[str, Any] = {}
        images: list[Upload] = []
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name in ("image", "image[]"):
                    images.append(
                        Upload(value.filename or "", value.content_type or "", await value.read())
                    )
            else:
                fields[name] = value
        if "n" in fields:
            fields["n"] = int(fields["n"])
        return await self._answer(request, fields, images)

    async def _answer(
        self, request: Request, fields: dict[str, Any], images: list[Upload]
    ) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Recorded(request.url.path, headers, fields, images))
        if self.mode == "hang":
            # The whole body has arrived: what a timeout now leaves behind is ambiguous.
            await anyio.to_thread.run_sync(self.release.wait)
        if headers.get("authorization") != f"Bearer {self.api_key}" or self.mode == "unauthorized":
            # Like OpenAI, the answer echoes the key it got: the adapter must not repeat it.
            given = headers.get("authorization", "").removeprefix("Bearer ")
            return _error(
                401,
                "invalid_request_error",
                "invalid_api_key",
                f"Incorrect API key provided: {given}.",
            )
        failure = self._failure()
        if failure is not None:
            return failure
        problem = _check(fields, images)
        if problem is not None:
            return _error(400, "invalid_request_error", "invalid_value", problem)
        width, height = SIZES.get(str(fields.get("size", "auto")), (1024, 1024))
        fmt = str(fields.get("output_format", "png"))
        body = _render(width, height, fmt, fields["prompt"])
        data = [] if self.mode == "no_image" else [{"b64_json": base64.b64encode(body).decode()}]
        return JSONResponse(
            {
                "created": int(time.time()),
                "data": data,
                "size": f"{width}x{height}",
                "quality": fields.get("quality", "medium"),
                "output_format": fmt,
                "usage": USAGE,
            }
        )

    def _failure(self) -> Response | None:
        mode = self.mode
        if mode == "moderation_blocked":
            return _error(
                400,
                "image_generation_user_error",
                "moderation_blocked",
                "Your request was rejected as a result of our safety system.",
            )
        if mode == "bad_request":
            return _error(
                400,
                "invalid_request_error",
                "invalid_value",
                self.bad_request_message,
            )
        if mode == "forbidden":
            return _error(403, "invalid_request_error", None, "Project does not have access.")
        if mode == "rate_limited":
            headers = {"retry-after": self.retry_after} if self.retry_after else {}
            return _error(429, "requests", "rate_limit_exceeded", "Rate limit reached.", headers)
        if mode == "server_error":
            return _error(500, "server_error", None, "The server had an error.")
        if mode == "gateway_timeout":
            return Response("upstream timed out", status_code=504, media_type="text/plain")
        if mode == "malformed_json":
            return Response(
                '{"created": 1, "data": [{"b64_json": "iVBO', media_type="application/json"
            )
        if mode == "not_json":
            return Response("<html>maintenance</html>", media_type="text/html")
        return None


def _check(fields: dict[str, Any], images: list[Upload]) -> str | None:
    """The parameter rules of the documented API that the adapter must respect."""
    if not fields.get("model"):
        return "Missing required parameter: 'model'."
    if not fields.get("prompt"):
        return "Missing required parameter: 'prompt'."
    if fields.get("n", 1) != 1:
        return f"Invalid value for 'n': {fields.get('n')!r}; this fake makes one image."
    if fields.get("size", "auto") not in (*SIZES, "auto"):
        return f"Invalid value: {fields.get('size')!r}. Supported values are: {', '.join(SIZES)}."
    if fields.get("quality", "auto") not in QUALITIES:
        return f"Invalid value for 'quality': {fields.get('quality')!r}."
    if fields.get("output_format", "png") not in FORMATS:
        return f"Invalid value for 'output_format': {fields.get('output_format')!r}."
    for image in images:
        try:
            Image.open(io.BytesIO(image.data)).verify()
        except Exception:
            return f"Invalid image file {image.filename!r}."
    return None


def _render(width: int, height: int, fmt: str, prompt: str) -> bytes:
    shade = sum(prompt.encode()) % 200
    image = Image.new("RGB", (width, height), (shade, 90, 160))
    buffer = io.BytesIO()
    image.save(buffer, format=FORMATS[fmt])
    return buffer.getvalue()


def _error(
    status: int,
    kind: str,
    code: str | None,
    message: str,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


@contextmanager
def running_fake(api_key: str) -> Iterator[FakeOpenAIImages]:
    """The fake on a free loopback port, for as long as the block runs."""
    fake = FakeOpenAIImages(api_key)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(fake.app(), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake OpenAI server did not start")
        time.sleep(0.01)
    fake.base_url = f"http://127.0.0.1:{port}/v1"
    try:
        yield fake
    finally:
        fake.release.set()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
