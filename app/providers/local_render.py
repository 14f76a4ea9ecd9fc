"""Offline renderer behind the `local` provider: sizes, stills, upscales and media probing.

Everything here is pure and synchronous: bytes in, bytes out, no network and no model.
Output is derived from a hash of the prompt so the same request always renders the same
file. The prompt-seeded drawing lives in `app.providers.local_art`; video rendering and
container probing in `app.providers.local_video`.

`quality` is honoured twice, as the price says it should be: in what is drawn (see
`local_art`; for edits, a soft draft at low and a sharpened result at high) and in how it
is stored (palette PNG and stronger JPEG/WebP compression at low, 4:4:4 JPEG at high).
"""

from __future__ import annotations

import io
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from app.providers.local_art import (
    RGB,
    Quality,
    check_quality,
    draw_texture,
    make_caption,
    prompt_backdrop,
    prompt_palette,
    prompt_rng,
)

# Pillow is imported where it is used: MediaInfo and the size helpers are imported by the
# API at start, which should not pay for Pillow until something is rendered or probed.
if TYPE_CHECKING:
    from PIL import Image

ImageFormat = Literal["png", "jpeg", "webp"]

MIN_SIDE = 16
MAX_SIDE = 8192

ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9")
IMAGE_LONG_SIDES = {"1K": 1024, "2K": 2048, "4K": 4096}
VIDEO_SHORT_SIDES = {"480p": 480, "720p": 720, "1080p": 1080}
_WXH = re.compile(r"^(\d{1,5})\s*x\s*(\d{1,5})$", re.IGNORECASE)


@dataclass(frozen=True)
class MediaInfo:
    """What is recorded for a stored file; `duration_s` is None for still images."""

    content_type: str
    width: int
    height: int
    duration_s: float | None
    format: str
    # Whether a video carries a sound track; always False for still images.
    has_audio: bool = False


# ---------------------------------------------------------------------------- sizes


