"""Every input the catalog prices must change what the offline renderer makes.

For each catalog model and each priced input (`per` and every `factors.*`), the model is
rendered at the two cheapest values that price differently, every other priced input at its
cheapest, and the two files must differ in bytes and in the property the price is for (size,
duration, audio, detail). The inputs come from the loaded catalog, so a new priced input
fails here until the renderer honours it and a check for it is written below. Dearer
levels that would make these renders slow (high against medium quality, for one) are
covered in test_local_render.py, where they can be rendered small.
"""

from __future__ import annotations

import io
import json
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import av
import pytest
from PIL import Image, ImageChops, ImageStat

from app.catalog.catalog import CatalogModel, load_catalog
from app.core.errors import InvalidInput
from app.providers.local import _render
from app.providers.local_render import probe_media, render_text_to_image

CATALOG = load_catalog()
PROMPT = "a lighthouse at dusk, waves crashing"
SOURCE_URL = "https://example.com/source.png"


@dataclass(frozen=True)
class Rendered:
    value: Any
    price: int
    data: bytes


# ---------------------------------------------------------------- what a price is for


def _pixels(rendered: Rendered) -> int:
    info = probe_media(rendered.data)
    return info.width * info.height


def _check_bigger(cheap: Rendered, dear: Rendered) -> None:
    assert _pixels(dear) > _pixels(cheap), "the dearer value must give more pixels"


def _check_duration(cheap: Rendered, dear: Rendered) -> None:
    for rendered in (cheap, dear):
        duration = probe_media(rendered.data).duration_s
        assert duration == pytest.approx(float(rendered.value), abs=0.05)


def _check_audio(cheap: Rendered, dear: Rendered) -> None:
    assert (cheap.value, dear.value) == (False, True)
    assert probe_media(cheap.data).has_audio is False
    assert _audio(cheap.data) is None
    info = probe_media(dear.data)
    assert info.has_audio is True
    audio = _audio(dear.data)
    assert audio is not None
    codec, duration, rms = audio
    assert codec == "aac"
    assert info.duration_s is not None
    assert duration == pytest.approx(info.duration_s, abs=0.03)
    assert rms > 0.05, "the audio track is silent"


def _check_quality(cheap: Rendered, dear: Rendered) -> None:
    low, high = _image(cheap.data), _image(dear.data)
    assert low.size == high.size, "quality must not change the size"
    assert len(dear.data) > len(cheap.data), "higher quality must keep more detail"
    assert _colours(high) > _colours(low), "higher quality must show more distinct colours"
    assert _mean_difference(low, high) > 1.0, "quality levels must look different"


# Keyed by input name: a model that prices an input of this name is held to this check.
CHECKS: dict[str, Callable[[Rendered, Rendered], None]] = {
    "resolution": _check_bigger,
    "scale": _check_bigger,
    "duration": _check_duration,
    "generate_audio": _check_audio,
    "quality": _check_quality,
}


# ------------------------------------------------------------------------- the test


def _priced_inputs() -> list[tuple[str, str]]:
    cases = []
    for model in CATALOG.list():
        names = [model.pricing.per] if model.pricing.per else []
        names += [name for name in model.pricing.factors if name not in names]
        cases += [(model.id, name) for name in names]
    return cases


@pytest.mark.parametrize(
    ("model_id", "name"), _priced_inputs(), ids=[f"{m}:{n}" for m, n in _priced_inputs()]
)
def test_changing_a_priced_input_changes_what_is_made(model_id: str, name: str) -> None:
    model = CATALOG.get(model_id)
    check = CHECKS.get(name)
    if check is None:
        pytest.fail(
            f"{model_id} prices {name!r}, which no check here covers: make the local renderer "
            f"honour it and add a check to CHECKS"
        )
    levels = _one_value_per_price(model, name)
    assert len(levels) >= 2, f"{model_id}: no two values of {name!r} price differently"
    cheap, dear = (
        Rendered(value, price, _render_once(model, raw)) for value, price, raw in levels[:2]
    )
    assert cheap.data != dear.data, f"{name}={cheap.value!r} and {dear.value!r} are identical"
    check(cheap, dear)


