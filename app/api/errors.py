"""Maps every failure to the envelope once. Nothing here leaks a stack trace or a secret."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.core.errors import AppError, AuthenticationFailed, RateLimited, ServiceUnavailable
from app.core.outages import OUTAGE_SOURCES, is_outage

log = logging.getLogger("gengate.api")
_UNPARSABLE_BODY = "There was an error parsing the body"


class _ErrorJSONResponse(JSONResponse):
    """ASCII-escaped JSON: an error may quote what the client sent, and a lone surrogate in
    it must come back escaped rather than break the encoder (and the connection)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(
    status: int, payload: dict[str, Any], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"code": status, "msg": payload["error"], "data": payload}
    return _ErrorJSONResponse(body, status_code=status, headers=headers)


def _field_name(loc: tuple[Any, ...]) -> str:
    # ("body", "input", "prompt") -> "input.prompt"; the transport part is noise to a client.
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "request"


async def _app_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    headers = None
    if isinstance(exc, AuthenticationFailed):
        headers = {"WWW-Authenticate": 'Bearer realm="gengate"'}
    elif isinstance(exc, RateLimited):
        headers = rate_limit_headers(exc)
    return error_response(exc.status, exc.payload(), headers)


def rate_limit_headers(exc: RateLimited) -> dict[str, str]:
    retry_after = str(exc.details["retryAfter"])
    return {
        "Retry-After": retry_after,
        "RateLimit-Limit": str(exc.details["limit"]),
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": retry_after,
        "RateLimit-Policy": f"{exc.details['limit']};w={exc.details['windowSeconds']}",
    }


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    payload = _describe_invalid(first, request.headers.get("content-type"))
    return error_response(400, payload)


def _describe_invalid(error: Mapping[str, Any], content_type: str | None) -> dict[str, Any]:
    """One validation error as the envelope's data: a sentence naming the field."""
    kind, loc = str(error.get("type", "")), tuple(error.get("loc", ()))
    if kind == "json_invalid":
        position = loc[1] if len(loc) > 1 else 0
        reason = str((error.get("ctx") or {}).get("error", "invalid JSON"))
        message = f"request body is not valid JSON: {reason} at position {position}"
        return {"error": message, "field": "body", "reason": reason, "position": position}
    if loc == ("body",) and isinstance(error.get("input"), bytes | bytearray):
        sent = content_type or "no Content-Type"
        message = f"send the request body as JSON with Content-Type: application/json (got {sent})"
        return {"error": message, "field": "body"}
    if loc == ("body",) and kind in ("dict_type", "model_attributes_type"):
        return {"error": "request body must be a JSON object", "field": "body"}
    field = _field_name(loc)
    if kind == "missing":
        return {"error": f"{field} is required", "field": field}
    reason = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return {"error": f"{field}: {reason}", "field": field, "reason": reason}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
    headers = exc.headers
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        # FastAPI's text for a body json.loads refused outright (not UTF-8, nested too deep).
        message = "request body is not valid JSON: send UTF-8 JSON text"
        return error_response(400, {"error": message, "field": "body"})
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(_methods_of(request))}
    if request.url.path.startswith("/v1/"):
        # No /v1 route matched, so its route class never ran: the seed's shape from here.
        return _ErrorJSONResponse({"message": message}, exc.status_code, headers)
    return error_response(exc.status_code, {"error": message}, headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _methods_of(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, {"error": "internal error"})


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After for a database or Redis outage; anything else is a 500."""
    if not is_outage(exc):
        return await _unexpected(request, exc)
    unavailable = exc if isinstance(exc, ServiceUnavailable) else ServiceUnavailable()
    cause = exc.__cause__ if isinstance(exc, ServiceUnavailable) and exc.__cause__ else exc
    log.warning("answered 503: %s: %s", type(cause).__name__, _first_line(cause))
    headers = {"Retry-After": str(unavailable.details["retryAfter"])}
    return error_response(unavailable.status, unavailable.payload(), headers)


def _first_line(exc: BaseException) -> str:
    return next(iter(str(exc).splitlines()), "")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(ServiceUnavailable, _unavailable)
    for outage_type in OUTAGE_SOURCES:
        app.add_exception_handler(outage_type, _unavailable)