def size_for(
    aspect_ratio: str,
    resolution: str | None,
    *,
    media: Literal["image", "video"],
    source_size: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """(width, height) for an aspect ratio and resolution; ValueError on unknown values."""
    if media not in ("image", "video"):
        raise ValueError(f"unknown media kind {media!r}: expected 'image' or 'video'")
    ratio = _ratio(aspect_ratio, source_size)
    explicit = _parse_wxh(resolution)
    if explicit is not None:
        return explicit
    if media == "image":
        long_side = _lookup(resolution, IMAGE_LONG_SIDES, default=1024, what="image resolution")
        # Multiples of 16 keep every block-based codec (JPEG, WebP, later H.264) padding-free.
        if ratio >= 1:
            return long_side, _round_to(long_side / ratio, 16)
        return _round_to(long_side * ratio, 16), long_side
    short_side = _lookup(resolution, VIDEO_SHORT_SIDES, default=720, what="video resolution")
    # H.264 with 4:2:0 chroma needs even sides; 16 would turn 480p 16:9 into a non-standard 848.
    if ratio >= 1:
        return _round_to(short_side * ratio, 2), short_side
    return short_side, _round_to(short_side / ratio, 2)


def _ratio(aspect_ratio: str, source_size: tuple[int, int] | None) -> float:
    key = aspect_ratio.strip().lower()
    if key == "auto":
        if source_size is None:
            return 1.0
        width, height = source_size
        if width <= 0 or height <= 0:
            raise ValueError(f"invalid source size {width}x{height}")
        return width / height
    if key not in ASPECT_RATIOS:
        allowed = ", ".join([*ASPECT_RATIOS, "auto"])
        raise ValueError(f"unknown aspect ratio {aspect_ratio!r}: expected one of {allowed}")
    num, den = key.split(":")
    return int(num) / int(den)


def _parse_wxh(resolution: str | None) -> tuple[int, int] | None:
    match = _WXH.match(resolution.strip()) if resolution else None
    if match is None:
        return None
    width, height = (_round_to(int(side), 2) for side in match.groups())
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise ValueError(
            f"resolution {resolution!r} is out of range: each side must be {MIN_SIDE}-{MAX_SIDE} px"
        )
    return width, height


def _lookup(resolution: str | None, table: dict[str, int], *, default: int, what: str) -> int:
    if resolution is None:
        return default
    for name, side in table.items():
        if resolution.strip().lower() == name.lower():
            return side
    raise ValueError(f"unknown {what} {resolution!r}: expected one of {', '.join(table)} or WxH")


def _round_to(value: float, multiple: int) -> int:
    # Half-up rather than round()'s banker's rounding so 853.33 -> 854 and 682.67 -> 688.
    return max(multiple, int(value / multiple + 0.5) * multiple)


def decode_image(data: bytes, *, keep_alpha: bool = False) -> Image.Image:
    """Decode, EXIF-orient and load image bytes; ValueError "input image could not be decoded"."""
    from PIL import Image, ImageOps

    try:
        image = Image.open(io.BytesIO(data))
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ValueError("input image could not be decoded") from exc
    if image.width * image.height > MAX_SIDE * MAX_SIDE:
        raise ValueError(f"input image is too large ({image.width}x{image.height})")
    try:
        image.load()
        oriented = ImageOps.exif_transpose(image) or image
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ValueError("input image could not be decoded") from exc
    if oriented.mode not in ("RGBA", "LA", "PA") and "transparency" not in oriented.info:
        return oriented.convert("RGB")
    rgba = oriented.convert("RGBA")
    if keep_alpha:
        return rgba
    # Transparent pixels hide arbitrary colours; flatten on white as viewers display them.
    return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")


# Encoder settings per quality. Low PNGs are cut to a 64-colour palette, undithered, so they
# are small and show banding in gradients, as a cheap render would.
_JPEG: dict[Quality, dict[str, Any]] = {
    "low": {"quality": 60},
    "medium": {"quality": 90},
    "high": {"quality": 95, "subsampling": 0},
}
_WEBP_QUALITY: dict[Quality, int] = {"low": 60, "medium": 90, "high": 96}
_LOW_PNG_COLOURS = 64


def encode_image(
    image: Image.Image, output_format: ImageFormat, *, quality: Quality = "medium"
) -> bytes:
    """Encode to PNG/JPEG/WebP bytes deterministically; ValueError on unknown format/quality."""
    fmt = _check_format(output_format)
    quality = check_quality(quality)
    buf = io.BytesIO()
    if fmt == "jpeg":
        image.convert("RGB").save(buf, "JPEG", **_JPEG[quality])
    elif fmt == "webp":
        image.save(buf, "WEBP", quality=_WEBP_QUALITY[quality], method=4)
    else:
        if quality == "low":
            image = _reduce_palette(image)
        image.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def _reduce_palette(image: Image.Image) -> Image.Image:
    from PIL import Image

    # Median cut picks the best palette for gradients but is slow on 4K; choosing it from a
    # copy of at most ~256k pixels and mapping the full image onto it is 8x faster.
    if image.mode == "RGBA":
        # Only fast octree keeps an alpha channel.
        return image.quantize(
            _LOW_PNG_COLOURS, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
        )
    rgb = image.convert("RGB")
    step = max(1, int((rgb.width * rgb.height / 262_144) ** 0.5))
    sample = rgb.reduce(step) if step > 1 else rgb
    palette = sample.quantize(
        _LOW_PNG_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    return rgb.quantize(palette=palette, dither=Image.Dither.NONE)


def _check_format(output_format: str) -> ImageFormat:
    fmt = output_format.lower()
    if fmt == "jpg":
        return "jpeg"
    if fmt not in ("png", "jpeg", "webp"):
        raise ValueError(f"unknown output format {output_format!r}: expected png, jpeg or webp")
    return fmt  # type: ignore[return-value]


# ----------------------------------------------------------------------- renderers


def render_text_to_image(
    prompt: str,
    *,
    width: int,
    height: int,
    output_format: ImageFormat,
    quality: Quality = "medium",
) -> bytes:
    """Deterministic prompt-derived art with the prompt captioned.

    ValueError on a bad size, format or quality.
    """
    _check_size(width, height)
    _check_format(output_format)
    image = prompt_backdrop(prompt, width, height, quality=check_quality(quality))
    caption = make_caption(prompt, width, height)
    if caption is not None:
        caption.apply(image)
    return encode_image(image, output_format, quality=quality)


def render_image_to_image(
    prompt: str,
    sources: Sequence[bytes],
    *,
    width: int | None,
    height: int | None,
    output_format: ImageFormat,
    quality: Quality = "medium",
) -> bytes:
    """Blend, grade and stylise the sources per the prompt.

    ValueError on a bad input image, size, format or quality.
    """
    from PIL import Image, ImageEnhance, ImageOps

    _check_format(output_format)
    check_quality(quality)
    if not sources:
        raise ValueError("at least one input image is required")
    images = [decode_image(data) for data in sources]
    size = _target_size(images[0].size, width, height)
    rng = prompt_rng(prompt, "image-to-image")
    palette = prompt_palette(rng)
    canvas = ImageOps.fit(images[0], size, Image.Resampling.LANCZOS)
    for extra in images[1:]:
        layer = ImageOps.fit(extra, size, Image.Resampling.LANCZOS)
        # Each further source fades in from a prompt-chosen side, so all stay recognisable.
        sweep = Image.linear_gradient("L").rotate(rng.choice((0, 90, 180, 270)))
        canvas = Image.composite(layer, canvas, sweep.resize(size, Image.Resampling.BILINEAR))
    dark, light = min(palette, key=sum), max(palette, key=sum)
    tint = ImageOps.colorize(canvas.convert("L"), black=dark, white=light)
    canvas = Image.blend(canvas, tint, rng.uniform(0.3, 0.45))
    canvas = ImageEnhance.Contrast(canvas).enhance(rng.uniform(1.05, 1.25))
    canvas = _stylise(canvas, rng)
    canvas = _finish(canvas, quality, prompt, palette)
    caption = make_caption(prompt, *size)
    if caption is not None:
        caption.apply(canvas)
    return encode_image(canvas, output_format, quality=quality)


def _finish(image: Image.Image, quality: Quality, prompt: str, palette: list[RGB]) -> Image.Image:
    from PIL import Image, ImageFilter

    if quality == "low" and min(image.size) >= 2:
        # Rendered at half size and scaled back up: fine detail is gone, as in a quick draft.
        return image.reduce(2).resize(image.size, Image.Resampling.BILINEAR)
    if quality == "high":
        # Crisper edges and the same fine texture a high text-to-image render carries.
        sharp = image.filter(ImageFilter.UnsharpMask(radius=2, percent=120, threshold=1))
        draw_texture(sharp, prompt, palette)
        return sharp
    return image


def _stylise(image: Image.Image, rng: random.Random) -> Image.Image:
    from PIL import Image, ImageFilter, ImageOps

    style = rng.choice(("posterize", "crisp", "ink"))
    if style == "posterize":
        return ImageOps.posterize(image, rng.randint(4, 5))
    if style == "crisp":
        return image.filter(ImageFilter.EDGE_ENHANCE_MORE)
    return Image.blend(image, image.filter(ImageFilter.CONTOUR), 0.35)


def _target_size(source: tuple[int, int], width: int | None, height: int | None) -> tuple[int, int]:
    src_w, src_h = source
    if width is None and height is None:
        # Oversized sources shrink to the output cap instead of failing the whole request.
        scale = min(1.0, MAX_SIDE / max(src_w, src_h))
        width, height = max(1, round(src_w * scale)), max(1, round(src_h * scale))
    elif width is None:
        assert height is not None
        width = max(1, round(height * src_w / src_h))
    elif height is None:
        height = max(1, round(width * src_h / src_w))
    _check_size(width, height, minimum=1)
    return width, height


def _check_size(width: int, height: int, *, minimum: int = MIN_SIDE) -> None:
    if not (minimum <= width <= MAX_SIDE and minimum <= height <= MAX_SIDE):
        raise ValueError(
            f"size {width}x{height} is out of range: sides must be {minimum}-{MAX_SIDE}"
        )


def upscale_image(source: bytes, *, factor: Literal[2, 4], output_format: ImageFormat) -> bytes:
    """Lanczos-resample to exactly `factor`x each side; ValueError on bad input or > 8192 px."""
    from PIL import Image

    _check_format(output_format)
    if factor not in (2, 4):
        raise ValueError(f"unsupported upscale factor {factor!r}: expected 2 or 4")
    image = decode_image(source, keep_alpha=True)
    width, height = image.width * factor, image.height * factor
    if max(width, height) > MAX_SIDE:
        raise ValueError(f"upscaled size {width}x{height} exceeds the {MAX_SIDE} px limit per side")
    return encode_image(image.resize((width, height), Image.Resampling.LANCZOS), output_format)


# -------------------------------------------------------------------------- probing


def probe_media(data: bytes) -> MediaInfo:
    """Content type, size, duration and format of image or video bytes; ValueError if unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = (image.format or "").lower()
            content_type = image.get_format_mimetype() or f"image/{fmt}"
            return MediaInfo(content_type, image.width, image.height, None, fmt)
    except (OSError, Image.DecompressionBombError, SyntaxError):
        pass  # Not an image Pillow knows; try it as a video container.
    # Deferred: local_video imports this module for its drawing helpers, and PyAV is only
    # loaded once a file turns out not to be an image.
    from app.providers.local_video import probe_video

    return probe_video(data)
