"""Task shapes shared by REST and MCP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.core.errors import InvalidInput
from app.core.schema import PublicModel
from app.core.text import check_json_text
from app.jobs.models import PublicState, Task, public_state

_CALLBACK_FIELDS = ("callBackUrl", "callbackUrl")
# Fields of a create request that are not model inputs.
RESERVED_FIELDS = frozenset({"model", "input", *_CALLBACK_FIELDS})


class TaskCreate(BaseModel):
    """A create request, whichever transport or argument format it came in."""

    model: str | None
    input: dict[str, Any]
    callback_url: str | None = None
    # The spelling the caller used (callBackUrl or callbackUrl), for errors about it.
    callback_field: str = "callBackUrl"
    # Set by surfaces that serve one kind of media (generate_image, generate_video).
    media_type: Literal["image", "video"] | None = None

    @classmethod
    def from_arguments(
        cls, arguments: Mapping[str, Any], *, media_type: Literal["image", "video"] | None = None
    ) -> TaskCreate:
        """Accept inputs inside `input` or directly beside `model` (not the same one in both).

        Raises InvalidInput naming the field.
        """
        check_json_text(arguments, field="")
        model = arguments.get("model")
        if model is not None and not isinstance(model, str):
            raise InvalidInput("model must be a string", field="model")
        nested = arguments.get("input")
        if nested is not None and not isinstance(nested, Mapping):
            raise InvalidInput("input must be an object", field="input")
        direct = {k: v for k, v in arguments.items() if k not in RESERVED_FIELDS}
        for name in direct:
            if nested is not None and name in nested:
                raise InvalidInput(
                    f"{name} is given both inside input and beside model; pass it once",
                    field=name,
                )
        callback_url, callback_field = _callback_of(arguments)
        return cls(
            model=model,
            input={**(nested or {}), **direct},
            callback_url=callback_url,
            callback_field=callback_field,
            media_type=media_type,
        )


def _callback_of(arguments: Mapping[str, Any]) -> tuple[str | None, str]:
    """The callback URL, and the name it was given under."""
    given: dict[str, str] = {}
    for name in _CALLBACK_FIELDS:
        value = arguments.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidInput(f"{name} must be a URL string", field=name)
        if value:
            given[name] = value
    if len(set(given.values())) > 1:
        raise InvalidInput("give callBackUrl or callbackUrl, not both", field="callBackUrl")
    for name, value in given.items():
        return value, name
    return None, _CALLBACK_FIELDS[0]


class TaskCreated(PublicModel):
    task_id: str
    model: str
    state: PublicState

    @classmethod
    def of(cls, task: Task) -> TaskCreated:
        return cls(task_id=task.id, model=task.model, state=public_state(task.status))


CallbackState = Literal["none", "pending", "delivered", "failed"]


class TaskRead(PublicModel):
    """The recordInfo `data` object; also the body of a callback."""

    task_id: str
    model: str
    state: PublicState
    stage: Literal["queued", "generating"] | None = Field(
        description="while waiting: queued or generating"
    )
    progress: int
    queue_position: int | None = Field(
        description="while queued: 1 for the next task to start; saturates at 1000 "
        "(1000 means 1000 or further back). While a provider holds the task: its place in "
        "the provider's queue, when the provider reports one"
    )
    param: str = Field(description="the request, as a JSON string")
    result_json: str | None = Field(description='JSON string {"resultUrls": [...]}')
    fail_code: str | None
    fail_msg: str | None
    fail_retryable: bool | None
    credits: int = Field(description="credits charged (0 once refunded)")
    cost_time: int | None
    complete_time: int | None
    create_time: int
    update_time: int
    callback_state: CallbackState = Field(
        default="none",
        description="none without a callBackUrl; pending until its callback is delivered "
        "(delivered) or has used every attempt (failed)",
    )
    parent_task_id: str | None = Field(
        default=None, description="/v1/reimagine tasks: the task this one was made from"
    )
    action: Literal["upscale", "variation", "reroll"] | None = Field(
        default=None, description="/v1/reimagine tasks: what was done to the parent"
    )
    index: int | None = Field(
        default=None, description="/v1/reimagine tasks: the parent's asset used (1-based)"
    )


class EstimateRead(PublicModel):
    model: str
    credits: int
    balance: int
    affordable: bool
    input: dict[str, Any]
