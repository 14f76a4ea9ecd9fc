from __future__ import annotations

import io
from typing import Literal

import av
import pytest
from PIL import Image, ImageChops, ImageStat

from app.providers.local_render import (
    ImageFormat,
    probe_media,
    render_image_to_image,
    render_text_to_image,
    size_for,
    upscale_image,
)
from app.providers.local_video import render_video

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _mean_difference(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB").resize(a.size))
    return sum(ImageStat.Stat(diff).mean) / 3


def _decode_video(data: bytes) -> tuple[str, str, list[Image.Image]]:
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        codec, pix_fmt = stream.codec_context.name, stream.codec_context.pix_fmt or ""
        frames = [frame.to_image() for frame in container.decode(stream)]
    return codec, pix_fmt, frames


# ---------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("aspect_ratio", "expected"),
    [
        ("1:1", (1024, 1024)),
        ("16:9", (1024, 576)),
        ("9:16", (576, 1024)),
        ("4:3", (1024, 768)),
        ("3:4", (768, 1024)),
        ("3:2", (1024, 688)),
        ("2:3", (688, 1024)),
        ("21:9", (1024, 432)),
        ("auto", (1024, 1024)),
    ],
)
def test_image_size_defaults_to_a_1024_long_side(
    aspect_ratio: str, expected: tuple[int, int]
) -> None:
    assert size_for(aspect_ratio, None, media="image") == expected
    assert all(side % 16 == 0 for side in expected)


@pytest.mark.parametrize(
    ("aspect_ratio", "resolution", "expected"),
    [
        ("1:1", "1K", (1024, 1024)),
        ("16:9", "2K", (2048, 1152)),
        ("9:16", "4K", (2304, 4096)),
        ("4:3", "2k", (2048, 1536)),
        ("1:1", "1536x1024", (1536, 1024)),
        ("16:9", "1024x1536", (1024, 1536)),
        ("auto", "1024x1024", (1024, 1024)),
    ],
)
def test_image_size_for_named_and_explicit_resolutions(
    aspect_ratio: str, resolution: str, expected: tuple[int, int]
) -> None:
    assert size_for(aspect_ratio, resolution, media="image") == expected


@pytest.mark.parametrize(
    ("aspect_ratio", "resolution", "expected"),
    [
        ("16:9", None, (1280, 720)),
        ("16:9", "720p", (1280, 720)),
        ("16:9", "1080p", (1920, 1080)),
        ("16:9", "480p", (854, 480)),
        ("9:16", "720p", (720, 1280)),
        ("9:16", "1080p", (1080, 1920)),
        ("1:1", "720p", (720, 720)),
        ("4:3", "480p", (640, 480)),
        ("3:4", "480p", (480, 640)),
        ("3:2", "720p", (1080, 720)),
        ("2:3", "720p", (720, 1080)),
        ("21:9", "720p", (1680, 720)),
        ("auto", "720p", (720, 720)),
    ],
)
def test_video_size_uses_the_short_side(
    aspect_ratio: str, resolution: str | None, expected: tuple[int, int]
) -> None:
    assert size_for(aspect_ratio, resolution, media="video") == expected


def test_auto_aspect_ratio_follows_the_source_image() -> None:
    assert size_for("auto", None, media="image", source_size=(800, 600)) == (1024, 768)
    assert size_for("auto", "2K", media="image", source_size=(600, 1200)) == (1024, 2048)
    assert size_for("auto", "720p", media="video", source_size=(1000, 500)) == (1440, 720)


def test_explicit_size_is_rounded_to_even() -> None:
    assert size_for("1:1", "1023x767", media="image") == (1024, 768)


