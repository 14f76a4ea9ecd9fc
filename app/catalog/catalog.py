"""The model catalog: which models exist, what input each takes and what it costs.

It is data, not code: `models.toml` next to this module is the packaged default and an
operator may point the app at an edited copy. The file is validated once at start, so a typo
stops the start with a message naming the model and the problem instead of failing requests.
"""

from __future__ import annotations

import builtins
import copy
import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from jsonschema.exceptions import SchemaError

from app.catalog.pricing import PriceRule, parse_price_rule, price_of
from app.core.errors import InvalidInput
from app.core.names import unknown_field
from app.core.text import NO_NUL_PATTERN, NOT_BLANK_PATTERN
from app.core.tomlfile import parse_entries

__all__ = [
    "MEDIA_TYPES",
    "PACKAGED_CATALOG_PATH",
    "Catalog",
    "CatalogError",
    "CatalogModel",
    "MediaType",
    "load_catalog",
]

MediaType = Literal["image", "video"]
MEDIA_TYPES: tuple[MediaType, ...] = ("image", "video")
PACKAGED_CATALOG_PATH = Path(__file__).with_name("models.toml")

_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_ENTRY_KEYS = frozenset(
    {"id", "type", "scene", "description", "provider", "timeout_seconds"}
    | {"required", "aliases", "inputs", "price"}
)
_INPUT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# When one input breaks several rules, the most helpful one (an enum lists the choices) wins.
_RULE_ORDER = {"enum": 0, "type": 1, "format": 2, "pattern": 3}
_A_TYPE = {
    "string": "a string",
    "boolean": "a boolean",
    "integer": "an integer",
    "number": "a number",
    "array": "an array",
    "object": "an object",
    "null": "null",
}

# gengate only ever accepts http(s) URLs for "uri" inputs; fetching them is guarded elsewhere.
_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("uri", raises=ValueError)
def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not value.isascii():
        return False
    parts = urlsplit(value)
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not any(char.isspace() for char in value)
    )


