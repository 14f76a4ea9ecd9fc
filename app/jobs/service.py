"""Jobs: create, estimate, cancel. With app.jobs.views, the only home of the task rules."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    CTE,
    TextClause,
    bindparam,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.schema import ScalarElementColumnDefault
from sqlmodel import col

from app.accounts.models import Account
from app.catalog.catalog import CatalogModel
from app.channels.registry import cancel_upstream_after_commit
from app.core import correlation, metrics
from app.core.config import UNLIMITED_ACTIVE_TASKS
from app.core.errors import (
    Conflict,
    InsufficientCredits,
    InvalidInput,
    TooManyActiveTasks,
)
from app.core.ids import new_id, now_ms
from app.core.text import check_text
from app.credits.service import (
    UNCONDITIONAL_HOLD,
    debit_and_hold,
    debit_for_hold,
    guarded_hold,
    hold_at_once,
    record_hold,
    undo_debit,
)
from app.db.driver import statements
from app.db.hooks import after_commit
from app.jobs.lifecycle import fail_task
from app.jobs.models import ACTIVE_STATUSES, Task, TaskGroup, TaskStatus
from app.jobs.schemas import EstimateRead, TaskCreate
from app.jobs.views import get_task
from app.keys.scopes import Scope
from app.keys.service import Principal
from app.limits.service import GROUP_CREATE
from app.media.service import signed_media_ref
from app.net.policy import outbound_policy
from app.net.url_guard import UrlRefused, check_url_syntax, check_url_target
from app.runtime import Runtime

REQUEST_ID_MAX = 200
# The columns a create writes; the others keep their defaults.
TASK_COLUMNS = (
    "id",
    "account_id",
    "api_key_id",
    "model",
    "media_type",
    "input_json",
    "callback_url",
    "request_id",
    "request_hash",
    "status",
    "progress",
    "price",
    "provider",
    "attempts",
    "due_at",
    "deadline_at",
    "created_at",
    "updated_at",
    "correlation_id",
)


def check_request_id(value: Any, *, field: str) -> str:
    """An idempotency key: 1 to 200 characters of text. Raises InvalidInput naming `field`."""
    if not isinstance(value, str) or not 0 < len(value) <= REQUEST_ID_MAX:
        raise InvalidInput(
            f"{field} must be a string of 1 to {REQUEST_ID_MAX} characters", field=field
        )
    return check_text(value, field=field)


@dataclass(frozen=True)
class CreateResult:
    task: Task
    created: bool  # False when an X-Request-Id replay returned an existing task


@dataclass(frozen=True)
class Priced:
    """A request validated against its model: canonical input, price, idempotency hash."""

    model_id: str
    normalized: dict[str, Any]
    price: int
    request_hash: str


def price_inputs(
    model: CatalogModel, normalized: dict[str, Any], callback_url: str | None
) -> Priced:
    """The price and the idempotency hash of a normalised input."""
    canonical = json.dumps(
        {"model": model.id, "input": normalized, "callback": callback_url},
        sort_keys=True,
        separators=(",", ":"),
    )
    return Priced(
        model_id=model.id,
        normalized=normalized,
        price=model.price(normalized),
        request_hash=hashlib.sha256(canonical.encode()).hexdigest(),
    )


async def _price_request(runtime: Runtime, spec: TaskCreate) -> Priced:
    """Validate against the catalog, check its URLs and price it. Raises InvalidInput."""
    model = runtime.catalog.get(spec.model)
    if spec.media_type is not None and model.media_type != spec.media_type:
        raise InvalidInput(
            "model is not supported",
            field="model",
            allowed=[m.id for m in runtime.catalog.list(spec.media_type)],
        )
    normalized = model.normalize(spec.input)
    await check_urls(
        runtime,
        urls_to_check(model, spec.input, normalized),
        spec.callback_url,
        spec.callback_field,
    )
    return price_inputs(model, normalized, spec.callback_url)


def urls_to_check(
    model: CatalogModel,
    sent: Mapping[str, Any],
    normalized: dict[str, Any],
    aliases: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    """(field as the caller named it, URL) for every URL input of the request; `aliases` are
    names the caller's surface gives inputs on top of the catalog's (see CatalogModel.normalize)."""
    found: list[tuple[str, str]] = []
    for name_sent in sent:
        name = model.canonical(name_sent, aliases)
        if name not in model.url_inputs:
            continue
        value = normalized.get(name)
        urls = value if isinstance(value, list) else [value]
        found += [(f"{name_sent}[{i}]", url) for i, url in enumerate(urls) if isinstance(url, str)]
    return found


async def check_urls(
    runtime: Runtime,
    inputs: list[tuple[str, str]],
    callback_url: str | None,
    callback_field: str,
) -> None:
    """Refuse now, for free, what the fetch or the delivery would refuse later: forbidden
    addresses, literal or behind a name. Names that do not resolve in time are let through.
    """
    if not inputs and not callback_url:
        return
    settings = runtime.settings
    policy = outbound_policy(settings)
    now_s = now_ms() // 1000
    checks: list[tuple[str, str]] = []
    for where, url in inputs:
        ref = signed_media_ref(url, secret=runtime.signing_secret)
        if ref is None:
            checks.append((where, url))
        elif now_s >= ref.expires_at_s:
            raise InvalidInput(
                f"{where} has expired; upload the file again, or read its task again for "
                "a fresh URL",
                field=_field(where),
            )
        # else: our own signed media (an upload, an earlier result) is read from storage.
    if callback_url:
        checks.append((callback_field, callback_url))
    for where, url in checks:
        try:
            check_url_syntax(url, policy)
        except UrlRefused as exc:
            raise _refused(where, exc) from None
    if policy.allow_private or not checks:
        return
    results = await asyncio.gather(
        *(
            check_url_target(url, policy, timeout_s=settings.url_check_timeout_seconds)
            for _where, url in checks
        ),
        return_exceptions=True,
    )
    for (where, _url), result in zip(checks, results, strict=True):
        if isinstance(result, UrlRefused):
            raise _refused(where, result)
        if isinstance(result, BaseException):
            raise result


def _refused(where: str, exc: UrlRefused) -> InvalidInput:
    return InvalidInput(f"{where} is not allowed: {exc.reason}", field=_field(where))


def _field(where: str) -> str:
    return where.split("[", 1)[0]


async def create_task(
    session: AsyncSession,
    *,
    runtime: Runtime,
    principal: Principal,
    spec: TaskCreate,
    request_id: str | None = None,
) -> CreateResult:
    """Validate, price, hold the credits and queue the task, all in the caller's transaction;
    except on PostgreSQL for a key without an active-task limit and no request id, where the
    task and its hold are one statement committed on its own before this returns.

    Raises PermissionDenied, RateLimited, InvalidInput, Conflict (request id reused with
    other parameters), TooManyActiveTasks, InsufficientCredits.
    """
    principal.require(Scope.TASKS_CREATE)
    await runtime.limiter.hit(principal, GROUP_CREATE)
    if request_id is not None:
        check_request_id(request_id, field="X-Request-Id")
    priced = await _price_request(runtime, spec)
    values = task_values(
        runtime, principal, priced, callback_url=spec.callback_url, request_id=request_id
    )
    # The debit comes first and locks the account row until commit: the creates of one
    # account queue there, so the statements after it (fresh snapshots under READ COMMITTED)
    # see every create that went before. Inserting first would also work, but each insert's
    # foreign-key check share-locks the account row, and dozens of those on the row being
    # updated cost PostgreSQL more than everything else here (multixact churn).
    limit = runtime.settings.tier_limits(principal.tier).max_active_tasks
    counted = limit < UNLIMITED_ACTIVE_TASKS
    dialect = session.get_bind().dialect.name
    if request_id is None and not counted and dialect == "postgresql":
        # Nothing to count and nothing to look up: the debit, the task and its hold in one
        # statement that commits on its own (see _CREATE_AT_ONCE).
        async with statements(runtime.engine, runtime.driver) as conn:
            await hold_at_once(
                conn,
                _CREATE_AT_ONCE,
                account_id=principal.account_id,
                amount=priced.price,
                task_id=values["id"],
                params=_new_task_params(values),
            )
        runtime.notifier.wake_workers()
        metrics.task_created(priced.model_id, priced.price)
        return CreateResult(Task.model_construct(**values), created=True)
    try:
        balance_after = await debit_for_hold(
            session, account_id=principal.account_id, amount=priced.price
        )
    except InsufficientCredits:
        if request_id is not None and (
            replay := await _find_replay(session, principal, request_id, priced)
        ):
            return replay
        if counted and await _count_active(session, principal.key_id, limit) >= limit:
            raise TooManyActiveTasks(limit=limit) from None
        raise
    hold = _HOLD_UNDER_ACTIVE_LIMIT if counted else UNCONDITIONAL_HOLD
    params = _active_params(principal.key_id, limit) if counted else {}
    if request_id is None and dialect == "postgresql":
        # One round trip for the task and its hold (see _TASK_AND_HOLD_UNDER_ACTIVE_LIMIT).
        hold = _TASK_AND_HOLD_UNDER_ACTIVE_LIMIT
        params = {**params, **_new_task_params(values)}
    elif request_id is None:
        await session.execute(_INSERT_TASK, values)
    elif await _insert_once(session, "task", values, "id") is None:
        await undo_debit(session, account_id=principal.account_id, amount=priced.price)
        replay = await _find_replay(session, principal, request_id, priced)
        if replay is None:  # cannot happen: the row that refused our insert is committed
            raise Conflict("X-Request-Id is in use", field="X-Request-Id")
        return replay
    held = await record_hold(
        session,
        hold,
        account_id=principal.account_id,
        amount=priced.price,
        balance_after=balance_after,
        task_id=values["id"],
        params=params,
    )
    if not held:
        raise TooManyActiveTasks(limit=limit)
    after_commit(session, runtime.notifier.wake_workers)
    after_commit(session, functools.partial(metrics.task_created, priced.model_id, priced.price))
    # A detached picture of the inserted row; model_construct skips validation (8x cheaper).
    return CreateResult(Task.model_construct(**values), created=True)


async def _insert_once(
    session: AsyncSession, table: str, values: dict[str, Any], returned: str
) -> Any:
    """Insert `values` into `table` unless the key already used the request id; the row's
    `returned` column, or None when it was already there."""
    row = {**_scalar_defaults(table), **values}  # what Core's insert would fill in
    statement = _insert_once_statement(table, tuple(row), returned)
    return (await session.execute(statement, row)).scalar()


@functools.cache
def _scalar_defaults(table: str) -> dict[str, Any]:
    columns = Task.metadata.tables[table].columns
    return {
        c.name: c.default.arg for c in columns if isinstance(c.default, ScalarElementColumnDefault)
    }


@functools.cache
def _insert_once_statement(table: str, columns: tuple[str, ...], returned: str) -> TextClause:
    """Text, because SQLAlchemy 2.0 gives ON CONFLICT constructs no cache key: built from
    Core, the statement was compiled again on every create with an X-Request-Id (a fifth of
    its CPU). PostgreSQL and SQLite read the same SQL. Built once per column set, of names
    that are the table's own columns (checked), never the caller's."""
    known = Task.metadata.tables[table].columns
    if not all(name in known for name in (*columns, returned)):
        raise ValueError(f"not columns of {table}: {columns}, {returned}")
    names = ", ".join(columns)
    values = ", ".join(f":{name}" for name in columns)
    return text(
        f"INSERT INTO {table} ({names}) VALUES ({values}) "  # noqa: S608 (checked names)
        f"ON CONFLICT (api_key_id, request_id) DO NOTHING RETURNING {returned}"
    )


_TASKS = Task.metadata.tables["task"]
_INSERT_TASK = insert(_TASKS)
# Counts the task being created too (it is inserted, uncommitted, before the ledger row), and
# stops one past the limit: a key with a deep backlog must not make every create scan it.
_ACTIVE_OF_KEY = (
    select(func.count())
    .select_from(
        select(_TASKS.c.id)
        .where(
            _TASKS.c.api_key_id == bindparam("active_key"),
            _TASKS.c.status.in_(ACTIVE_STATUSES),
        )
        .limit(bindparam("active_cap"))
        .subquery()
    )
    .scalar_subquery()
)
_HOLD_UNDER_ACTIVE_LIMIT = guarded_hold(bindparam("active_limit") >= _ACTIVE_OF_KEY)
# PostgreSQL: the task's insert rides in the hold's statement as a CTE, one round trip for
# both. The statement's snapshot is taken after the debit locked the account row, as the two
# statements' were; the guard cannot see the CTE's row, so it counts the new task itself.
_NEW_TASK = (
    insert(_TASKS)
    .values({name: bindparam(f"new_{name}") for name in TASK_COLUMNS})
    .returning(_TASKS.c.id)
    .cte("new_task")
)
_TASK_AND_HOLD_UNDER_ACTIVE_LIMIT = guarded_hold(
    bindparam("active_limit") >= _ACTIVE_OF_KEY + 1, with_cte=_NEW_TASK
)


def _new_task_params(values: dict[str, Any]) -> dict[str, Any]:
    """task_values as the parameters of the statements that insert the task as a CTE."""
    return {f"new_{name}": value for name, value in values.items()}


def _task_after_debit(debited: CTE) -> CTE:
    """The new task's insert, written only when the debit was (see debit_and_hold)."""
    row = select(
        *(bindparam(f"new_{name}", type_=_TASKS.c[name].type) for name in TASK_COLUMNS)
    ).select_from(debited)
    return insert(_TASKS).from_select(TASK_COLUMNS, row).returning(_TASKS.c.id).cte("new_task")


