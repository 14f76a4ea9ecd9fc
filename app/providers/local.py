"""The offline `local` provider: renders real media on this machine, no network needed.

Renders are deterministic, so a resubmission after a crash yields the same files: the
idempotency the protocol asks for comes for free.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

from app.core.config import Settings
from app.providers.base import Completed, Failed, Outcome, Output, ProgressReporter, ProviderJob
from app.providers.inputs import InputReader
from app.providers.local_art import check_quality
from app.providers.local_render import (
    render_image_to_image,
    render_text_to_image,
    size_for,
    upscale_image,
)

_DIRECTIVE = re.compile(r"\[\[(fail|delay):([a-z_0-9]+)\]\]")
_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


class LocalProvider:
    name = "local"
    # Rendering again makes the same result and costs nothing upstream.
    idempotent_submit = True

    def __init__(self, settings: Settings, inputs: InputReader) -> None:
        self._settings = settings
        self._inputs = inputs

    async def submit(self, job: ProviderJob, *, report: ProgressReporter) -> Outcome:
        prompt = str(job.input.get("prompt", ""))
        delay_ms = self._settings.local_delay_ms
        if self._settings.local_fault_injection:
            for kind, value in _DIRECTIVE.findall(prompt):
                if kind == "fail":
                    return Failed(value, f"injected failure: {value}")
                delay_ms += int(value) if value.isdigit() else 0
        await report(5)
        if delay_ms:
            # Simulates upstream latency (for demos and crash tests); not a test sleep.
            await asyncio.sleep(delay_ms / 1000)
        urls = job.input.get("input_urls") or job.input.get("image_urls") or []
        sources = await self._inputs.read(urls, job.task_id)
        if isinstance(sources, Failed):
            return sources
        await report(30)
        try:
            output = await asyncio.to_thread(_render, job.scene, job.input, sources)
        except ValueError as exc:
            return Failed("invalid_input", str(exc))
        return Completed([output])

    async def poll(self, job: ProviderJob, upstream_id: str) -> Outcome:
        # Local jobs finish inside submit; a poll means a crash between the two: redo it.
        return await self.submit(job, report=_ignore_progress)

    async def cancel(self, upstream_id: str) -> bool:
        return False  # nothing runs outside the worker that holds the task

    async def aclose(self) -> None:
        return None


async def _ignore_progress(_progress: int) -> None:
    return None


def _render(scene: str, params: Mapping[str, Any], sources: list[bytes]) -> Output:
    """The CPU-bound part, run in a worker thread.

    Every input the price depends on (resolution, quality, scale, duration, generate_audio)
    must change what is rendered; tests/providers/test_priced_inputs.py holds us to that.
    """
    kind = scene.lower()
    if "video" in kind:
        return _render_video(params, sources)
    fmt = str(params.get("output_format", "png"))
    if kind == "upscale":
        factor = 4 if int(params.get("scale", 2)) == 4 else 2
        data = upscale_image(sources[0], factor=factor, output_format=fmt)  # type: ignore[arg-type]
    else:
        data = _render_still(params, sources, fmt)
    return Output(data, _CONTENT_TYPES[fmt])


def _render_video(params: Mapping[str, Any], sources: list[bytes]) -> Output:
    # PyAV (and FFmpeg's libraries) load with the first video, not with every process.
    from app.providers.local_video import render_video

    width, height = size_for(
        str(params.get("aspect_ratio", "16:9")), params.get("resolution"), media="video"
    )
    data = render_video(
        str(params.get("prompt", "")),
        width=width,
        height=height,
        duration_s=float(params.get("duration", 5)),
        source=sources[0] if sources else None,
        audio=params.get("generate_audio") is True,
    )
    return Output(data, "video/mp4")


def _render_still(params: Mapping[str, Any], sources: list[bytes], fmt: str) -> bytes:
    prompt = str(params.get("prompt", ""))
    quality = check_quality(str(params.get("quality", "medium")))
    aspect_ratio = str(params.get("aspect_ratio", "1:1"))
    resolution = params.get("resolution")
    if not sources:
        width, height = size_for(aspect_ratio, resolution, media="image")
        return render_text_to_image(
            prompt,
            width=width,
            height=height,
            output_format=fmt,  # type: ignore[arg-type]
            quality=quality,
        )
    # "auto" without a resolution keeps the first input's size.
    size: tuple[int | None, int | None] = (None, None)
    if aspect_ratio != "auto" or resolution:
        size = size_for(aspect_ratio, resolution, media="image")
    return render_image_to_image(
        prompt,
        sources,
        width=size[0],
        height=size[1],
        output_format=fmt,  # type: ignore[arg-type]
        quality=quality,
    )
