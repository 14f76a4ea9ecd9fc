"""The OpenAPI document, corrected to say what the API really answers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.catalog.catalog import Catalog

_BODY_ROUTES = ("/api/v1/jobs/createTask", "/api/v1/jobs/estimate")


def install_openapi(app: FastAPI, catalog: Catalog) -> None:
    """Validation errors are answered 400 in the envelope (api/errors.py), never with
    FastAPI's default 422, so the 422 entries it documents for every route are dropped; and
    the create and estimate bodies, parsed as plain objects, get their schema from the
    catalog."""

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
            for path in _BODY_ROUTES:
                body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
                body["schema"] = {"$ref": "#/components/schemas/TaskCreate"}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def task_create_schema(catalog: Catalog) -> dict[str, Any]:
    """A create request, one variant per model (the canonical form, inputs inside `input`).

    The inputs may also be given directly beside `model`; a schema of both forms at once
    would not help clients, so the description says it.
    """
    callback = {
        "anyOf": [
            {"type": "string", "format": "uri", "pattern": "^https?://", "maxLength": 2048},
            {"type": "string", "maxLength": 0},
            {"type": "null"},
        ],
        "description": "POSTed the task's outcome when it finishes; empty or null means none",
    }
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
                    "callBackUrl": callback,
                    "callbackUrl": {**callback, "description": "same as callBackUrl"},
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
