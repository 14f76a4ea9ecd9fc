"""Price rules: credits from the normalised input, rounded up, never below 1."""

from typing import Any

import pytest

from app.catalog.catalog import load_catalog
from app.catalog.pricing import PriceRule, parse_price_rule, price_of

QUALITY: dict[str, Any] = {"type": "string", "enum": ["low", "medium", "high"]}


@pytest.mark.parametrize(
    ("model_id", "raw", "credits"),
    [
        ("gpt-image-2-text-to-image", {"prompt": "p", "quality": "low"}, 2),
        ("gpt-image-2-text-to-image", {"prompt": "p", "quality": "low", "resolution": "2K"}, 4),
        ("gpt-image-2-text-to-image", {"prompt": "p", "resolution": "1536x1024"}, 4),
        ("gpt-image-2-image-to-image", {"prompt": "p", "input_urls": ["https://a.io/x"]}, 6),
        (
            "gpt-image-2-image-to-image",
            {
                "prompt": "p",
                "input_urls": ["https://a.io/x"],
                "quality": "high",
                "resolution": "4K",
            },
            48,
        ),
        ("seedance-2.0-text-to-video", {"prompt": "p", "duration": 10}, 80),
        (
            "seedance-2.0-text-to-video",
            {"prompt": "p", "duration": "10", "resolution": "480p", "generate_audio": True},
            60,
        ),
        (
            "seedance-2.0-image-to-video",
            {
                "prompt": "p",
                "image_urls": ["https://a.io/x"],
                "duration": 10,
                "generate_audio": True,
            },
            150,
        ),
        (
            "seedance-2.0-image-to-video",
            {
                "prompt": "p",
                "image_urls": ["https://a.io/x"],
                "duration": "10",
                "resolution": "1080p",
                "generate_audio": True,
            },
            300,
        ),
        ("image-upscale", {"input_urls": ["https://a.io/x"], "scale": 4}, 4),
    ],
)
def test_packaged_prices(model_id: str, raw: dict[str, Any], credits: int) -> None:
    model = load_catalog().get(model_id)
    assert model.price(model.normalize(raw)) == credits


def test_rounds_up_without_float_error() -> None:
    rule = PriceRule(base=10, factors={"quality": {"high": 1.1, "low": 0.15}})
    assert price_of(rule, {"quality": "high"}) == 11  # 11.000000000000002 in floats
    assert price_of(rule, {"quality": "low"}) == 2  # 1.5 -> 2
    assert price_of(PriceRule(base=1, factors={"quality": {"low": 0.1}}), {"quality": "low"}) == 1


def test_missing_or_unlisted_values_multiply_by_one() -> None:
    rule = PriceRule(base=3, per="seconds", factors={"quality": {"high": 2}})
    assert price_of(rule, {}) == 3
    assert price_of(rule, {"quality": "medium", "seconds": 4}) == 12


def test_boolean_factors_use_true_and_false_keys() -> None:
    rule = PriceRule(base=2, factors={"audio": {"true": 1.5, "false": 1}})
    assert price_of(rule, {"audio": True}) == 3
    assert price_of(rule, {"audio": False}) == 2


def test_parse_accepts_a_valid_rule() -> None:
    rule = parse_price_rule(
        {"base": 8, "per": "duration", "factors": {"quality": {"high": 2}}},
        {"duration": {"type": "string", "enum": ["5", "10"]}, "quality": QUALITY},
    )
    assert rule == PriceRule(base=8, per="duration", factors={"quality": {"high": 2}})


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (None, "price must be a table"),
        ({"base": 0}, "price base must be a positive number"),
        ({"base": True}, "price base must be a positive number"),
        ({"base": 1, "extra": 2}, "price has unknown key 'extra'"),
        ({"base": 1, "per": "nope"}, "price per 'nope' is not an input of this model"),
        ({"base": 1, "per": "quality"}, "price per 'quality' needs a numeric input"),
        ({"base": 1, "factors": {"size": {"x": 2}}}, "price factor for 'size', which is not"),
        ({"base": 1, "factors": {"quality": {"ultra": 2}}}, "quality = 'ultra', which is not"),
        ({"base": 1, "factors": {"quality": {"high": -1}}}, "must be a positive number"),
        ({"base": 1, "factors": {"prompt": {"x": 2}}}, "need an input with an enum or boolean"),
    ],
)
def test_parse_refuses(table: object, problem: str) -> None:
    inputs: dict[str, dict[str, Any]] = {"quality": QUALITY, "prompt": {"type": "string"}}
    with pytest.raises(ValueError, match=problem):
        parse_price_rule(table, inputs)
