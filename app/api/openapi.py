"""The OpenAPI document, corrected to say what the API really answers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.catalog.catalog import Catalog, CatalogModel
from app.core.config import Settings
from app.imagine.schemas import ACTIONS, N_MAX
from app.imagine.service import prompt_limit, reference_input
from app.imagine.styles import Styles

_BODY_ROUTES = ("/api/v1/jobs/createTask", "/api/v1/jobs/estimate")


def install_openapi(app: FastAPI, catalog: Catalog, styles: Styles, settings: Settings) -> None:
    """Validation errors are answered 400 in the envelope (api/errors.py), never with
    FastAPI's default 422, so the 422 entries it documents for every route are dropped; and
    the create, estimate, imagine and reimagine bodies, parsed as plain objects, get their
    schema from the catalog and the styles."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
            components["TaskCreate"] = task_create_schema(catalog)
            components["Imagine"] = imagine_schema(catalog, styles, settings)
            components["Reimagine"] = reimagine_schema()
            bodies = {path: "TaskCreate" for path in _BODY_ROUTES}
            bodies.update({"/v1/imagine": "Imagine", "/v1/reimagine": "Reimagine"})
            for path, name in bodies.items():
                body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
                # The route's example moves beside the schema it would be lost with.
                if examples := body.get("schema", {}).get("examples"):
                    body["example"] = examples[0]
                body["schema"] = {"$ref": f"#/components/schemas/{name}"}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_URL = {"type": "string", "format": "uri", "pattern": "^https?://", "maxLength": 2048}
_CALLBACK = {
    "anyOf": [_URL, {"type": "string", "maxLength": 0}, {"type": "null"}],
    "description": "POSTed the task's outcome when it finishes; empty or null means none",
}
_NO_REFERENCE = {"anyOf": [{"type": "array", "maxItems": 0}, {"type": "null"}]}


def _optional(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def imagine_schema(catalog: Catalog, styles: Styles, settings: Settings) -> dict[str, Any]:
    """An imagine request: one variant per model named, and two for a model chosen from the
    request (text-to-image without `reference`, image-to-image with it)."""
    text = catalog.get(settings.imagine_text_model)
    image = catalog.get(settings.imagine_image_model)
    variants = [_imagine_variant(m, styles, {"const": m.id}, named=True) for m in catalog.list()]
    unnamed = _optional({"type": "string", "maxLength": 0})
    chosen_text = _imagine_variant(text, styles, unnamed, named=False)
    chosen_text["title"] = f"no model, no reference: {text.id}"
    chosen_text["properties"]["reference"] = _NO_REFERENCE
    chosen_image = _imagine_variant(image, styles, unnamed, named=False)
    chosen_image["title"] = f"no model, with reference: {image.id}"
    reference = chosen_image["properties"]["reference"]
    chosen_image["properties"]["reference"] = (
        reference["anyOf"][0] if "anyOf" in reference else reference
    )
    chosen_image["required"] = sorted({*chosen_image["required"], "reference"})
    return {
        "title": "Imagine",
        "description": f"`n` tasks (1-{N_MAX}) of one request, all or none. `model` is "
        "chosen from the request when absent; `style` names a style (empty for none); the "
        "model's own parameters go beside these fields (see GET /api/v1/models).",
        "oneOf": [*variants, chosen_text, chosen_image],
    }


def _imagine_variant(
    model: CatalogModel, styles: Styles, model_schema: dict[str, Any], *, named: bool
) -> dict[str, Any]:
    own = model.input_schema["properties"]
    target = reference_input(model)
    properties: dict[str, Any] = {
        "n": {"type": "integer", "minimum": 1, "maximum": N_MAX, "default": 1},
        "model": model_schema,
        "style": _optional({"type": "string", "enum": ["", *styles.names]}),
        "callback_url": _CALLBACK,
    }
    required = {"model"} if named else set()
    for name, prop in own.items():
        if name == "prompt":
            limit = prompt_limit(model, styles)
            properties["prompt"] = {**prop, "maxLength": limit} if limit else prop
        elif name == target:
            properties["reference"] = prop
        elif name in model.url_inputs:
            continue  # given through `reference` only
        else:
            properties[name] = prop
        shown = "reference" if name == target else name
        if name in model.required:
            required.add(shown)
        else:
            properties[shown] = _optional(properties[shown])
    if target is None:
        properties["reference"] = _NO_REFERENCE
    elif target not in model.required:
        properties["reference"] = {"anyOf": [own[target], *_NO_REFERENCE["anyOf"]]}
    variant: dict[str, Any] = {
        "type": "object",
        "title": model.id,
        "properties": properties,
        "required": sorted(required),
        "additionalProperties": False,
    }
    if rules := model.shape_rules():
        variant["allOf"] = rules
    return variant


def reimagine_schema() -> dict[str, Any]:
    return {
        "title": "Reimagine",
        "type": "object",
        "properties": {
            "task_id": {"type": "string", "minLength": 1, "maxLength": 200},
            "index": {"type": "integer", "minimum": 1, "description": "1-based asset index"},
            "action": {"type": "string", "enum": list(ACTIONS)},
            "prompt": _optional({"type": "string", "maxLength": 4000}),
            "reference": _optional({"type": "array", "items": _URL, "maxItems": 4}),
            "callback_url": _CALLBACK,
        },
        "required": ["task_id", "index", "action"],
        "additionalProperties": False,
    }


def task_create_schema(catalog: Catalog) -> dict[str, Any]:
    """A create request, one variant per model (the canonical form, inputs inside `input`).

    The inputs may also be given directly beside `model`; a schema of both forms at once
    would not help clients, so the description says it.
    """
    variants = []
    for model in catalog.list():
        inputs = {k: v for k, v in model.input_schema.items() if k != "$schema"}
        # null stands for an omitted input (the default applies).
        inputs["properties"] = {
            name: prop if name in model.required else {"anyOf": [prop, {"type": "null"}]}
            for name, prop in inputs["properties"].items()
        }
        if rules := model.shape_rules():
            inputs["allOf"] = rules
        variants.append(
            {
                "type": "object",
                "title": model.id,
                "properties": {
                    "model": {"type": "string", "const": model.id},
                    "input": inputs,
                    "callBackUrl": _CALLBACK,
                    "callbackUrl": {**_CALLBACK, "description": "same as callBackUrl"},
                },
                "required": ["model", "input"],
                "additionalProperties": False,
                "not": {"required": ["callBackUrl", "callbackUrl"]},
            }
        )
    return {
        "title": "TaskCreate",
        "description": "`model` and its inputs (see GET /api/v1/models). The inputs may also "
        "be given directly beside `model` instead of inside `input`.",
        "oneOf": variants,
    }
