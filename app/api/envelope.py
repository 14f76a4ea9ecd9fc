"""The `{"code", "msg", "data"}` envelope of the /api/v1 surface (HTTP status equals code)."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    code: int = 200
    msg: str = "success"
    data: T


class ErrorData(BaseModel):
    error: str
    reason: str | None = None
    field: str | None = None

    model_config = {"extra": "allow"}


class ErrorEnvelope(BaseModel):
    code: int
    msg: str
    data: ErrorData


def ok(data: T) -> Envelope[T]:
    return Envelope[T](data=data)


def ok_json(data_json: bytes) -> bytes:
    """The success envelope around data already serialised: the bytes `ok(data)` dumps to."""
    return b'{"code":200,"msg":"success","data":' + data_json + b"}"


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the error envelope for each status."""
    return {status: {"model": ErrorEnvelope} for status in statuses}