# PostgreSQL, a key without an active-task limit and no X-Request-Id: one statement in
# autocommit, a single round trip with no BEGIN or COMMIT. A limited key keeps the two
# statements above: its count must see every create that held the account row before.
_CREATE_AT_ONCE = debit_and_hold(_task_after_debit)
_COUNT_ACTIVE = select(_ACTIVE_OF_KEY)


def _active_params(key_id: str, limit: int) -> dict[str, Any]:
    return {"active_key": key_id, "active_limit": limit, "active_cap": limit + 1}


async def _find_replay(
    session: AsyncSession, principal: Principal, request_id: str, priced: Priced
) -> CreateResult | None:
    """The task this X-Request-Id already created, if any. Raises Conflict when its
    parameters differ."""
    existing = await _find_by_request_id(session, principal.key_id, request_id)
    if existing is None:
        return None
    if existing.request_hash != priced.request_hash:
        raise Conflict(
            "X-Request-Id was already used with different parameters",
            field="X-Request-Id",
            taskId=existing.id,
        )
    return CreateResult(existing, created=False)


def task_values(
    runtime: Runtime,
    principal: Principal,
    priced: Priced,
    *,
    callback_url: str | None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The row of a new queued task, with a fresh id: the columns of TASK_COLUMNS. Its
    correlation id is the creating request's, so the task's log lines can be found by it."""
    model = runtime.catalog.get(priced.model_id)
    now = now_ms()
    return {
        "id": new_id("task"),
        "account_id": principal.account_id,
        "api_key_id": principal.key_id,
        "model": model.id,
        "media_type": model.media_type,
        "input_json": json.dumps(priced.normalized, separators=(",", ":")),
        "callback_url": callback_url,
        "request_id": request_id,
        "request_hash": priced.request_hash,
        "status": TaskStatus.QUEUED.value,
        "progress": 0,
        "price": priced.price,
        "provider": model.provider,
        "attempts": 0,
        "due_at": now,
        "deadline_at": now + model.timeout_seconds * 1000,
        "created_at": now,
        "updated_at": now,
        "correlation_id": correlation.current().correlation_id,
    }


async def _find_by_request_id(session: AsyncSession, key_id: str, request_id: str) -> Task | None:
    stmt = select(Task).where(col(Task.api_key_id) == key_id, col(Task.request_id) == request_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def _count_active(session: AsyncSession, key_id: str, limit: int) -> int:
    """The key's waiting tasks, counted up to one past `limit` (as the hold's guard does)."""
    return int(await session.scalar(_COUNT_ACTIVE, _active_params(key_id, limit)) or 0)


@dataclass(frozen=True)
class Draft:
    """One task of a group, validated and priced; `extra` are the task's other columns
    (style, lineage, the caller's request)."""

    priced: Priced
    callback_url: str | None
    extra: Mapping[str, Any]


@dataclass(frozen=True)
class GroupResult:
    task_ids: list[str]
    created: bool  # False when an X-Request-Id replay returned the group it created before


async def create_group(
    session: AsyncSession,
    *,
    runtime: Runtime,
    principal: Principal,
    drafts: list[Draft],
    request_id: str | None,
    request_hash: str,
) -> GroupResult:
    """Queue several tasks as one request, all or none, in the caller's transaction.

    Each task is priced and held on its own, but the account is debited once for the sum:
    credits for some of them only is InsufficientCredits and nothing is created. With a
    request id the group is one idempotent request (TaskGroup). The caller has checked the
    scope, the rate limit and the request id. Raises Conflict, TooManyActiveTasks,
    InsufficientCredits.
    """
    total = sum(draft.priced.price for draft in drafts)
    limit = runtime.settings.tier_limits(principal.tier).max_active_tasks
    counted = limit < UNLIMITED_ACTIVE_TASKS
    try:  # first, for the reason create_task gives
        balance_after = await debit_for_hold(session, account_id=principal.account_id, amount=total)
    except InsufficientCredits:
        if request_id is not None and (
            replay := await _find_group(session, principal, request_id, request_hash)
        ):
            return replay
        if counted and await _count_active(session, principal.key_id, limit) + len(drafts) > limit:
            raise TooManyActiveTasks(limit=limit) from None
        raise
    rows = [
        {
            **task_values(runtime, principal, draft.priced, callback_url=draft.callback_url),
            **draft.extra,
        }
        for draft in drafts
    ]
    task_ids = [row["id"] for row in rows]
    if request_id is not None:
        group = {
            "api_key_id": principal.key_id,
            "request_id": request_id,
            "request_hash": request_hash,
            "task_ids": json.dumps(task_ids),
            "created_at": now_ms(),
        }
        if await _insert_once(session, "task_group", group, "request_id") is None:
            await undo_debit(session, account_id=principal.account_id, amount=total)
            replay = await _find_group(session, principal, request_id, request_hash)
            if replay is None:  # cannot happen: the row that refused ours is committed
                raise Conflict("X-Request-Id is in use", field="X-Request-Id")
            return replay
    await session.execute(_INSERT_TASK, rows)
    # Every task of the group is inserted before the first hold, whose guard so counts them all.
    balance = balance_after + total
    for number, (draft, row) in enumerate(zip(drafts, rows, strict=True)):
        balance -= draft.priced.price
        held = await record_hold(
            session,
            _HOLD_UNDER_ACTIVE_LIMIT if counted and number == 0 else UNCONDITIONAL_HOLD,
            account_id=principal.account_id,
            amount=draft.priced.price,
            balance_after=balance,
            task_id=row["id"],
            params=_active_params(principal.key_id, limit) if counted and number == 0 else {},
        )
        if not held:
            raise TooManyActiveTasks(limit=limit)
        count = functools.partial(metrics.task_created, draft.priced.model_id, draft.priced.price)
        after_commit(session, count)
    after_commit(session, runtime.notifier.wake_workers)
    return GroupResult(task_ids, created=True)


async def _find_group(
    session: AsyncSession, principal: Principal, request_id: str, request_hash: str
) -> GroupResult | None:
    """The group this X-Request-Id already created, if any. Raises Conflict when its
    request differed."""
    group = await session.get(TaskGroup, (principal.key_id, request_id))
    if group is None:
        return None
    if group.request_hash != request_hash:
        raise Conflict(
            "X-Request-Id was already used with different parameters", field="X-Request-Id"
        )
    return GroupResult(json.loads(group.task_ids), created=False)


async def estimate_task(
    session: AsyncSession, *, runtime: Runtime, principal: Principal, spec: TaskCreate
) -> EstimateRead:
    """The price of a request, with the same validation as create; nothing is created."""
    priced = await _price_request(runtime, spec)
    balance = await session.scalar(
        select(col(Account.balance)).where(col(Account.id) == principal.account_id)
    )
    return EstimateRead(
        model=priced.model_id,
        credits=priced.price,
        balance=int(balance or 0),
        affordable=int(balance or 0) >= priced.price,
        input=priced.normalized,
    )


async def cancel_task(
    session: AsyncSession, *, runtime: Runtime, principal: Principal, task_id: str | None
) -> Task:
    """Fail a waiting task with `canceled` and refund it. Raises NotFound, Conflict."""
    principal.require(Scope.TASKS_CREATE)
    task = await get_task(session, principal=principal, task_id=task_id)
    canceled = await fail_task(
        session,
        notifier=runtime.notifier,
        task_id=task.id,
        code="canceled",
        message="canceled by the caller",
    )
    if not canceled:
        raise Conflict(f"task is already {task.status}", field="taskId")
    cancel_upstream_after_commit(
        session,
        task_id=task.id,
        channel=task.channel,
        model=task.model,
        upstream_id=task.upstream_id,
    )
    await session.refresh(task)
    return task