class CatalogError(ValueError):
    """The catalog file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class CatalogModel:
    id: str
    media_type: MediaType
    scene: str
    description: str
    provider: str
    required_inputs: tuple[str, ...]
    input_schema: dict[str, Any]
    pricing: PriceRule
    timeout_seconds: int
    # alias -> canonical input name, e.g. image_urls -> input_urls
    aliases: Mapping[str, str] = field(default_factory=dict)
    _validator: Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        validator = Draft202012Validator(self.input_schema, format_checker=_FORMATS)
        object.__setattr__(self, "_validator", validator)

    @property
    def required(self) -> tuple[str, ...]:
        """Canonical names of the inputs a request must carry."""
        return tuple(self.input_schema.get("required", ()))

    def shape_rules(self) -> builtins.list[dict[str, Any]]:
        """JSON Schema `if`/`then` pairs saying which aspect ratios agree with each pixel
        resolution (the rule `normalize` applies), for documents that describe requests."""
        properties = self.input_schema["properties"]
        ratios = (properties.get("aspect_ratio") or {}).get("enum") or ()
        rules = []
        for resolution in (properties.get("resolution") or {}).get("enum") or ():
            pixels = _PIXELS.match(str(resolution))
            if pixels is None or not ratios:
                continue
            agreeing = [r for r in ratios if not _contradicts(str(r), pixels)]
            rules.append(
                {
                    "if": {
                        "properties": {"resolution": {"const": resolution}},
                        "required": ["resolution"],
                    },
                    "then": {"properties": {"aspect_ratio": {"enum": agreeing}}},
                }
            )
        return rules

    @functools.cached_property
    def url_inputs(self) -> frozenset[str]:
        """Canonical names of the inputs that carry URLs (one, or a list of them)."""
        properties = self.input_schema["properties"]
        return frozenset(
            name
            for name, schema in properties.items()
            if "uri" in (schema.get("format"), (schema.get("items") or {}).get("format"))
        )

    @property
    def input_names(self) -> builtins.list[str]:
        """Every accepted input name, aliases included, sorted."""
        return sorted([*self.input_schema["properties"], *self.aliases])

    def normalize(
        self, raw: Mapping[str, Any], *, aliases: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Canonical input: aliases resolved, lossless coercions applied, defaults filled in.

        `aliases` are names a surface gives inputs on top of the catalog's (/v1/imagine's
        `reference`); errors name an input as it was sent. A None value counts as omitted.
        Raises InvalidInput for the first problem found: missing required inputs first, then
        the others by input name.
        """
        if not isinstance(raw, Mapping):
            raise InvalidInput("input must be an object", field="input")
        properties: dict[str, Any] = self.input_schema["properties"]
        values, sent_as = self._resolve_aliases(raw, aliases or {})
        for name, value in values.items():
            if name in properties:
                values[name] = _coerce(value, properties[name])
        sent = set(values)
        for name, schema in properties.items():
            if name not in values and "default" in schema:
                values[name] = copy.deepcopy(schema["default"])
        # A missing input is named as the surface calls it.
        named = {canonical: alias for alias, canonical in (aliases or {}).items()}
        error = self._first_error(values, sent_as, named)
        if error is not None:
            raise error
        _agree_on_shape(values, sent, properties)
        return {name: values[name] for name in properties if name in values}

    def price(self, normalized: Mapping[str, Any]) -> int:
        """Credits one task with this normalised input costs."""
        return price_of(self.pricing, normalized)

    def canonical(self, sent: str, aliases: Mapping[str, str] | None = None) -> str:
        """The input a name sent by a caller stands for: a surface's `aliases` first (see
        normalize), then the catalog's own."""
        return (aliases or {}).get(sent) or self.aliases.get(sent, sent)

    def _resolve_aliases(
        self, raw: Mapping[str, Any], extra: Mapping[str, str]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Values by canonical name, and the name each was sent as (for error messages)."""
        values: dict[str, Any] = {}
        given: dict[str, builtins.list[str]] = {}
        for key, value in raw.items():
            if value is None:
                continue
            name = self.canonical(key, extra)
            given.setdefault(name, []).append(str(key))
            if name in values and values[name] != value:
                names = " and ".join(sorted(given[name]))
                raise InvalidInput(f"{names} are the same input; pass only one", field=name)
            values[name] = value
        return values, {name: keys[0] for name, keys in given.items()}

    def _first_error(
        self, values: dict[str, Any], sent_as: dict[str, str], named: dict[str, str]
    ) -> InvalidInput | None:
        for name in self.required:
            if _is_blank(values.get(name)):
                shown = named.get(name, name)
                return InvalidInput(f"{shown} is required", field=shown)
        properties = self.input_schema["properties"]
        problems: builtins.list[tuple[tuple[str, int, str], InvalidInput]] = []
        for key in map(str, values):
            if key not in properties:
                problems.append(((key, -1, ""), unknown_field(key, self.input_names)))
        known = {name: value for name, value in values.items() if name in properties}
        for found in self._validator.iter_errors(known):
            if found.validator in ("required", "additionalProperties") or not found.path:
                continue
            rank = _RULE_ORDER.get(str(found.validator), len(_RULE_ORDER))
            order = (str(found.path[0]), rank, "/".join(map(str, found.path)))
            problems.append((order, _input_error(found, sent_as.get(order[0], order[0]))))
        if not problems:
            return None
        return min(problems, key=lambda problem: problem[0])[1]


class Catalog:
    """The loaded models, in file order."""

    def __init__(self, models: Iterable[CatalogModel]) -> None:
        self._models = {model.id: model for model in models}

    @property
    def ids(self) -> builtins.list[str]:
        return builtins.list(self._models)

    def get(self, model_id: str | None) -> CatalogModel:
        """The model with this id. Raises InvalidInput when it is missing or unknown."""
        if model_id is None or (isinstance(model_id, str) and not model_id.strip()):
            raise InvalidInput("model is required", field="model")
        model = self._models.get(model_id) if isinstance(model_id, str) else None
        if model is None:
            raise InvalidInput("model is not supported", field="model", allowed=self.ids)
        return model

    def list(self, media_type: str | None = None) -> builtins.list[CatalogModel]:
        """All models, or those of one media type. Raises InvalidInput for an unknown type."""
        if media_type is None or media_type == "":
            return builtins.list(self._models.values())
        if media_type not in MEDIA_TYPES:
            raise InvalidInput(
                "mediaType must be one of image, video",
                field="mediaType",
                allowed=builtins.list(MEDIA_TYPES),
            )
        return [model for model in self._models.values() if model.media_type == media_type]


def load_catalog(path: Path | None = None) -> Catalog:
    """Read and validate a catalog file; None means the packaged `models.toml`.

    Raises CatalogError naming the file, the model and the problem.
    """
    models = parse_entries(
        path or PACKAGED_CATALOG_PATH,
        table="model",
        id_key="id",
        document="the catalog",
        error=CatalogError,
        parse=_parse_model,
    )
    return Catalog(models)


def _parse_model(entry: Any) -> CatalogModel:
    if not isinstance(entry, dict):
        raise ValueError("must be a table")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    media_type = entry.get("type")
    if media_type not in MEDIA_TYPES:
        raise ValueError(f"unknown type {media_type!r}; use one of image, video")
    timeout = entry.get("timeout_seconds")
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
        raise ValueError("timeout_seconds must be a positive integer")
    inputs = _parse_inputs(entry.get("inputs"))
    required = _parse_required(entry.get("required", []), inputs)
    aliases = _parse_aliases(entry.get("aliases", {}), inputs)
    return CatalogModel(
        id=_text(entry, "id"),
        media_type=media_type,
        scene=_text(entry, "scene"),
        description=_text(entry, "description"),
        provider=_text(entry, "provider", default="local"),
        required_inputs=tuple(
            " or ".join([name, *sorted(a for a, c in aliases.items() if c == name)])
            for name in required
        ),
        input_schema=_build_schema(inputs, required),
        pricing=parse_price_rule(entry.get("price"), inputs),
        timeout_seconds=timeout,
        aliases=MappingProxyType(aliases),
    )


def _text(entry: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key} must be a non-empty string")
    return value


def _parse_inputs(inputs: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(inputs, dict) or not inputs:
        raise ValueError("inputs must be a table with one JSON Schema per input")
    for name, schema in inputs.items():
        if not _INPUT_NAME.match(name):
            raise ValueError(f"input name {name!r} must be snake_case")
        if not isinstance(schema, dict):
            raise ValueError(f"input {name!r} must be a JSON Schema table")
    return inputs


def _parse_required(required: Any, inputs: Mapping[str, Any]) -> builtins.list[str]:
    if not isinstance(required, list):
        raise ValueError("required must be a list of input names")
    for name in required:
        if name not in inputs:
            raise ValueError(f"required input {name!r} is not in inputs")
    return required


def _parse_aliases(aliases: Any, inputs: Mapping[str, Any]) -> dict[str, str]:
    if not isinstance(aliases, dict):
        raise ValueError("aliases must be a table of alias = input name")
    for alias, name in aliases.items():
        if name not in inputs:
            raise ValueError(f"alias {alias!r} points to {name!r}, which is not in inputs")
        if alias in inputs or not _INPUT_NAME.match(alias):
            raise ValueError(f"alias {alias!r} must be a new snake_case name")
    return aliases


def _build_schema(inputs: dict[str, Any], required: builtins.list[str]) -> dict[str, Any]:
    inputs = {name: _text_rules(prop, name in required) for name, prop in inputs.items()}
    schema = {
        "$schema": _DIALECT,
        "type": "object",
        "properties": inputs,
        "required": required,
        "additionalProperties": False,
    }
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        where = "/".join(map(str, error.path))
        message = f"input schema is not valid JSON Schema at {where}: {error.message}"
        raise ValueError(message) from error
    for name, prop in inputs.items():
        if "default" in prop:
            validator = Draft202012Validator(prop, format_checker=_FORMATS)
            problem = next(iter(validator.iter_errors(prop["default"])), None)
            if problem is not None:
                raise ValueError(f"default of input {name!r} is not valid: {problem.message}")
    return schema


def _text_rules(prop: dict[str, Any], required: bool) -> dict[str, Any]:
    """Say in a free-text input's schema what every request is held to anyway: no NUL
    characters, and something besides blanks when the input is required."""
    if prop.get("type") != "string" or {"pattern", "enum", "const", "format"} & set(prop):
        return prop
    return {**prop, "pattern": NOT_BLANK_PATTERN if required else NO_NUL_PATTERN}


def _coerce(value: Any, schema: Mapping[str, Any]) -> Any:
    """Lossless fixes for what clients commonly send: duration 5 for "5", scale 4.0 for 4."""
    kind, enum = schema.get("type"), schema.get("enum") or ()
    number = isinstance(value, int | float) and not isinstance(value, bool)
    whole = number and math.isfinite(value) and value == int(value)
    if kind == "string" and whole and str(int(value)) in enum:
        return str(int(value))
    if kind == "integer" and isinstance(value, float) and whole:
        return int(value)
    return value


_PIXELS = re.compile(r"^(\d+)x(\d+)$")
_RATIO = re.compile(r"^(\d+):(\d+)$")


def _agree_on_shape(values: dict[str, Any], sent: set[str], properties: Mapping[str, Any]) -> None:
    """An explicit pixel `resolution` fixes the shape: a sent `aspect_ratio` must agree with
    it, and a defaulted one is replaced by the resolution's own. Raises InvalidInput."""
    pixels = _PIXELS.match(str(values.get("resolution", "")))
    ratio = _RATIO.match(str(values.get("aspect_ratio", "")))
    if pixels is None or ratio is None:
        return
    if not _contradicts(ratio[0], pixels):
        return
    if "aspect_ratio" in sent:
        raise InvalidInput(
            f"aspect_ratio {ratio[0]} contradicts resolution {pixels[0]}; "
            "give one of them, or values that agree",
            field="aspect_ratio",
        )
    allowed = properties.get("aspect_ratio", {}).get("enum") or ()
    matching = [c for c in allowed if _RATIO.match(str(c)) and not _contradicts(str(c), pixels)]
    if matching:
        values["aspect_ratio"] = matching[0]
    elif "auto" in allowed:
        values["aspect_ratio"] = "auto"


def _contradicts(aspect_ratio: str, pixels: re.Match[str]) -> bool:
    """True when a ratio such as "16:9" does not describe a WxH size ("auto" never does)."""
    ratio = _RATIO.match(aspect_ratio)
    if ratio is None:
        return False
    return int(pixels[1]) * int(ratio[2]) != int(pixels[2]) * int(ratio[1])


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, list | tuple) and not value


