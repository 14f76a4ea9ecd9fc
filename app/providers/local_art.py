"""Prompt-seeded art shared by the `local` renderers: PRNG, palette, backdrop and caption.

Pure and synchronous; every choice comes from a hash of the prompt, so the same request
always draws the same picture. `quality` sets how much is drawn and how finely: low is a
soft draft with half the shapes, medium the standard picture, high adds small shapes and a
fine texture and draws the shapes supersampled, so their edges are anti-aliased.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

# Pillow is imported where it draws: the API and the workers import this module's pure
# helpers at start and should not pay for Pillow until something is rendered.
if TYPE_CHECKING:
    from PIL import Image, ImageDraw, ImageFont

Quality = Literal["low", "medium", "high"]
QUALITIES: tuple[Quality, ...] = ("low", "medium", "high")
RGB = tuple[int, int, int]

# Above this many pixels a 2x supersampled layer costs more memory than the edges are worth
# (a 4K still is already finer than any screen shows it); such sizes are drawn at 1x.
_SUPERSAMPLE_MAX_PIXELS = 4096 * 4096


def check_quality(quality: str) -> Quality:
    """The quality as a Quality; ValueError naming the allowed values otherwise."""
    if quality not in QUALITIES:
        raise ValueError(f"unknown quality {quality!r}: expected one of {', '.join(QUALITIES)}")
    return quality


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


def prompt_backdrop(
    prompt: str, width: int, height: int, *, quality: Quality = "medium"
) -> Image.Image:
    """An RGB gradient with translucent shapes laid out from the prompt's hash.

    ValueError only for an unknown quality.
    """
    from PIL import Image, ImageDraw

    check_quality(quality)
    rng = prompt_rng(prompt, "backdrop")
    palette = prompt_palette(rng)
    shapes = _layout(rng, palette, width, height, count=rng.randint(6, 12), size=(0.08, 0.35))
    scale = 1.0
    if quality == "low":
        # Half the shapes, drawn at half size and blown up: the soft look of a quick draft.
        shapes = shapes[: (len(shapes) + 1) // 2]
        scale = 0.5
    elif quality == "high":
        detail = prompt_rng(prompt, "backdrop-detail")
        shapes += _layout(
            detail, palette, width, height, count=detail.randint(10, 18), size=(0.02, 0.08)
        )
        scale = 2.0 if width * height * 4 <= _SUPERSAMPLE_MAX_PIXELS else 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    corners = Image.new("RGB", (2, 2))
    corners.putdata(palette[:4])
    # Bilinear upsampling of a 2x2 image is a four-corner gradient at almost no cost.
    image = corners.resize(size, Image.Resampling.BILINEAR).convert("RGBA")
    overlay = Image.new("RGBA", size, (0, 0, 0, 0))
    _draw_shapes(ImageDraw.Draw(overlay), shapes, scale)
    result = Image.alpha_composite(image, overlay).convert("RGB")
    if scale > 1:
        result = result.reduce(round(scale))
    elif scale < 1:
        result = result.resize((width, height), Image.Resampling.BILINEAR)
    if quality == "high":
        draw_texture(result, prompt, palette)
    return result


@dataclass(frozen=True)
class _Shape:
    kind: str
    colour: tuple[int, int, int, int]
    cx: float
    cy: float
    radius: float
    turn: float


def _layout(
    rng: random.Random,
    palette: list[RGB],
    width: int,
    height: int,
    *,
    count: int,
    size: tuple[float, float],
) -> list[_Shape]:
    unit = min(width, height)
    shapes: list[_Shape] = []
    for _ in range(count):
        colour = (*rng.choice(palette), rng.randint(60, 170))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = unit * rng.uniform(*size)
        kind = rng.choice(("ellipse", "rect", "triangle", "ring"))
        # Only triangles draw a turn, so the other kinds leave the sequence as it always was.
        turn = rng.uniform(0, 2 * math.pi) if kind == "triangle" else 0.0
        shapes.append(_Shape(kind, colour, cx, cy, radius, turn))
    return shapes


def _draw_shapes(draw: ImageDraw.ImageDraw, shapes: list[_Shape], scale: float) -> None:
    for shape in shapes:
        cx, cy, radius = shape.cx * scale, shape.cy * scale, shape.radius * scale
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        if shape.kind == "ellipse":
            draw.ellipse(box, fill=shape.colour)
        elif shape.kind == "rect":
            draw.rounded_rectangle(box, radius=radius * 0.2, fill=shape.colour)
        elif shape.kind == "triangle":
            points = [
                (cx + radius * math.cos(shape.turn + k * 2 * math.pi / 3),
                 cy + radius * math.sin(shape.turn + k * 2 * math.pi / 3))
                for k in range(3)
            ]  # fmt: skip
            draw.polygon(points, fill=shape.colour)
        else:
            draw.ellipse(box, outline=shape.colour, width=max(2, int(radius * 0.15)))


def draw_texture(image: Image.Image, prompt: str, palette: list[RGB]) -> None:
    """Fine engraving lines and specks of light, blended onto an RGB image in place."""
    from PIL import ImageDraw

    rng = prompt_rng(prompt, "texture")
    width, height = image.size
    draw = ImageDraw.Draw(image, "RGBA")
    ink = (*max(palette, key=sum), 34)
    spacing = max(4, min(width, height) // 96)
    slope = rng.uniform(0.3, 1.2)
    # Lines x = c + slope * y for every c that crosses the frame.
    for start in range(-round(slope * height), width, spacing):
        draw.line((start, 0, start + slope * height, height), fill=ink, width=1)
    for _ in range(width * height // 1800):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.6, 2.2)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 255, 255, rng.randint(70, 190)))


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
    from PIL import Image, ImageDraw

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
    from PIL import ImageFont

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
