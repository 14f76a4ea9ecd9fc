from __future__ import annotations

import io
from array import array
from typing import Literal

import av
import pytest
from PIL import Image, ImageChops, ImageFilter, ImageStat, JpegImagePlugin

from app.providers.local_art import Quality
from app.providers.local_audio import SAMPLE_RATE, synthesize_soundtrack
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


# --------------------------------------------------------------------------- quality

QUALITIES: tuple[Quality, ...] = ("low", "medium", "high")


def _edge_energy(image: Image.Image) -> float:
    return ImageStat.Stat(image.convert("L").filter(ImageFilter.FIND_EDGES)).mean[0]


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_text_to_image_quality_levels_differ_in_detail_and_compression(
    output_format: ImageFormat,
) -> None:
    files = [
        render_text_to_image(
            "a lighthouse at dusk", width=512, height=384, output_format=output_format, quality=q
        )
        for q in QUALITIES
    ]
    low, medium, high = (_open(data) for data in files)
    assert low.size == medium.size == high.size == (512, 384)
    assert len(files[0]) < len(files[1]) < len(files[2])
    assert _mean_difference(low, medium) > 1 and _mean_difference(medium, high) > 1
    # High adds small shapes and a fine texture on top of what medium draws.
    assert _edge_energy(high) > 1.5 * _edge_energy(medium)


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_image_to_image_quality_levels_differ_in_detail_and_compression(
    output_format: ImageFormat,
) -> None:
    source = render_text_to_image("mountains", width=400, height=300, output_format="jpeg")
    files = [
        render_image_to_image(
            "noir", [source], width=320, height=240, output_format=output_format, quality=q
        )
        for q in QUALITIES
    ]
    low, medium, high = (_open(data) for data in files)
    assert len(files[0]) < len(files[1]) < len(files[2])
    assert _mean_difference(low, medium) > 1 and _mean_difference(medium, high) > 1
    assert _edge_energy(low) < _edge_energy(medium) < _edge_energy(high)


def test_low_quality_png_is_a_small_palette_image() -> None:
    data = render_text_to_image(
        "a red fox", width=256, height=256, output_format="png", quality="low"
    )
    image = _open(data)
    assert image.mode == "P"
    assert len(image.convert("RGB").getcolors(256 * 256) or ()) <= 64


def test_high_quality_jpeg_keeps_full_colour_resolution() -> None:
    data = render_text_to_image(
        "a red fox", width=256, height=256, output_format="jpeg", quality="high"
    )
    image = _open(data)
    assert isinstance(image, JpegImagePlugin.JpegImageFile)
    assert JpegImagePlugin.get_sampling(image) == 0  # 4:4:4, no colour subsampling
    medium = _open(render_text_to_image("a red fox", width=256, height=256, output_format="jpeg"))
    assert isinstance(medium, JpegImagePlugin.JpegImageFile)
    assert JpegImagePlugin.get_sampling(medium) == 2  # 4:2:0


@pytest.mark.parametrize("quality", QUALITIES)
def test_every_quality_is_deterministic(quality: Quality) -> None:
    renders = {
        render_text_to_image("a fox", width=320, height=240, output_format="png", quality=quality)
        for _ in range(2)
    }
    assert len(renders) == 1


def test_high_quality_at_4k_stays_within_limits() -> None:
    data = render_text_to_image(
        "big", width=4096, height=2304, output_format="jpeg", quality="high"
    )
    assert _open(data).size == (4096, 2304)


def test_unknown_quality_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown quality 'ultra'"):
        render_text_to_image("x", width=64, height=64, output_format="png", quality="ultra")  # type: ignore[arg-type]
    source = render_text_to_image("x", width=64, height=64, output_format="png")
    with pytest.raises(ValueError, match="unknown quality"):
        render_image_to_image(
            "x",
            [source],
            width=None,
            height=None,
            output_format="png",
            quality="best",  # type: ignore[arg-type]
        )


# --------------------------------------------------------------------------- audio


def _audio_track(data: bytes) -> tuple[str, int, float, array[float]] | None:
    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        assert stream.duration is not None and stream.time_base is not None
        samples = array("f")
        for frame in container.decode(stream):
            samples.frombytes(bytes(frame.planes[0])[: 4 * frame.samples])
        return (
            stream.codec_context.name,
            stream.codec_context.sample_rate,
            float(stream.duration * stream.time_base),
            samples,
        )


def test_video_has_no_audio_stream_unless_asked() -> None:
    data = render_video("quiet", width=320, height=180, duration_s=1.0)
    assert _audio_track(data) is None
    assert probe_media(data).has_audio is False


@pytest.mark.parametrize("duration_s", [1.0, 2.5])
def test_video_audio_is_aac_lasting_as_long_as_the_video(duration_s: float) -> None:
    data = render_video("sea shanty", width=320, height=180, duration_s=duration_s, audio=True)
    info = probe_media(data)
    assert info.has_audio is True
    assert info.duration_s == pytest.approx(duration_s, abs=1 / 24)
    track = _audio_track(data)
    assert track is not None
    codec, sample_rate, seconds, samples = track
    assert (codec, sample_rate) == ("aac", 48_000)
    assert seconds == pytest.approx(duration_s, abs=0.01)
    rms = (sum(s * s for s in samples) / len(samples)) ** 0.5
    assert 0.05 < rms < 0.9
    _, _, frames = _decode_video(data)
    assert len(frames) == round(duration_s * 24)


def test_video_from_an_image_can_have_audio() -> None:
    source = render_text_to_image("a castle", width=200, height=150, output_format="png")
    data = render_video("push", width=160, height=120, duration_s=1.0, source=source, audio=True)
    assert probe_media(data).has_audio is True


def test_soundtrack_is_deterministic_exact_in_length_and_follows_the_prompt() -> None:
    first = synthesize_soundtrack("a calm harbour", 2.0)
    assert first == synthesize_soundtrack("a calm harbour", 2.0)
    assert len(first) == 2 * SAMPLE_RATE
    assert max(abs(s) for s in first) <= 1.0
    # Starts and ends at silence, so playback does not click.
    assert abs(first[0]) < 1e-6 and abs(first[-1]) < 1e-6
    other = synthesize_soundtrack("a storm at sea", 2.0)
    assert first != other
    assert first[: SAMPLE_RATE // 2] != synthesize_soundtrack("a storm at sea", 0.5)


def test_soundtrack_refuses_bad_lengths() -> None:
    for duration in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="duration"):
            synthesize_soundtrack("x", duration)


def test_video_audio_is_deterministic() -> None:
    first = render_video("bells", width=160, height=90, duration_s=1.0, audio=True)
    assert first == render_video("bells", width=160, height=90, duration_s=1.0, audio=True)
