"""Named styles for /v1/imagine: a prompt template and default parameters each.

Data, not code: `styles.toml` next to this module is the packaged default and an operator may
point GENGATE_STYLES_PATH at an edited copy. It is checked once at start against the model
catalog, so a typo stops the start instead of failing requests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from jsonschema import Draft202012Validator

from app.catalog.catalog import Catalog
from app.core.config import Settings
from app.core.errors import InvalidInput
from app.core.tomlfile import parse_entries

PACKAGED_STYLES_PATH = Path(__file__).with_name("styles.toml")
PROMPT_SLOT = "{prompt}"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,49}$")
IMAGINE_MODEL_SETTINGS = (
    "imagine_text_model",
    "imagine_image_model",
    "imagine_upscale_model",
    "imagine_video_upscale_model",
)
_KEYS = frozenset({"name", "description", "prompt", "params"})


class ImagineConfigError(ValueError):
    """The style file is missing, malformed or names inputs no model has, or an imagine
    setting names a model the catalog lacks."""


@dataclass(frozen=True)
class Style:
    name: str
    description: str
    prompt: str
    params: Mapping[str, Any]

    def apply(self, prompt: str) -> str:
        """The template with the caller's prompt in its slot."""
        before, _, after = self.prompt.partition(PROMPT_SLOT)
        return before + prompt + after

    def unapply(self, text: str) -> str | None:
        """The caller's prompt that `apply` made `text` of; None if it was not made so."""
        before, _, after = self.prompt.partition(PROMPT_SLOT)
        if len(text) < len(before) + len(after) or not (
            text.startswith(before) and text.endswith(after)
        ):
            return None
        return text[len(before) : len(text) - len(after)]


class Styles:
    """The styles a request may name, by name."""

    def __init__(self, styles: list[Style]) -> None:
        self._styles = {style.name: style for style in styles}
        # The most characters a style adds to a prompt: a caller's prompt leaves this much
        # room under the model's limit, whichever style it names.
        self.room = max(len(style.prompt) - len(PROMPT_SLOT) for style in styles)

    @property
    def names(self) -> list[str]:
        return list(self._styles)

    def all(self) -> list[Style]:
        return list(self._styles.values())

    def get(self, name: str | None) -> Style | None:
        """The named style; None for no style (absent or ""). Raises InvalidInput."""
        if name is None or name == "":
            return None
        style = self._styles.get(name)
        if style is None:
            raise InvalidInput(
                f"style must be one of {', '.join(self._styles)}, or empty for none",
                field="style",
                allowed=self.names,
            )
        return style


def load_imagine(settings: Settings, catalog: Catalog) -> Styles:
    """What the imagine surface needs at start: its settings' models checked against the
    catalog, and the styles loaded. Raises ImagineConfigError."""
    check_imagine_models(settings, catalog)
    return load_styles(settings.styles_path, catalog)


def check_imagine_models(settings: Settings, catalog: Catalog) -> None:
    """Every model an imagine setting names is in the catalog. Raises ImagineConfigError."""
    for name in IMAGINE_MODEL_SETTINGS:
        model_id = getattr(settings, name)
        if model_id is not None and model_id not in catalog.ids:
            raise ImagineConfigError(
                f"GENGATE_{name.upper()} is {model_id!r}, not a model of the catalog; "
                f"choose one of {', '.join(catalog.ids)}"
            )


def load_styles(path: Path | None, catalog: Catalog) -> Styles:
    """The style file (the packaged one when `path` is None). Raises ImagineConfigError."""
    inputs: dict[str, list[Draft202012Validator]] = {}
    for model in catalog.list():
        for name, schema in model.input_schema["properties"].items():
            inputs.setdefault(name, []).append(Draft202012Validator(schema))
    styles = parse_entries(
        path or PACKAGED_STYLES_PATH,
        table="style",
        id_key="name",
        document="the style catalog",
        error=ImagineConfigError,
        parse=lambda entry: _parse(entry, inputs),
    )
    return Styles(styles)


def _parse(entry: Any, inputs: Mapping[str, list[Draft202012Validator]]) -> Style:
    if not isinstance(entry, dict):
        raise ValueError("must be a table")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; expected {', '.join(sorted(_KEYS))}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError("name must be 1 to 50 lowercase letters, digits and dashes")
    prompt = entry.get("prompt")
    if not isinstance(prompt, str) or PROMPT_SLOT not in prompt:
        raise ValueError(f"prompt must be a string holding {PROMPT_SLOT}")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise ValueError("description must be a string")
    params = entry.get("params", {})
    if not isinstance(params, dict):
        raise ValueError("params must be a table of input = value")
    for key, value in params.items():
        if key not in inputs or key == "prompt":
            raise ValueError(f"params.{key} is not an input of any model in the catalog")
        # A default some model takes as is; the others skip it (see the imagine service).
        if not any(schema.is_valid(value) for schema in inputs[key]):
            raise ValueError(f"params.{key} = {value!r} is not a value any model takes")
    return Style(name, description, prompt, MappingProxyType(dict(params)))