@pytest.mark.parametrize(
    ("aspect_ratio", "resolution", "media", "message"),
    [
        ("5:4", None, "image", "unknown aspect ratio"),
        ("1:1", "8K", "image", "unknown image resolution"),
        ("1:1", "720p", "image", "unknown image resolution"),
        ("16:9", "1K", "video", "unknown video resolution"),
        ("16:9", "4k", "video", "unknown video resolution"),
        ("1:1", "99999x1024", "image", "out of range"),
        ("1:1", "0x1024", "image", "out of range"),
        ("1:1", None, "audio", "unknown media kind"),
    ],
)
def test_size_for_rejects_unknown_values(
    aspect_ratio: str, resolution: str | None, media: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        size_for(aspect_ratio, resolution, media=media)  # type: ignore[arg-type]


# --------------------------------------------------------------------- text-to-image


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_text_to_image_has_the_requested_size_and_format(output_format: ImageFormat) -> None:
    data = render_text_to_image(
        "a lighthouse at dusk", width=640, height=368, output_format=output_format
    )
    image = _open(data)
    assert image.format == PIL_FORMATS[output_format]
    assert image.size == (640, 368)
    info = probe_media(data)
    assert (info.width, info.height, info.format) == (640, 368, output_format)
    assert info.content_type == f"image/{output_format}"
    assert info.duration_s is None


def test_text_to_image_is_deterministic() -> None:
    first = render_text_to_image("a red fox in snow", width=320, height=240, output_format="png")
    second = render_text_to_image("a red fox in snow", width=320, height=240, output_format="png")
    assert first == second


def test_different_prompts_give_visibly_different_images() -> None:
    fox = _open(render_text_to_image("a red fox", width=320, height=240, output_format="png"))
    whale = _open(render_text_to_image("a blue whale", width=320, height=240, output_format="png"))
    assert _mean_difference(fox, whale) > 10


def test_text_to_image_copes_with_empty_and_very_long_prompts() -> None:
    long_prompt = "word " * 2000 + "x" * 5000
    for prompt in ("", long_prompt):
        data = render_text_to_image(prompt, width=256, height=256, output_format="png")
        assert _open(data).size == (256, 256)


def test_text_to_image_rejects_bad_size_and_format() -> None:
    with pytest.raises(ValueError, match="out of range"):
        render_text_to_image("x", width=0, height=256, output_format="png")
    with pytest.raises(ValueError, match="unknown output format"):
        render_text_to_image("x", width=256, height=256, output_format="gif")  # type: ignore[arg-type]


# -------------------------------------------------------------------- image-to-image


def test_image_to_image_composes_the_sources_at_the_requested_size() -> None:
    first = render_text_to_image("mountains", width=256, height=256, output_format="png")
    second = render_text_to_image("ocean", width=300, height=200, output_format="jpeg")
    data = render_image_to_image(
        "watercolour", [first, second], width=320, height=240, output_format="webp"
    )
    result = _open(data)
    assert result.format == "WEBP"
    assert result.size == (320, 240)
    assert _mean_difference(result, _open(first)) > 5
    assert _mean_difference(result, _open(second)) > 5


def test_image_to_image_defaults_to_the_first_source_size() -> None:
    source = render_text_to_image("forest", width=288, height=160, output_format="png")
    same = render_image_to_image("noir", [source], width=None, height=None, output_format="png")
    assert _open(same).size == (288, 160)
    wide = render_image_to_image("noir", [source], width=576, height=None, output_format="png")
    assert _open(wide).size == (576, 320)


def test_image_to_image_rejects_garbage_and_missing_input() -> None:
    with pytest.raises(ValueError, match="input image could not be decoded"):
        render_image_to_image("x", [b"not an image"], width=None, height=None, output_format="png")
    with pytest.raises(ValueError, match="at least one input image"):
        render_image_to_image("x", [], width=None, height=None, output_format="png")


# --------------------------------------------------------------------------- upscale


@pytest.mark.parametrize("factor", [2, 4])
def test_upscale_gives_exact_dimensions(factor: Literal[2, 4]) -> None:
    source = render_text_to_image("pixel art", width=100, height=60, output_format="png")
    data = upscale_image(source, factor=factor, output_format="jpeg")
    image = _open(data)
    assert image.format == "JPEG"
    assert image.size == (100 * factor, 60 * factor)
    assert probe_media(data).width == 100 * factor


def test_upscale_keeps_transparency_for_png() -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (20, 10), (255, 0, 0, 128)).save(buf, "PNG")
    image = _open(upscale_image(buf.getvalue(), factor=2, output_format="png"))
    assert (image.mode, image.size) == ("RGBA", (40, 20))


def test_upscale_refuses_results_over_8192_px_and_garbage() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (2100, 16)).save(buf, "PNG")
    with pytest.raises(ValueError, match="8192"):
        upscale_image(buf.getvalue(), factor=4, output_format="png")
    with pytest.raises(ValueError, match="input image could not be decoded"):
        upscale_image(b"\x89PNG garbage", factor=2, output_format="png")
    with pytest.raises(ValueError, match="factor"):
        upscale_image(buf.getvalue(), factor=3, output_format="png")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- video


def test_video_is_h264_of_the_requested_size_duration_and_moves() -> None:
    data = render_video("a comet over the sea", width=320, height=180, duration_s=1.0, fps=24)
    codec, pix_fmt, frames = _decode_video(data)
    assert (codec, pix_fmt) == ("h264", "yuv420p")
    assert len(frames) == 24
    assert all(frame.size == (320, 180) for frame in frames)
    assert _mean_difference(frames[0], frames[-1]) > 2
    info = probe_media(data)
    assert (info.content_type, info.format) == ("video/mp4", "mp4")
    assert (info.width, info.height) == (320, 180)
    assert info.duration_s is not None
    assert abs(info.duration_s - 1.0) <= 1 / 24


def test_video_at_720p_16_9() -> None:
    width, height = size_for("16:9", "720p", media="video")
    data = render_video("city lights", width=width, height=height, duration_s=2.0)
    info = probe_media(data)
    assert (info.width, info.height) == (1280, 720)
    assert info.duration_s is not None
    assert abs(info.duration_s - 2.0) <= 1 / 24
    codec, _, frames = _decode_video(data)
    assert codec == "h264"
    assert len(frames) == 48


def test_video_from_an_image_animates_it() -> None:
    source = render_text_to_image("a castle", width=400, height=300, output_format="jpeg")
    data = render_video("push in", width=320, height=240, duration_s=0.5, fps=12, source=source)
    _, _, frames = _decode_video(data)
    assert len(frames) == 6
    assert frames[0].size == (320, 240)
    assert _mean_difference(frames[0], frames[-1]) > 1
    with pytest.raises(ValueError, match="input image could not be decoded"):
        render_video("x", width=320, height=240, duration_s=0.5, source=b"junk")


@pytest.mark.parametrize(
    ("width", "height", "duration_s", "fps"),
    [(321, 180, 1.0, 24), (320, 8, 1.0, 24), (320, 180, 0.0, 24), (320, 180, 1.0, 0)],
)
def test_video_rejects_bad_arguments(width: int, height: int, duration_s: float, fps: int) -> None:
    with pytest.raises(ValueError):
        render_video("x", width=width, height=height, duration_s=duration_s, fps=fps)


def test_probe_media_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="could not be decoded"):
        probe_media(b"definitely not media")
