"""Offline renderer behind the `local` provider: sizes, stills, upscales and media probing.

Everything here is pure and synchronous: bytes in, bytes out, no network and no model.
Output is derived from a hash of the prompt so the same request always renders the same
file. Video rendering and container probing live in `app.providers.local_video`, which
reuses the drawing helpers below.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

ImageFormat = Literal["png", "jpeg", "webp"]
RGB = tuple[int, int, int]

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


# ------------------------------------------------------------------ shared drawing


def prompt_rng(prompt: str, salt: str = "") -> random.Random:
    """A PRNG seeded from the prompt's SHA-256, stable across processes and Python versions."""
    digest = hashlib.sha256(f"{salt}\x00{prompt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))  # noqa: S311 - art, not secrets


def prompt_palette(rng: random.Random, count: int = 5) -> list[RGB]:
    """`count` harmonious colours around a random base hue; never raises."""
    base = rng.random()
    colours: list[RGB] = []
    for i in range(count):
        hue = (base + i * rng.uniform(0.06, 0.22)) % 1.0
        sat = rng.uniform(0.45, 0.9)
        val = rng.uniform(0.35, 0.95)
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


def prompt_backdrop(prompt: str, width: int, height: int) -> Image.Image:
    """An RGB gradient with translucent shapes laid out from the prompt's hash; never raises."""
    rng = prompt_rng(prompt, "backdrop")
    palette = prompt_palette(rng)
    corners = Image.new("RGB", (2, 2))
    corners.putdata(palette[:4])
    # Bilinear upsampling of a 2x2 image is a four-corner gradient at almost no cost.
    image = corners.resize((width, height), Image.Resampling.BILINEAR).convert("RGBA")
    overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    unit = min(width, height)
    for _ in range(rng.randint(6, 12)):
        colour = (*rng.choice(palette), rng.randint(60, 170))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = unit * rng.uniform(0.08, 0.35)
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        kind = rng.choice(("ellipse", "rect", "triangle", "ring"))
        if kind == "ellipse":
            draw.ellipse(box, fill=colour)
        elif kind == "rect":
            draw.rounded_rectangle(box, radius=radius * 0.2, fill=colour)
        elif kind == "triangle":
            turn = rng.uniform(0, 2 * math.pi)
            points = [
                (cx + radius * math.cos(turn + k * 2 * math.pi / 3),
                 cy + radius * math.sin(turn + k * 2 * math.pi / 3))
                for k in range(3)
            ]  # fmt: skip
            draw.polygon(points, fill=colour)
        else:
            draw.ellipse(box, outline=colour, width=max(2, int(radius * 0.15)))
    return Image.alpha_composite(image, overlay).convert("RGB")


@dataclass(frozen=True)
class Caption:
    """A pre-rendered prompt caption: panel and text masks pasted at `origin`."""

    origin: tuple[int, int]
    panel: Image.Image
    text: Image.Image

    def apply(self, image: Image.Image) -> None:
        """Paint the caption onto an RGB image in place; never raises for RGB inputs."""
        # Two solid-colour mask pastes are cheaper per video frame than an RGBA composite.
        image.paste((0, 0, 0), self.origin, self.panel)
        image.paste((255, 255, 255), self.origin, self.text)


def make_caption(prompt: str, width: int, height: int) -> Caption | None:
    """Word-wrapped prompt on a dark panel sized for the image; None when it cannot fit."""
    # Four lines at the smallest size never show more than this; the cap bounds the work.
    text = " ".join(prompt.split())[:600]
    if not text:
        return None
    max_size = max(10, round(min(width, height) / 18))
    min_size = max(10, round(max_size * 0.55))
    text_width = width * 0.84
    for size in range(max_size, min_size - 1, -max(1, (max_size - min_size) // 6)):
        font = _font(size)
        ascent, descent = font.getmetrics()
        line_height = round((ascent + descent) * 1.15)
        max_lines = min(4, int(height * 0.36 // line_height))
        if max_lines < 1:
            return None
        lines = _wrap(text, font, text_width)
        if len(lines) <= max_lines or size == min_size:
            break
    lines = _truncate(lines, max_lines, font, text_width)
    pad = round(line_height * 0.5)
    panel_w = round(max(font.getlength(line) for line in lines)) + 2 * pad
    panel_h = line_height * len(lines) + 2 * pad
    origin = ((width - panel_w) // 2, height - panel_h - round(min(width, height) * 0.04))
    panel = Image.new("L", (panel_w, panel_h), 0)
    ImageDraw.Draw(panel).rounded_rectangle((0, 0, panel_w - 1, panel_h - 1), radius=pad, fill=165)
    mask = Image.new("L", (panel_w, panel_h), 0)
    draw = ImageDraw.Draw(mask)
    for i, line in enumerate(lines):
        x = (panel_w - font.getlength(line)) / 2
        draw.text((x, pad + i * line_height), line, font=font, fill=255)
    return Caption(origin=origin, panel=panel, text=mask)


def _font(size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise RuntimeError("Pillow was built without FreeType, which captions need")
    return font


def _wrap(text: str, font: ImageFont.FreeTypeFont, max_width: float) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= max_width:
            current = candidate
            continue
        if current:
            lines.append(current)
        # A single over-long token (URL, CJK run) is hard-split so it never overflows.
        while len(word) > 1 and (length := font.getlength(word)) > max_width:
            # Start from a proportional guess so long tokens cost a few measurements, not O(n²).
            cut = max(1, int(len(word) * max_width / length))
            while cut > 1 and font.getlength(word[:cut]) > max_width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    return lines


def _truncate(
    lines: list[str], max_lines: int, font: ImageFont.FreeTypeFont, max_width: float
) -> list[str]:
    if len(lines) <= max_lines:
        return lines
    last = lines[max_lines - 1]
    while last and font.getlength(last + "…") > max_width:
        last = last[:-1]
    return [*lines[: max_lines - 1], last.rstrip() + "…"]


def decode_image(data: bytes, *, keep_alpha: bool = False) -> Image.Image:
    """Decode, EXIF-orient and load image bytes; ValueError "input image could not be decoded"."""
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


def encode_image(image: Image.Image, output_format: ImageFormat) -> bytes:
    """Encode to PNG/JPEG/WebP bytes deterministically; ValueError on an unknown format."""
    fmt = _check_format(output_format)
    buf = io.BytesIO()
    if fmt == "jpeg":
        image.convert("RGB").save(buf, "JPEG", quality=90)
    elif fmt == "webp":
        image.save(buf, "WEBP", quality=90, method=4)
    else:
        image.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def _check_format(output_format: str) -> ImageFormat:
    fmt = output_format.lower()
    if fmt == "jpg":
        return "jpeg"
    if fmt not in ("png", "jpeg", "webp"):
        raise ValueError(f"unknown output format {output_format!r}: expected png, jpeg or webp")
    return fmt  # type: ignore[return-value]


# ----------------------------------------------------------------------- renderers


def render_text_to_image(
    prompt: str, *, width: int, height: int, output_format: ImageFormat
) -> bytes:
    """Deterministic prompt-derived art with the prompt captioned; ValueError on bad size/format."""
    _check_size(width, height)
    _check_format(output_format)
    image = prompt_backdrop(prompt, width, height)
    caption = make_caption(prompt, width, height)
    if caption is not None:
        caption.apply(image)
    return encode_image(image, output_format)


def render_image_to_image(
    prompt: str,
    sources: Sequence[bytes],
    *,
    width: int | None,
    height: int | None,
    output_format: ImageFormat,
) -> bytes:
    """Blend, grade and stylise the sources per the prompt; ValueError on bad input/size/format."""
    _check_format(output_format)
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
    caption = make_caption(prompt, *size)
    if caption is not None:
        caption.apply(canvas)
    return encode_image(canvas, output_format)


def _stylise(image: Image.Image, rng: random.Random) -> Image.Image:
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
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = (image.format or "").lower()
            content_type = image.get_format_mimetype() or f"image/{fmt}"
            return MediaInfo(content_type, image.width, image.height, None, fmt)
    except (OSError, Image.DecompressionBombError, SyntaxError):
        pass  # Not an image Pillow knows; try it as a video container.
    # Deferred because local_video imports this module for its drawing helpers.
    from app.providers.local_video import probe_video

    return probe_video(data)
