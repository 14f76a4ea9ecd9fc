"""Shapes of /v1/imagine and /v1/reimagine (seed 004), shared by REST and MCP.

The bodies are parsed by hand rather than by a pydantic model: beside the seed's fields an
imagine body carries the chosen model's own parameters, which the model's catalog schema
validates, and every error must name the field as the caller wrote it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pydantic import Field

from app.core.errors import InvalidInput
from app.core.schema import PublicModel
from app.core.text import check_json_text

N_MAX = 8
ACTIONS = ("upscale", "variation", "reroll")
Action = Literal["upscale", "variation", "reroll"]
_IMAGINE_FIELDS = ("n", "model", "style", "prompt", "reference", "callback_url")
_REIMAGINE_FIELDS = ("task_id", "index", "action", "prompt", "reference", "callback_url")


class TaskIds(PublicModel):
    """What /v1/imagine and /v1/reimagine answer: the created tasks' ids (seed)."""

    ids: list[str]


class StyleRead(PublicModel):
    name: str
    description: str
    prompt: str = Field(description="The template; {prompt} stands for the caller's prompt")
    params: dict[str, Any] = Field(description="Defaults where the request sets none")


class StyleList(PublicModel):
    """The styles /v1/imagine takes as `style` ("" for none)."""

    styles: list[StyleRead]


@dataclass(frozen=True)
class ImagineRequest:
    n: int
    model: str | None
    style: str | None
    prompt: str | None
    reference: list[str]
    callback_url: str | None
    params: dict[str, Any] = field(default_factory=dict)  # the model's own parameters

    @classmethod
    def parse(cls, body: object) -> ImagineRequest:
        """Raises InvalidInput naming the field."""
        raw = _object(body)
        n = _integer(raw.get("n", 1))
        if n is None or not 1 <= n <= N_MAX:
            raise InvalidInput(f"n must be an integer from 1 to {N_MAX}", field="n")
        return cls(
            n=n,
            model=_text(raw, "model") or None,
            style=_text(raw, "style"),
            prompt=_text(raw, "prompt"),
            reference=_urls(raw),
            callback_url=_text(raw, "callback_url") or None,
            params={k: v for k, v in raw.items() if k not in _IMAGINE_FIELDS},
        )


@dataclass(frozen=True)
class ReimagineRequest:
    task_id: str
    index: int
    action: Action
    prompt: str | None
    reference: list[str]
    callback_url: str | None

    @classmethod
    def parse(cls, body: object) -> ReimagineRequest:
        """Raises InvalidInput naming the field."""
        raw = _object(body)
        unknown = sorted(set(raw) - set(_REIMAGINE_FIELDS))
        if unknown:
            raise InvalidInput(
                f"{unknown[0]} is not a field of reimagine; the fields are "
                + ", ".join(_REIMAGINE_FIELDS),
                field=unknown[0],
            )
        task_id = _text(raw, "task_id")
        if not task_id:
            raise InvalidInput("task_id is required", field="task_id")
        if raw.get("index") is None:
            raise InvalidInput("index is required", field="index")
        index = _integer(raw["index"])
        if index is None or index < 1:
            raise InvalidInput("index must be an integer from 1", field="index")
        action = raw.get("action")
        if action is None:
            raise InvalidInput("action is required", field="action")
        if action not in ACTIONS:
            raise InvalidInput(
                f"action must be one of {', '.join(ACTIONS)}", field="action", allowed=list(ACTIONS)
            )
        return cls(
            task_id=task_id,
            index=index,
            action=cast(Action, action),
            prompt=_text(raw, "prompt") or None,
            reference=_urls(raw),
            callback_url=_text(raw, "callback_url") or None,
        )


def _object(body: object) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise InvalidInput("the body must be a JSON object", field="body")
    check_json_text(body, field="")
    return body


def _integer(value: object) -> int | None:
    """An integer as JSON means one (2.0 is 2); None for anything else, booleans too."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _text(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", field=name)
    return value


def _urls(raw: Mapping[str, Any]) -> list[str]:
    value = raw.get("reference")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(url, str) for url in value):
        raise InvalidInput("reference must be an array of URL strings", field="reference")
    return list(value)
