"""Text that every layer below can store and print.

JSON may carry strings Python holds but cannot encode (a lone surrogate such as "\\ud800")
and NUL characters, which PostgreSQL text columns refuse. Both are refused at the edge, on
every surface and both databases alike, with an error naming the field, so neither reaches a
query, a log line or a response encoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from app.core.errors import InvalidInput

NO_NUL_PATTERN = "^[^\\u0000]*$"
# Some character that is neither blank nor NUL, and no NUL anywhere.
NOT_BLANK_PATTERN = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None when it can."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode text (a lone surrogate at position {exc.start})"
    return None


def check_text(value: str, *, field: str) -> str:
    """Return `value`, or raise InvalidInput naming `field`."""
    problem = text_problem(value)
    if problem is not None:
        raise InvalidInput(f"{field} {problem}", field=field)
    return value


def check_json_text(value: Any, *, field: str) -> None:
    """Check every string of a parsed JSON value, names of object members included.

    Raises InvalidInput naming the member the bad string sits in (`input.prompt`), or its
    parent when the member's own name is the bad string.
    """
    if isinstance(value, str):
        check_text(value, field=field)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            name = str(key)
            problem = text_problem(name)
            if problem is not None:
                where = field or "body"
                raise InvalidInput(f"{where}: a field name {problem}", field=where)
            check_json_text(item, field=f"{field}.{name}" if field else name)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_json_text(item, field=f"{field}[{index}]")


def _validated(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


class _SaysNoNul:
    """Adds the NUL rule to a string's JSON Schema, keeping its other constraints."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema.setdefault("pattern", NO_NUL_PATTERN)
        return schema


# A `str` for request models and parameters: the check above, and a schema that says so.
SafeText = Annotated[str, AfterValidator(_validated), _SaysNoNul()]
