"""Tool parameters built from the model catalog, so tool schemas follow the catalog file.

Every parameter accepts any JSON value at the SDK level; the jobs service validates it and
answers with the seed's error texts ("prompt is required", ...), the same as over REST.
The schema still tells clients each field's type and allowed values.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema

from app.catalog.catalog import Catalog

_ANY = inspect.Parameter.empty


def media_properties(catalog: Catalog, media_type: str) -> dict[str, dict[str, Any]]:
    """The union of the input fields of every model of one media type."""
    models = catalog.list(media_type)
    properties: dict[str, dict[str, Any]] = {
        "model": {
            "type": "string",
            "enum": [m.id for m in models],
            "description": "Model id (see list_models).",
        }
    }
    for model in models:
        for name, schema in model.input_schema.get("properties", {}).items():
            properties[name] = _merge(properties.get(name), schema, model.id)
        for alias, canonical in model.aliases.items():
            properties.setdefault(
                alias, {**properties[canonical], "description": f"Alias of {canonical}."}
            )
    properties["input"] = {
        "type": "object",
        "description": "All inputs as one object, instead of passing them directly.",
    }
    properties.update(CREATE_EXTRAS)
    return properties


CREATE_EXTRAS: dict[str, dict[str, Any]] = {
    "callBackUrl": {
        "type": "string",
        "format": "uri",
        "description": "URL gengate POSTs to once the task succeeds or fails: "
        '{"code": 200|501, "msg", "data": <the task, as get_generation_status shows it>}, '
        "signed per Standard Webhooks with the account's whsec_ secret, retried for about "
        "three days. get_generation_status shows callbackState "
        "(none|pending|delivered|failed).",
    },
    "callbackUrl": {"type": "string", "format": "uri", "description": "Same as callBackUrl."},
    "request_id": {
        "type": "string",
        "maxLength": 200,
        "description": "Idempotency key for clients that cannot set the X-Request-Id header.",
    },
}


def _merge(current: dict[str, Any] | None, schema: dict[str, Any], model_id: str) -> dict[str, Any]:
    """Combine one field's schema across models: allowed values are unioned."""
    if current is None:
        return {**schema, "description": _describe(schema, model_id)}
    merged = dict(current)
    if "enum" in current and "enum" in schema:
        merged["enum"] = current["enum"] + [v for v in schema["enum"] if v not in current["enum"]]
        merged["description"] = (
            current.get("description", "").split(" Allowed values depend")[0]
            + " Allowed values depend on the model; see list_models."
        )
    if current.get("default") != schema.get("default"):
        merged.pop("default", None)
    return merged


def _describe(schema: dict[str, Any], model_id: str) -> str:
    return str(schema.get("description") or f"An input of {model_id}.")


def with_parameters(
    fn: Callable[..., Any],
    properties: dict[str, dict[str, Any]],
    *,
    required: tuple[str, ...] = (),
    returns: Any,
) -> Callable[..., Any]:
    """Give `fn(ctx, **arguments)` a signature listing `properties`, for the SDK to publish."""
    context = next(iter(inspect.signature(fn).parameters.values()))
    parameters = [context]
    for name, schema in properties.items():
        annotation = Annotated[
            Any, WithJsonSchema(schema), Field(description=schema.get("description"))
        ]
        parameters.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=annotation,
                default=_ANY if name in required else None,
            )
        )
    fn.__signature__ = inspect.Signature(parameters, return_annotation=returns)  # type: ignore[attr-defined]
    return fn
