"""The packaged catalog: lookups, normalisation of the seed's examples, and error texts."""

from typing import Any

import pytest

from app.catalog.catalog import Catalog, CatalogModel, load_catalog
from app.core.errors import InvalidInput

T2I = "gpt-image-2-text-to-image"
I2I = "gpt-image-2-image-to-image"
T2V = "seedance-2.0-text-to-video"
I2V = "seedance-2.0-image-to-video"
UPSCALE = "image-upscale"
GPT1 = "gpt-image-1"  # the seed 004 example's model
URL = "https://example.com/input.png"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def _error(model: CatalogModel, raw: dict[str, Any]) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        model.normalize(raw)
    return caught.value


def test_packaged_catalog_has_the_seed_models_and_upscale(catalog: Catalog) -> None:
    assert catalog.ids == [T2I, I2I, GPT1, UPSCALE, T2V, I2V]
    rows = {m.id: (m.media_type, m.scene, m.required_inputs) for m in catalog.list()}
    assert rows == {
        T2I: ("image", "Text to image", ("prompt",)),
        GPT1: ("image", "Text or image to image", ("prompt",)),
        I2I: ("image", "Image to image", ("prompt", "input_urls or image_urls")),
        T2V: ("video", "Text to video", ("prompt",)),
        I2V: ("video", "Image to video", ("prompt", "image_urls")),
        UPSCALE: ("image", "Upscale", ("input_urls or image_urls",)),
    }
    assert all(m.provider == "local" for m in catalog.list())
    assert {m.id: m.timeout_seconds for m in catalog.list()} == {
        T2I: 600,
        I2I: 600,
        GPT1: 600,
        UPSCALE: 600,
        T2V: 1800,
        I2V: 1800,
    }


