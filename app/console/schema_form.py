"""A model's catalog JSON Schema as an HTML form, and a submitted form back as the model's
input object. Only the shape is decided here (which control, which type a text becomes);
the rules (required, ranges, enums, prices) stay with the catalog, which checks the result
as it checks every API request."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.catalog.catalog import CatalogModel
from app.core.errors import InvalidInput

# A string input longer than this gets a text area rather than a one-line field.
LONG_TEXT = 200


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    control: str  # select | textarea | text | number | urls
    description: str
    required: bool
    default: str  # the value shown first ("" for none)
    choices: tuple[str, ...] = ()  # select: the values offered ("" first when optional)
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    step: str | None = None  # number: "1" for integers, "any" for decimals


def form_fields(model: CatalogModel) -> list[FormField]:
    """One field per input of `model`, in the catalog's order, required ones marked."""
    schema = model.input_schema
    required = set(schema.get("required", ()))
    return [_field(name, prop, name in required) for name, prop in schema["properties"].items()]


def _field(name: str, prop: Mapping[str, Any], required: bool) -> FormField:
    kind, enum = prop.get("type"), prop.get("enum")
    default = _shown(prop["default"]) if "default" in prop else ""
    common: dict[str, Any] = {
        "name": name,
        "label": name.replace("_", " ").capitalize(),
        "description": str(prop.get("description", "")),
        "required": required,
        "default": default,
    }
    if enum or kind == "boolean":
        values = tuple(_shown(v) for v in (enum or (False, True)))
        # Without a default, an optional input may stay unset (the model decides).
        optional = not required and "default" not in prop
        return FormField(control="select", choices=(("",) if optional else ()) + values, **common)
    if kind in ("integer", "number"):
        return FormField(
            control="number",
            minimum=prop.get("minimum"),
            maximum=prop.get("maximum"),
            step="1" if kind == "integer" else "any",
            **common,
        )
    if kind == "array":
        return FormField(control="urls", **common)
    max_length = prop.get("maxLength")
    long_text = max_length is None or max_length > LONG_TEXT
    return FormField(control="textarea" if long_text else "text", max_length=max_length, **common)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def form_inputs(model: CatalogModel, form: Mapping[str, str]) -> dict[str, Any]:
    """The input object of a submitted form: blank fields left out (so defaults apply),
    numbers and booleans typed, URL lists split by line. Raises InvalidInput naming the
    field when a number is not one; everything else is the catalog's to judge."""
    properties: Mapping[str, Any] = model.input_schema["properties"]
    inputs: dict[str, Any] = {}
    for name, prop in properties.items():
        raw = form.get(name)
        if raw is None or not raw.strip():
            continue
        inputs[name] = _typed(name, prop, raw)
    return inputs


def _typed(name: str, prop: Mapping[str, Any], raw: str) -> Any:
    kind, enum = prop.get("type"), prop.get("enum")
    if enum:
        # The enum's own value whose text was chosen (2 for "2"); else the text, refused later.
        return next((v for v in enum if _shown(v) == raw), raw)
    if kind == "boolean":
        return {"true": True, "false": False}.get(raw, raw)
    if kind == "array":
        return [line.strip() for line in raw.splitlines() if line.strip()]
    if kind in ("integer", "number"):
        try:
            number = float(raw.strip())
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise InvalidInput(f"{name} must be a number", field=name)
        if kind == "integer":
            if not number.is_integer():
                raise InvalidInput(f"{name} must be an integer", field=name)
            return int(number)
        return number
    return raw