def test_every_priced_input_name_in_the_catalog_has_a_check() -> None:
    # The same rule as above in one line, so a missing check is also reported on its own.
    assert {name for _, name in _priced_inputs()} <= set(CHECKS)


def test_the_catalog_prices_something_in_every_model() -> None:
    # Guards the test above against silently passing on an empty list of cases.
    assert {model_id for model_id, _ in _priced_inputs()} == set(CATALOG.ids)


# -------------------------------------------------------------------------- helpers


def _one_value_per_price(model: CatalogModel, name: str) -> list[tuple[Any, int, dict[str, Any]]]:
    """(value, price, raw input) for the first accepted value of each price, cheapest first."""
    base = _cheapest_input(model, skip=name)
    levels: dict[int, tuple[Any, int, dict[str, Any]]] = {}
    for value in _values(model, name):
        raw = {**base, name: value}
        try:
            price = model.price(model.normalize(raw))
        except InvalidInput:
            continue  # conflicts with another input (a pixel size that contradicts the ratio)
        levels.setdefault(price, (value, price, raw))
    return [levels[price] for price in sorted(levels)]


def _cheapest_input(model: CatalogModel, *, skip: str) -> dict[str, Any]:
    """Required inputs, and every other priced input at its cheapest value: fast renders."""
    properties = model.input_schema["properties"]
    raw: dict[str, Any] = {}
    for name in model.required:
        raw[name] = [SOURCE_URL] if properties[name].get("type") == "array" else PROMPT
    priced = {*model.pricing.factors, *([model.pricing.per] if model.pricing.per else [])}
    for name in sorted(priced - {skip}):
        prices = []
        for value in _values(model, name):
            try:
                prices.append((model.price(model.normalize({**raw, name: value})), value))
            except InvalidInput:
                continue
        raw[name] = min(prices, key=lambda pair: pair[0])[1]
    return raw


def _values(model: CatalogModel, name: str) -> list[Any]:
    schema = model.input_schema["properties"][name]
    if schema.get("type") == "boolean":
        return [False, True]
    if "enum" in schema:
        return list(schema["enum"])
    # A numeric `per` input without an enum: its bounds and default are the values to try.
    return [schema[key] for key in ("minimum", "default", "maximum") if key in schema]


def _render_once(model: CatalogModel, raw: Mapping[str, Any]) -> bytes:
    return _render_json(model.id, json.dumps(raw, sort_keys=True))


@cache
def _render_json(model_id: str, raw_json: str) -> bytes:
    # Renders are deterministic, so the cheapest render, shared by several cases, is made once.
    model = CATALOG.get(model_id)
    params = model.normalize(json.loads(raw_json))
    return _render(model.scene, params, _sources(model, params)).data


def _sources(model: CatalogModel, params: Mapping[str, Any]) -> list[bytes]:
    # Made here rather than fetched: an upscale source small enough for 4x to stay quick.
    properties = model.input_schema["properties"]
    urls = [
        url
        for name, value in params.items()
        if properties[name].get("items", {}).get("format") == "uri"
        for url in value
    ]
    size = (128, 96) if model.scene.lower() == "upscale" else (320, 240)
    return [
        render_text_to_image(f"source {i}", width=size[0], height=size[1], output_format="png")
        for i, _ in enumerate(urls)
    ]


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def _colours(image: Image.Image) -> int:
    return len(image.getcolors(image.width * image.height) or ())


def _mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def _audio(data: bytes) -> tuple[str, float, float] | None:
    """(codec, seconds, RMS level) of the first audio stream, or None when there is none."""
    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        assert stream.duration is not None and stream.time_base is not None
        duration = float(stream.duration * stream.time_base)
        samples = array("f")
        for frame in container.decode(stream):
            assert frame.format.name == "fltp"
            samples.frombytes(bytes(frame.planes[0])[: 4 * frame.samples])
        rms = (sum(s * s for s in samples) / max(1, len(samples))) ** 0.5
        return stream.codec_context.name, duration, rms
