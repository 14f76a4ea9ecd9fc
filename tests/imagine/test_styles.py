"""The style catalog: the packaged file, an operator's file, and every mistake stopping the
start with the file, the style and the problem."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.catalog.catalog import Catalog, load_catalog
from app.cli import app as cli
from app.core.config import Settings
from app.core.errors import InvalidInput
from app.imagine.styles import ImagineConfigError, check_imagine_models, load_styles


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(None)


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "styles.toml"
    path.write_text(text)
    return path


def test_packaged_styles_wrap_the_prompt_and_read_it_back(catalog: Catalog) -> None:
    styles = load_styles(None, catalog)
    assert styles.names == ["photo", "watercolor", "anime", "cinematic", "product"]
    watercolor = styles.get("watercolor")
    assert watercolor is not None
    wrapped = watercolor.apply("a {prompt} cat")  # braces in the caller's text stay as they are
    assert wrapped.startswith("a {prompt} cat, watercolor painting")
    assert watercolor.unapply(wrapped) == "a {prompt} cat"
    assert watercolor.unapply("a cat, in oils") is None
    assert styles.get("") is None and styles.get(None) is None
    assert styles.room == max(len(s.prompt) - len("{prompt}") for s in styles.all())


def test_an_unknown_style_names_the_field_and_lists_the_styles(catalog: Catalog) -> None:
    with pytest.raises(InvalidInput) as caught:
        load_styles(None, catalog).get("oil")
    assert caught.value.details == {
        "field": "style",
        "allowed": ["photo", "watercolor", "anime", "cinematic", "product"],
    }


def test_an_operators_file_replaces_the_packaged_one(catalog: Catalog, tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        '[[style]]\nname = "noir"\ndescription = "Black and white"\n'
        'prompt = "film noir still of {prompt}"\nparams = { aspect_ratio = "16:9" }\n',
    )
    styles = load_styles(path, catalog)
    assert styles.names == ["noir"]
    noir = styles.get("noir")
    assert noir is not None and dict(noir.params) == {"aspect_ratio": "16:9"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[[style]]\nname = "Bad Name"\nprompt = "{prompt}"\n', "name must be"),
        ('[[style]]\nname = "a"\nprompt = "no slot"\n', "prompt must be a string holding"),
        ('[[style]]\nname = "a"\n', "prompt must be a string holding"),
        ('[[style]]\nname = "a"\nprompt = "{prompt}"\ncolour = 1\n', "unknown key 'colour'"),
        ('[[style]]\nname = "a"\nprompt = "{prompt}"\nparams = { tone = "x" }\n', "params.tone"),
        (
            '[[style]]\nname = "a"\nprompt = "{prompt}"\nparams = { aspect_ratio = "16:10" }\n',
            "is not a value any model takes",
        ),
        ('[[style]]\nname = "a"\nprompt = "{prompt}"\nparams = 3\n', "params must be a table"),
        (
            '[[style]]\nname = "a"\nprompt = "{prompt}"\n' * 2,
            "duplicate name",
        ),
        ("styles = 1\n", "unknown top-level key"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_a_mistake_stops_the_start_naming_it(
    catalog: Catalog, tmp_path: Path, text: str, problem: str
) -> None:
    with pytest.raises(ImagineConfigError) as caught:
        load_styles(_file(tmp_path, text), catalog)
    assert str(tmp_path) in str(caught.value) and problem in str(caught.value)


def test_imagine_settings_must_name_catalog_models(catalog: Catalog) -> None:
    check_imagine_models(Settings(), catalog)
    with pytest.raises(ImagineConfigError) as caught:
        check_imagine_models(Settings(imagine_upscale_model="upscale-9000"), catalog)
    assert "GENGATE_IMAGINE_UPSCALE_MODEL is 'upscale-9000'" in str(caught.value)


def test_the_cli_says_which_file_is_wrong(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENGATE_STYLES_PATH", str(_file(tmp_path, '[[style]]\nname = "a"\n')))
    result = CliRunner().invoke(cli, ["--json", "channels", "list"])
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error.startswith("invalid imagine configuration: ") and "style 'a'" in error
    assert "Traceback" not in result.stdout + result.stderr
