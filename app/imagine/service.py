"""The imagine surface (seed 004): styles, model choice, reimagine actions and lineage.

Both calls build drafts and hand them to the jobs engine (app.jobs.service.create_group):
the same keys, credits, limits, workers, channels and callbacks as jobs.createTask.

| request | model |
|---|---|
| imagine, `model` given | that model |
| imagine, no model, `reference` given | GENGATE_IMAGINE_IMAGE_MODEL |
| imagine, no model, no reference | GENGATE_IMAGINE_TEXT_MODEL |
| reimagine `upscale` | GENGATE_IMAGINE_UPSCALE_MODEL (video: ..._VIDEO_UPSCALE_MODEL) |
| reimagine `variation` | the source's model if it redraws (image + prompt), else the image model |
| reimagine `reroll` | the source's model, style and parameters (a new `seed` if it has one) |

A reimagine needs a completed source task of the same key; `index` picks one of its assets,
1-based, which a new task reads from our own storage through a signed URL that outlives the
task's deadline. Each new task records parent_task_id, action and source_index.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.catalog.catalog import CatalogModel
from app.core.errors import InvalidInput
from app.core.ids import now_ms
from app.core.names import unknown_field
from app.imagine.schemas import ImagineRequest, ReimagineRequest, TaskIds
from app.imagine.styles import Style, Styles
from app.jobs.models import Task, TaskStatus
from app.jobs.service import (
    Draft,
    check_request_id,
    check_urls,
    create_group,
    price_inputs,
    urls_to_check,
)
from app.jobs.views import base_url_of, get_task
from app.keys.scopes import Scope
from app.keys.service import Principal
from app.limits.service import GROUP_CREATE
from app.media.models import MediaFile
from app.media.service import list_task_media, resigned_media_url, signed_media_url
from app.runtime import Runtime

REFERENCE = "reference"
_SEED = "seed"
_SEED_MAX = 2**31 - 1
# The URL inputs a `reference` goes to, in order of preference when a model has several.
_REFERENCE_INPUTS = ("input_urls", "image_urls")


async def imagine(
    session: AsyncSession,
    *,
    runtime: Runtime,
    principal: Principal,
    body: Mapping[str, Any],
    request_id: str | None = None,
) -> TaskIds:
    """Create `n` tasks from one prompt, all or none. Raises PermissionDenied, RateLimited,
    InvalidInput (naming the field), Conflict, TooManyActiveTasks, InsufficientCredits."""
    principal.require(Scope.TASKS_CREATE)
    request = ImagineRequest.parse(body)
    await _admit(runtime, principal, request_id, creations=request.n)
    style = runtime.styles.get(request.style)
    if request.model is not None:
        model = runtime.catalog.get(request.model)
    elif request.reference:
        model = runtime.catalog.get(runtime.settings.imagine_image_model)
    else:
        model = runtime.catalog.get(runtime.settings.imagine_text_model)
    recorded = {**body, "n": request.n, "model": model.id}
    draft = await _draft(
        runtime,
        model,
        style=style,
        prompt=request.prompt,
        reference=request.reference,
        params=request.params,
        callback_url=request.callback_url,
        extra={"request_json": _json(recorded)},
    )
    result = await create_group(
        session,
        runtime=runtime,
        principal=principal,
        drafts=[draft] * request.n,
        request_id=request_id,
        request_hash=_hash("imagine", body),
    )
    return TaskIds(ids=result.task_ids)


async def reimagine(
    session: AsyncSession,
    *,
    runtime: Runtime,
    principal: Principal,
    body: Mapping[str, Any],
    request_id: str | None = None,
    base_url: str | None = None,
) -> TaskIds:
    """Upscale, vary or reroll one asset of a completed task; one new task with its lineage.

    Raises PermissionDenied, RateLimited, InvalidInput (naming the field), NotFound,
    Conflict, TooManyActiveTasks, InsufficientCredits.
    """
    principal.require(Scope.TASKS_CREATE)
    request = ReimagineRequest.parse(body)
    await _admit(runtime, principal, request_id, creations=1)
    source = await get_task(session, principal=principal, task_id=request.task_id)
    if source.status != TaskStatus.SUCCESS.value:
        raise InvalidInput(
            f"task_id: the task is {source.status}; only a completed task can be reimagined",
            field="task_id",
        )
    assets = await list_task_media(session, task_id=source.id)
    if not 1 <= request.index <= len(assets):
        raise InvalidInput(
            f"index must be from 1 to {len(assets)}, the task's assets", field="index"
        )
    model, style, prompt, reference, params = _action_plan(runtime, request, source)
    if request.action != "reroll":
        asset_url = _asset_url(runtime, assets[request.index - 1], model, base_url)
        reference = [asset_url, *request.reference]
    recorded = {**body, "model": model.id}
    draft = await _draft(
        runtime,
        model,
        style=style,
        prompt=prompt,
        reference=reference,
        params=params,
        callback_url=request.callback_url,
        extra={
            "request_json": _json(recorded),
            "parent_task_id": source.id,
            "action": request.action,
            "source_index": request.index,
        },
    )
    result = await create_group(
        session,
        runtime=runtime,
        principal=principal,
        drafts=[draft],
        request_id=request_id,
        request_hash=_hash("reimagine", body),
    )
    return TaskIds(ids=result.task_ids)


async def _admit(
    runtime: Runtime, principal: Principal, request_id: str | None, *, creations: int
) -> None:
    """Count the creations against the key's createTask limit and check the request id.
    Raises RateLimited, InvalidInput."""
    await runtime.limiter.hit(principal, GROUP_CREATE, cost=creations)
    if request_id is not None:
        check_request_id(request_id, field="X-Request-Id")


def _action_plan(
    runtime: Runtime, request: ReimagineRequest, source: Task
) -> tuple[CatalogModel, Style | None, str | None, list[str], dict[str, Any]]:
    """(model, style, prompt, reference, parameters) of the new task, before the asset."""
    settings = runtime.settings
    source_model = runtime.catalog.get(source.model)
    if request.action == "upscale":
        upscaler = (
            settings.imagine_upscale_model
            if source.media_type == "image"
            else settings.imagine_video_upscale_model
        )
        if upscaler is None:
            raise InvalidInput(
                f"action: upscale is not available for {source.media_type} tasks",
                field="action",
                allowed=["variation", "reroll"] if source.media_type == "image" else ["reroll"],
            )
        if request.reference:
            raise InvalidInput(
                "reference: upscale works on the source asset alone; give no reference",
                field=REFERENCE,
            )
        return runtime.catalog.get(upscaler), None, request.prompt, [], {}
    style, prompt, inputs = _source_request(runtime, source)
    prompt = request.prompt or prompt
    if request.action == "variation":
        if source.media_type != "image":
            raise InvalidInput(
                f"action: variation is not available for {source.media_type} tasks",
                field="action",
                allowed=["reroll"],
            )
        model = (
            source_model
            if _redraws(source_model)
            else runtime.catalog.get(settings.imagine_image_model)
        )
        return model, style, prompt, [], _taken(model, inputs)
    # reroll: the source request again, with its references unless new ones are given
    source_input = reference_input(source_model)
    held = inputs.pop(source_input, None) if source_input else None
    # Our own files among them were signed for the source's run: signed again for this one.
    expires_at_s = _expiry_for(runtime, source_model)
    secret = runtime.signing_secret
    reference = request.reference or [
        resigned_media_url(url, secret=secret, expires_at_s=expires_at_s) or url
        for url in held or []
    ]
    if _SEED in source_model.input_schema["properties"]:
        inputs[_SEED] = secrets.randbelow(_SEED_MAX)
    return source_model, style, prompt, reference, inputs


def _source_request(
    runtime: Runtime, source: Task
) -> tuple[Style | None, str | None, dict[str, Any]]:
    """The source task's style, its prompt before the style wrapped it, and its other
    parameters. A style the operator has since removed or reworded is dropped; the prompt is
    then the one the model was given, the style's words included, so a reroll still asks for
    the same thing."""
    inputs: dict[str, Any] = json.loads(source.input_json)
    prompt = inputs.pop("prompt", None)
    if source.style in runtime.styles.names and isinstance(prompt, str):
        style = runtime.styles.get(source.style)
        written = style.unapply(prompt) if style is not None else None
        if written is not None:
            return style, written, inputs
    return None, prompt, inputs


def _redraws(model: CatalogModel) -> bool:
    """Whether `model` draws a new image from an image and a prompt (an upscaler does not)."""
    return (
        model.media_type == "image"
        and reference_input(model) is not None
        and ("prompt" in model.input_schema["properties"])
    )


def _taken(model: CatalogModel, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters `model` takes, without the URL inputs (the asset replaces them)."""
    properties = model.input_schema["properties"]
    return {
        name: value
        for name, value in inputs.items()
        if name in properties and name not in model.url_inputs
    }


