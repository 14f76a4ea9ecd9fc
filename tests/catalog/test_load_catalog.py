"""Loading catalog files: an operator's mistake stops the start with a message naming it."""

from pathlib import Path

import pytest

from app.catalog.catalog import PACKAGED_CATALOG_PATH, CatalogError, load_catalog

MINIMAL = """
[[model]]
id = "m1"
type = "image"
scene = "Text to image"
description = "A test model."
timeout_seconds = 60
required = ["prompt"]

[model.inputs]
prompt = { type = "string", minLength = 1 }
quality = { type = "string", enum = ["low", "high"], default = "low" }
seconds = { type = "integer", enum = [5, 10], default = 5 }

[model.price]
base = 3
per = "seconds"
factors.quality = { high = 2 }
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def _load_error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    return message


def test_none_loads_the_packaged_file() -> None:
    assert load_catalog(None).ids == load_catalog(PACKAGED_CATALOG_PATH).ids


def test_a_minimal_file_loads_with_provider_local(tmp_path: Path) -> None:
    model = load_catalog(_write(tmp_path, MINIMAL)).get("m1")
    assert model.provider == "local"
    assert model.required_inputs == ("prompt",)
    normalized = model.normalize({"prompt": "p", "quality": "high"})
    assert normalized == {"prompt": "p", "quality": "high", "seconds": 5}
    assert model.price(normalized) == 30


def test_catalog_error_is_a_value_error() -> None:
    assert issubclass(CatalogError, ValueError)


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ('type = "image"', 'type = "audio"', "model 'm1': unknown type 'audio'"),
        ('id = "m1"', "", "model #1: id must be a non-empty string"),
        ('scene = "Text to image"', "", "model 'm1': scene must be a non-empty string"),
        ("timeout_seconds = 60", "timeout_seconds = 0", "timeout_seconds must be a positive"),
        ("timeout_seconds = 60", "timeout = 60", "model 'm1': unknown key 'timeout'"),
        (
            'type = "string", minLength = 1',
            'type = "strng"',
            "model 'm1': input schema is not valid JSON Schema at properties/prompt/type",
        ),
        (
            'default = "low"',
            'default = "medium"',
            "model 'm1': default of input 'quality' is not valid: 'medium' is not one of",
        ),
        (
            "factors.quality = { high = 2 }",
            "factors.style = { vivid = 2 }",
            "model 'm1': price factor for 'style', which is not an input of this model",
        ),
        (
            "factors.quality = { high = 2 }",
            "factors.quality = { ultra = 2 }",
            "model 'm1': price factor for quality = 'ultra', which is not one of its values",
        ),
        ('per = "seconds"', 'per = "quality"', "price per 'quality' needs a numeric input"),
        ("base = 3", "base = -1", "model 'm1': price base must be a positive number"),
        ('required = ["prompt"]', 'required = ["text"]', "required input 'text' is not in"),
        (
            'required = ["prompt"]',
            'required = ["prompt"]\naliases = { text = "words" }',
            "model 'm1': alias 'text' points to 'words', which is not in inputs",
        ),
        (
            "prompt = {",
            "Prompt = {",
            "model 'm1': input name 'Prompt' must be snake_case",
        ),
    ],
)
def test_bad_model_entries(tmp_path: Path, old: str, new: str, problem: str) -> None:
    assert old in MINIMAL
    assert problem in _load_error(tmp_path, MINIMAL.replace(old, new, 1))


def test_missing_price(tmp_path: Path) -> None:
    text = MINIMAL.split("[model.price]")[0]
    assert "model 'm1': price must be a table" in _load_error(tmp_path, text)


def test_duplicate_id(tmp_path: Path) -> None:
    assert "model 'm1': duplicate id" in _load_error(tmp_path, MINIMAL + MINIMAL)


def test_second_model_is_named(tmp_path: Path) -> None:
    second = MINIMAL.replace('id = "m1"', 'id = "m2"').replace('type = "image"', 'type = "x"')
    assert "model 'm2': unknown type 'x'" in _load_error(tmp_path, MINIMAL + second)


def test_invalid_toml(tmp_path: Path) -> None:
    assert "not valid TOML" in _load_error(tmp_path, MINIMAL + "\nid = \n")


def test_empty_file(tmp_path: Path) -> None:
    assert "no models" in _load_error(tmp_path, "# nothing here\n")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    assert "unknown top-level key 'models'" in _load_error(tmp_path, "[[models]]\nid = 'x'\n")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(CatalogError, match=f"^{path}: cannot read the catalog"):
        load_catalog(path)