def _input_error(error: ValidationError, name: str) -> InvalidInput:
    where = name + "".join(f"[{part}]" for part in builtins.list(error.path)[1:])
    rule, expected = str(error.validator), cast(Any, error.validator_value)
    if rule == "enum":
        shown = ", ".join(_show(choice) for choice in expected)
        return InvalidInput(f"{where} must be one of {shown}", field=name, allowed=list(expected))
    described = _describe(rule, expected)
    if described is None:
        return InvalidInput(f"{where} is not valid: {error.message}", field=name)
    return InvalidInput(f"{where} {described}", field=name)


def _describe(rule: str, expected: Any) -> str | None:
    if rule == "type":
        kinds = expected if isinstance(expected, list) else [expected]
        return "must be " + " or ".join(_A_TYPE.get(str(kind), str(kind)) for kind in kinds)
    if (rule == "format" and expected == "uri") or (
        rule == "pattern" and str(expected).startswith("^https?://")
    ):
        return "must be an http(s) URL"
    plural = "" if expected == 1 else "s"
    templates = {
        "format": f"must be a valid {expected}",
        "pattern": f"must match the pattern {expected}",
        "maxItems": f"must have at most {expected} item{plural}",
        "minItems": f"must have at least {expected} item{plural}",
        "maxLength": f"must be at most {expected} character{plural}",
        "minLength": f"must be at least {expected} character{plural}",
        "maximum": f"must be at most {expected}",
        "minimum": f"must be at least {expected}",
        "exclusiveMaximum": f"must be less than {expected}",
        "exclusiveMinimum": f"must be greater than {expected}",
        "uniqueItems": "must not repeat items",
    }
    return templates.get(rule)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