def test_input_schema_is_a_closed_json_schema(catalog: Catalog) -> None:
    schema = catalog.get(I2I).input_schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["prompt", "input_urls"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["aspect_ratio"]["default"] == "1:1"
    assert "image_urls" not in schema["properties"]


def test_list_by_media_type(catalog: Catalog) -> None:
    assert [m.id for m in catalog.list("image")] == [T2I, I2I, GPT1, UPSCALE]
    assert [m.id for m in catalog.list("video")] == [T2V, I2V]
    assert len(catalog.list()) == len(catalog.list("")) == 6


def test_unknown_media_type_is_refused(catalog: Catalog) -> None:
    with pytest.raises(InvalidInput) as caught:
        catalog.list("audio")
    assert caught.value.message == "mediaType must be one of image, video"
    assert caught.value.details == {"field": "mediaType", "allowed": ["image", "video"]}


@pytest.mark.parametrize("model_id", [None, "", "  "])
def test_missing_model(catalog: Catalog, model_id: str | None) -> None:
    with pytest.raises(InvalidInput) as caught:
        catalog.get(model_id)
    assert caught.value.message == "model is required"
    assert caught.value.details == {"field": "model"}


def test_unknown_model(catalog: Catalog) -> None:
    with pytest.raises(InvalidInput) as caught:
        catalog.get("dall-e-9")
    assert caught.value.message == "model is not supported"
    assert caught.value.details == {"field": "model", "allowed": catalog.ids}


# --- the seed's examples -------------------------------------------------------------------


def test_seed_text_to_image(catalog: Catalog) -> None:
    model = catalog.get(T2I)
    raw = {
        "prompt": "A cinematic product photo of a futuristic camera on a clean studio table",
        "aspect_ratio": "1:1",
        "resolution": "1024x1024",
        "quality": "high",
        "output_format": "png",
    }
    normalized = model.normalize(raw)
    assert normalized == raw
    assert model.price(normalized) == 8  # 4 x high 2


def test_seed_image_to_image_fills_output_format_but_not_resolution(catalog: Catalog) -> None:
    model = catalog.get(I2I)
    raw = {
        "prompt": "Turn this image into a polished editorial product shot",
        "input_urls": ["https://example.com/input.png"],
        "aspect_ratio": "1:1",
        "quality": "high",
    }
    normalized = model.normalize(raw)
    assert normalized == {**raw, "output_format": "png"}
    assert "resolution" not in normalized
    assert model.price(normalized) == 12  # 6 x high 2


def test_seed_text_to_video(catalog: Catalog) -> None:
    model = catalog.get(T2V)
    raw = {
        "prompt": "A slow cinematic dolly shot through a neon city street at night",
        "aspect_ratio": "16:9",
        "resolution": "1080p",
        "duration": "5",
        "generate_audio": False,
    }
    normalized = model.normalize(raw)
    assert normalized == raw
    assert model.price(normalized) == 80  # 8 x 5 s x 1080p 2


def test_seed_image_to_video(catalog: Catalog) -> None:
    model = catalog.get(I2V)
    raw = {
        "prompt": "Animate the subject with a gentle camera push-in and natural lighting",
        "image_urls": ["https://example.com/reference.jpg"],
        "aspect_ratio": "16:9",
        "resolution": "1080p",
        "duration": "5",
    }
    normalized = model.normalize(raw)
    assert normalized == {**raw, "generate_audio": False}
    assert model.price(normalized) == 100  # 10 x 5 s x 1080p 2


def test_seed_short_forms_get_every_default(catalog: Catalog) -> None:
    image = catalog.get(T2I).normalize({"prompt": "A clean product photo", "aspect_ratio": "1:1"})
    assert image == {
        "prompt": "A clean product photo",
        "aspect_ratio": "1:1",
        "quality": "medium",
        "output_format": "png",
    }
    assert catalog.get(T2I).price(image) == 4
    video = catalog.get(T2V).normalize({"prompt": "A cinematic video"})
    assert video == {
        "prompt": "A cinematic video",
        "aspect_ratio": "16:9",
        "resolution": "720p",
        "duration": "5",
        "generate_audio": False,
    }
    assert catalog.get(T2V).price(video) == 40


def test_upscale_defaults_and_alias(catalog: Catalog) -> None:
    model = catalog.get(UPSCALE)
    normalized = model.normalize({"image_urls": [URL]})
    assert normalized == {"input_urls": [URL], "scale": 2, "output_format": "png"}
    assert model.price(normalized) == 2
    assert model.price(model.normalize({"input_urls": [URL], "scale": 4})) == 4


# --- aliases and coercions -----------------------------------------------------------------


def test_image_urls_is_an_alias_of_input_urls(catalog: Catalog) -> None:
    model = catalog.get(I2I)
    normalized = model.normalize({"prompt": "p", "image_urls": [URL, URL]})
    assert normalized["input_urls"] == [URL, URL]
    assert "image_urls" not in normalized
    # the same value under both names is harmless, different values are ambiguous
    assert model.normalize({"prompt": "p", "image_urls": [URL], "input_urls": [URL]}) == (
        model.normalize({"prompt": "p", "input_urls": [URL]})
    )
    error = _error(model, {"prompt": "p", "image_urls": [URL], "input_urls": ["https://b.io/x"]})
    assert error.message == "image_urls and input_urls are the same input; pass only one"
    assert error.details == {"field": "input_urls"}


@pytest.mark.parametrize(("sent", "expected"), [(5, "5"), (10, "10"), ("10", "10"), (10.0, "10")])
def test_duration_accepts_integers(catalog: Catalog, sent: object, expected: str) -> None:
    assert catalog.get(T2V).normalize({"prompt": "p", "duration": sent})["duration"] == expected


def test_none_counts_as_omitted(catalog: Catalog) -> None:
    normalized = catalog.get(T2I).normalize({"prompt": "p", "resolution": None, "quality": None})
    assert "resolution" not in normalized and normalized["quality"] == "medium"


# --- error texts ----------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", [None, "", "   \n"])
def test_missing_or_blank_prompt(catalog: Catalog, prompt: str | None) -> None:
    raw = {} if prompt is None else {"prompt": prompt}
    for model_id in (T2I, I2I, T2V, I2V):
        error = _error(catalog.get(model_id), raw)
        assert (error.message, error.details) == ("prompt is required", {"field": "prompt"})


@pytest.mark.parametrize(
    ("model_id", "raw", "field"),
    [
        (I2I, {"prompt": "p"}, "input_urls"),
        (I2I, {"prompt": "p", "image_urls": []}, "input_urls"),
        (I2V, {"prompt": "p"}, "image_urls"),
        (UPSCALE, {}, "input_urls"),
    ],
)
def test_missing_urls(catalog: Catalog, model_id: str, raw: dict[str, Any], field: str) -> None:
    error = _error(catalog.get(model_id), raw)
    assert (error.message, error.details) == (f"{field} is required", {"field": field})


def test_required_is_reported_before_other_errors(catalog: Catalog) -> None:
    error = _error(catalog.get(I2I), {"aspect_ratio": "7:5", "foo": 1})
    assert error.message == "prompt is required"


def test_enum_error_lists_the_choices(catalog: Catalog) -> None:
    error = _error(catalog.get(T2I), {"prompt": "p", "aspect_ratio": "5:4"})
    choices = ["1:1", "3:2", "2:3", "16:9", "9:16", "4:3", "3:4", "auto"]
    assert error.message == "aspect_ratio must be one of " + ", ".join(choices)
    assert error.details == {"field": "aspect_ratio", "allowed": choices}
    error = _error(catalog.get(T2V), {"prompt": "p", "duration": 7})
    assert error.message == "duration must be one of 5, 10"
    error = _error(catalog.get(UPSCALE), {"input_urls": [URL], "scale": 3})
    assert (error.message, error.details["allowed"]) == ("scale must be one of 2, 4", [2, 4])


def test_wrong_type(catalog: Catalog) -> None:
    error = _error(catalog.get(T2V), {"prompt": "p", "generate_audio": "yes"})
    assert error.message == "generate_audio must be a boolean"
    assert error.details == {"field": "generate_audio"}
    error = _error(catalog.get(T2I), {"prompt": 42})
    assert (error.message, error.details) == ("prompt must be a string", {"field": "prompt"})


def test_errors_are_reported_in_field_order(catalog: Catalog) -> None:
    raw = {"prompt": "p", "resolution": "8K", "aspect_ratio": "5:4", "generate_audio": 1}
    assert _error(catalog.get(T2V), raw).details["field"] == "aspect_ratio"


def test_prompt_too_long(catalog: Catalog) -> None:
    error = _error(catalog.get(T2I), {"prompt": "x" * 4001})
    assert (error.message, error.details) == (
        "prompt must be at most 4000 characters",
        {"field": "prompt"},
    )


def test_too_many_urls(catalog: Catalog) -> None:
    error = _error(catalog.get(I2I), {"prompt": "p", "input_urls": [URL] * 5})
    assert (error.message, error.details) == (
        "input_urls must have at most 4 items",
        {"field": "input_urls"},
    )
    error = _error(catalog.get(UPSCALE), {"image_urls": [URL, URL]})
    assert (error.message, error.details) == (
        "image_urls must have at most 1 item",
        {"field": "image_urls"},
    )
    error = _error(catalog.get(I2V), {"prompt": "p", "image_urls": [URL, URL]})
    assert error.message == "image_urls must have at most 1 item"


@pytest.mark.parametrize(
    "url", ["ftp://example.com/a.png", "example.com/a.png", "https://", "https://a b.com/x", 7]
)
def test_not_a_url(catalog: Catalog, url: object) -> None:
    error = _error(catalog.get(I2I), {"prompt": "p", "input_urls": [URL, url]})
    message = (
        "input_urls[1] must be a string" if url == 7 else "input_urls[1] must be an http(s) URL"
    )
    assert (error.message, error.details) == (message, {"field": "input_urls"})


def test_url_errors_name_the_field_as_sent(catalog: Catalog) -> None:
    error = _error(catalog.get(I2I), {"prompt": "p", "image_urls": "https://example.com/a.png"})
    assert (error.message, error.details) == (
        "image_urls must be an array",
        {"field": "image_urls"},
    )


def test_unknown_input_field(catalog: Catalog) -> None:
    error = _error(catalog.get(I2I), {"prompt": "p", "input_urls": [URL], "foo": 1})
    assert error.message == "unknown input field: foo"
    assert error.details == {
        "field": "foo",
        "allowed": [
            "aspect_ratio",
            "background",
            "image_urls",
            "input_urls",
            "moderation",
            "output_compression",
            "output_format",
            "prompt",
            "quality",
            "resolution",
        ],
    }
    # image_urls is only an alias where the catalog says so
    error = _error(catalog.get(T2I), {"prompt": "p", "image_urls": [URL]})
    assert (error.message, error.details["field"]) == (
        "unknown input field: image_urls",
        "image_urls",
    )


def test_input_must_be_an_object(catalog: Catalog) -> None:
    error = _error(catalog.get(T2I), ["prompt"])  # type: ignore[arg-type]
    assert (error.message, error.details) == ("input must be an object", {"field": "input"})
