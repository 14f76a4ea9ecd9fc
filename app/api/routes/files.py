"""POST /api/v1/files: upload an image from disk, to pass its URL as a task input."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from app.api.bodies import read_body_up_to, replaying
from app.api.deps import PrincipalDep, RuntimeDep, SessionDep
from app.api.envelope import Envelope, error_responses, ok
from app.core.errors import InvalidInput
from app.jobs.views import base_url_of
from app.uploads.schemas import UploadRead
from app.uploads.service import (
    ALLOWED_TYPES,
    MAX_FILENAME,
    UploadSource,
    create_upload,
    upload_from_base64,
    upload_from_file,
    upload_too_large,
)

router = APIRouter(prefix="/api/v1/files", tags=["files"])

_JSON_FIELDS = frozenset({"data", "filename", "contentType"})
# Room for the multipart framing and the other fields around the file.
_MULTIPART_OVERHEAD = 64 * 1024
# What the schema can say about `data`; whether it decodes to an image only the server can.
_BASE64_PATTERN = r"^(data:image/(png|jpeg|webp|gif);base64,)?[A-Za-z0-9+/_=\s-]+$"
_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "The image"}
                },
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["data"],
                "additionalProperties": False,
                "properties": {
                    "data": {
                        "type": "string",
                        "minLength": 1,
                        "pattern": _BASE64_PATTERN,
                        "description": "The image, base64, or a data:image/...;base64, URL",
                    },
                    "filename": {"type": "string", "minLength": 1, "maxLength": MAX_FILENAME},
                    "contentType": {"type": "string", "enum": list(ALLOWED_TYPES)},
                },
            }
        },
    },
}


@router.post(
    "",
    summary="Upload an image (PNG, JPEG, WebP, GIF) to use as a task input",
    description="Send `multipart/form-data` with a `file` field, or JSON with base64 `data`. "
    "The answer's `url` is accepted by `input_urls` / `image_urls` until `expiresAt`.",
    response_model=Envelope[UploadRead],
    responses=error_responses(400, 401, 403, 413, 429),
    openapi_extra={"requestBody": _REQUEST_BODY},
)
async def upload_file(
    request: Request, session: SessionDep, principal: PrincipalDep, runtime: RuntimeDep
) -> Response:
    max_bytes = runtime.settings.upload_max_bytes
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == "multipart/form-data":
        source = await _from_multipart(request, max_bytes)
    elif media_type == "application/json" or media_type.endswith("+json"):
        raw = await _read_body(request, _base64_size(max_bytes), field="data", max_bytes=max_bytes)
        source = _from_json(raw, max_bytes)
    else:
        raise InvalidInput(
            "send multipart/form-data with a file field, or application/json with base64 data",
            field="Content-Type",
            allowed=["multipart/form-data", "application/json"],
        )
    upload = await create_upload(
        session,
        runtime=runtime,
        principal=principal,
        source=source,
        base_url=base_url_of(runtime, str(request.base_url)),
    )
    body = ok(upload).model_dump_json(by_alias=True)
    return Response(body, media_type="application/json")


async def _from_multipart(request: Request, max_bytes: int) -> UploadSource:
    limit = max_bytes + _MULTIPART_OVERHEAD
    body = await _read_body(request, limit, field="file", max_bytes=max_bytes)
    replayed = Request(request.scope, replaying(body, request.receive))
    try:
        form = await replayed.form(max_files=1, max_fields=10)
    except HTTPException as exc:  # Starlette's answer to a malformed multipart body
        raise InvalidInput(
            f"file: the multipart body is malformed: {exc.detail}", field="file"
        ) from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput(
                "file is missing: send the image as a multipart file field named file",
                field="file",
            )
        data = await upload.read()
    finally:
        await form.close()
    return upload_from_file(data, max_bytes=max_bytes)


def _from_json(raw: bytes, max_bytes: int) -> UploadSource:
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"body is not valid JSON: {exc.msg} at position {exc.pos}", field="body"
        ) from None
    except UnicodeDecodeError:
        raise InvalidInput("body is not valid JSON: it is not UTF-8", field="body") from None
    if not isinstance(body, dict):
        raise InvalidInput("body must be a JSON object with a data field", field="body")
    unknown = sorted(str(name) for name in body if name not in _JSON_FIELDS)
    if unknown:
        raise InvalidInput(
            f"unknown field {unknown[0]!r}; allowed: data, filename, contentType",
            field=unknown[0].encode("utf-8", "replace").decode("utf-8"),
            allowed=sorted(_JSON_FIELDS),
        )
    if "data" not in body:
        raise InvalidInput("data is required: the image, base64-encoded", field="data")
    return upload_from_base64(
        body["data"],
        content_type=body.get("contentType"),
        filename=body.get("filename"),
        max_bytes=max_bytes,
    )


async def _read_body(request: Request, limit: int, *, field: str, max_bytes: int) -> bytes:
    """The body, refused as 413 as soon as it passes `limit` (declared or streamed)."""
    try:
        body = await read_body_up_to(request, limit)
    except ClientDisconnect:
        raise InvalidInput("the client closed the connection mid-body", field="body") from None
    if body is None:
        raise upload_too_large(field, max_bytes)
    return body


def _base64_size(max_bytes: int) -> int:
    # base64 grows 4/3; allow line breaks, a data: prefix and the other fields.
    return (max_bytes + 2) // 3 * 4 * 105 // 100 + 4096
