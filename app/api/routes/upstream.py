"""Upstream callbacks: an upstream that finished a job says so, and we poll it at once.

The URL carries a token only we can mint (see Channels.callback_token); a channel with a
`webhook_secret_env` also has each call's Standard Webhooks signature checked (Replicate and
a gengate upstream sign that way). Nothing in the body is trusted beyond the job id it
names: the poll that follows decides the outcome.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app.api.bodies import read_body_up_to
from app.api.deps import RuntimeDep, SessionDep
from app.channels.service import poll_now, upstream_ids

router = APIRouter(prefix="/api/v1/upstream", tags=["upstream"], include_in_schema=False)

MAX_CALLBACK_BYTES = 256 * 1024


def _answer(code: int, msg: str) -> JSONResponse:
    return JSONResponse({"code": code, "msg": msg}, status_code=code)


@router.post("/{channel}/callback")
async def upstream_callback(
    channel: str,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    token: Annotated[str, Query(max_length=100)] = "",
) -> JSONResponse:
    channels = runtime.channels
    configured = channels.get(channel)
    if configured is None or not channels.verify_callback(channel, token):
        return _answer(401, "unknown channel or wrong token")
    body = await read_body_up_to(request, MAX_CALLBACK_BYTES)
    if body is None:
        return _answer(413, f"callback body is larger than {MAX_CALLBACK_BYTES} bytes")
    secret = configured.webhook_secret
    if secret is not None:
        try:
            Webhook(secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            return _answer(401, "the webhook signature does not verify")
    woken = await poll_now(session, channel=channel, ids=upstream_ids(body))
    await session.commit()
    if woken:
        runtime.notifier.wake_workers()
    return _answer(200, "ok")