async def _draft(
    runtime: Runtime,
    model: CatalogModel,
    *,
    style: Style | None,
    prompt: str | None,
    reference: list[str],
    params: Mapping[str, Any],
    callback_url: str | None,
    extra: dict[str, Any],
) -> Draft:
    """Validate and price one task of `model`. Raises InvalidInput naming the field as the
    caller wrote it (`reference[1]`, not the model's own input name)."""
    properties = model.input_schema["properties"]
    for name in params:
        if name not in properties and name not in model.aliases:  # even when null
            raise unknown_field(name, model.input_names)
        if model.canonical(name) in model.url_inputs:
            raise InvalidInput(f"{name}: give the model's files in reference", field=name)
    raw: dict[str, Any] = dict(params)
    if prompt:
        if "prompt" not in properties:
            raise InvalidInput(f"prompt: model {model.id} takes no prompt", field="prompt")
        limit = prompt_limit(model, runtime.styles)
        if limit is not None and len(prompt) > limit:
            raise InvalidInput(f"prompt must be at most {limit} characters", field="prompt")
        raw["prompt"] = style.apply(prompt) if style is not None else prompt
    aliases: dict[str, str] = {}
    if reference:
        target = reference_input(model)
        if target is None:
            raise InvalidInput(f"reference: model {model.id} takes no reference", field=REFERENCE)
        aliases[REFERENCE] = target
        raw[REFERENCE] = reference
    normalized = model.normalize(raw, aliases=aliases)
    if style is not None:
        normalized = _with_defaults(model, raw, aliases, style)
    urls = urls_to_check(model, raw, normalized, aliases)
    await check_urls(runtime, urls, callback_url, "callback_url")
    return Draft(
        priced=price_inputs(model, normalized, callback_url),
        callback_url=callback_url,
        extra={"style": style.name if style else None, **extra},
    )


