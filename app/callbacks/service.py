"""What callers may do with callbacks: read a task's deliveries, redeliver, and see or roll
the account's signing secret. Delivery itself is the dispatcher's."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.callbacks.outbox import list_account_deliveries, list_deliveries, redeliver
from app.callbacks.schemas import CallbackList, DeliveryPage, WebhookSecretRead
from app.callbacks.secrets import get_webhook_secret, roll_webhook_secret
from app.core.errors import InvalidInput, NotFound
from app.core.ids import now_ms
from app.jobs.models import Task
from app.jobs.views import callback_state_of, get_task
from app.keys.scopes import Scope
from app.keys.service import Principal
from app.limits.service import GROUP_QUERY
from app.runtime import Runtime


async def read_callbacks(
    session: AsyncSession, *, runtime: Runtime, principal: Principal, task_id: str | None
) -> CallbackList:
    """A task's deliveries and attempts, newest first. Raises RateLimited, InvalidInput,
    NotFound."""
    principal.require(Scope.TASKS_READ)
    await runtime.limiter.hit(principal, GROUP_QUERY)
    task = await get_task(session, principal=principal, task_id=task_id)
    return await _callbacks_of(session, task)


async def redeliver_callback(
    session: AsyncSession, *, runtime: Runtime, principal: Principal, task_id: str | None
) -> CallbackList:
    """Send the task's current callback again, with a new webhook-id. Raises NotFound,
    Conflict (no callBackUrl, still waiting, or a delivery still pending)."""
    principal.require(Scope.TASKS_CREATE)
    await runtime.limiter.hit(principal, GROUP_QUERY)
    task = await get_task(session, principal=principal, task_id=task_id)
    await redeliver(session, notifier=runtime.notifier, task=task)
    return await _callbacks_of(session, task)


async def read_account_deliveries(
    session: AsyncSession,
    *,
    principal: Principal,
    limit: int,
    before: tuple[int, str] | None = None,
) -> DeliveryPage:
    """The account's deliveries of all its tasks, newest first, with their attempts; a page
    of `limit` and the cursor of the next. Raises PermissionDenied."""
    principal.require(Scope.TASKS_READ)
    rows = await list_account_deliveries(
        session, account_id=principal.account_id, limit=limit + 1, before=before
    )
    page, more = rows[:limit], len(rows) > limit
    return DeliveryPage(
        items=page,
        has_more=more,
        next_cursor=f"{page[-1].create_time}.{page[-1].id}" if more and page else None,
    )


def parse_delivery_cursor(cursor: str | None) -> tuple[int, str] | None:
    """A DeliveryPage's next_cursor back as (created_at, id). Raises InvalidInput."""
    if not cursor:
        return None
    created, _, ident = cursor.partition(".")
    if not created.isdigit() or not ident or len(created) > 19 or len(ident) > 40:
        raise InvalidInput("cursor: use the nextCursor of the previous page", field="cursor")
    return int(created), ident


async def read_any_task_callbacks(session: AsyncSession, *, task_id: str) -> CallbackList:
    """The operator's view (admin CLI): any task's deliveries and attempts, whoever owns it.
    Raises NotFound."""
    task = await session.get(Task, task_id)
    if task is None:
        raise NotFound("task not found")
    return await _callbacks_of(session, task)


async def _callbacks_of(session: AsyncSession, task: Task) -> CallbackList:
    deliveries = await list_deliveries(session, task=task)
    latest = deliveries[0].state if deliveries else None
    return CallbackList(
        task_id=task.id,
        callback_state=callback_state_of(task, latest),
        deliveries=deliveries,
    )


async def account_secret(session: AsyncSession, *, account_id: str) -> WebhookSecretRead:
    """An account's whsec_ secret, made on first use (REST for its own key, the admin CLI
    for any account)."""
    row = await get_webhook_secret(session, account_id=account_id)
    return WebhookSecretRead.of(row, now=now_ms())


async def roll_account_secret(session: AsyncSession, *, account_id: str) -> WebhookSecretRead:
    """A new secret for an account; the old one keeps signing too for 24 hours."""
    row = await roll_webhook_secret(session, account_id=account_id)
    return WebhookSecretRead.of(row, now=now_ms())


async def read_webhook_secret(session: AsyncSession, *, principal: Principal) -> WebhookSecretRead:
    """The calling key's account secret (made on first use). Raises PermissionDenied."""
    principal.require(Scope.KEYS_MANAGE)
    return await account_secret(session, account_id=principal.account_id)


async def roll_secret(session: AsyncSession, *, principal: Principal) -> WebhookSecretRead:
    """A new secret; the old one keeps signing too for 24 hours. Raises PermissionDenied."""
    principal.require(Scope.KEYS_MANAGE)
    return await roll_account_secret(session, account_id=principal.account_id)