def _with_defaults(
    model: CatalogModel, raw: dict[str, Any], aliases: dict[str, str], style: Style
) -> dict[str, Any]:
    """The request normalised with the style's parameters where the caller set none, the
    model takes them and they agree with the rest (a 16:9 style yields to a square size)."""
    sent = {model.canonical(name) for name in raw}
    properties = model.input_schema["properties"]
    defaults = {
        name: value
        for name, value in style.params.items()
        if name in properties and name not in sent
    }
    while True:
        try:
            return model.normalize({**raw, **defaults}, aliases=aliases)
        except InvalidInput as exc:  # the caller's request alone was valid: a default is at fault
            field = exc.details.get("field")
            if field not in defaults:
                raise
            del defaults[field]


def prompt_limit(model: CatalogModel, styles: Styles) -> int | None:
    """The longest prompt a caller may give `model`: its own limit, less the room any style
    may add."""
    limit = model.input_schema["properties"].get("prompt", {}).get("maxLength")
    return None if limit is None else max(1, int(limit) - styles.room)


def reference_input(model: CatalogModel) -> str | None:
    """The URL input a `reference` goes to; None when the model takes no files."""
    for name in _REFERENCE_INPUTS:
        if name in model.url_inputs:
            return name
    return min(model.url_inputs, default=None)


def _asset_url(
    runtime: Runtime, asset: MediaFile, model: CatalogModel, base_url: str | None
) -> str:
    """A signed URL of the asset that stays valid until the new task's deadline has passed."""
    return signed_media_url(
        asset,
        base_url=base_url_of(runtime, base_url),
        secret=runtime.signing_secret,
        expires_at_s=_expiry_for(runtime, model),
    )


def _expiry_for(runtime: Runtime, model: CatalogModel) -> int:
    """When a URL a new task of `model` reads may expire: after the task's deadline, by the
    life of a result URL."""
    lifetime_s = model.timeout_seconds + runtime.settings.media_url_ttl_seconds
    return now_ms() // 1000 + lifetime_s


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _hash(surface: str, body: Mapping[str, Any]) -> str:
    """What an X-Request-Id replay must repeat: the surface and the body as sent."""
    canonical = json.dumps(
        {"surface": surface, "body": body}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
