"""recordInfo from memory: an unchanged task costs no database round trip, answers carry an
ETag (304 for If-None-Match), and a change, here or in another process, is never hidden."""

from typing import Any

import httpx
from fastapi import FastAPI

from app.core.config import Settings
from app.jobs.lifecycle import fail_task
from app.jobs.queue import claim_due_tasks, renew_lease
from app.jobs.viewcache import CachedView, TaskViewCache
from tests.conftest import Customer, make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import eventually, running_app, runtime_of, wait_for_terminal
from tests.support.backends import TEST_REDIS_URL
from tests.support.receiver import receiving
from tests.support.statements import statements


def _kept_long(settings: Settings, **changes: Any) -> Settings:
    """Answers kept for five minutes: within a test, only an announced change refreshes one."""
    return settings.model_copy(update={"task_view_cache_seconds": 300.0, **changes})


async def create(client: httpx.AsyncClient, customer: Customer) -> str:
    created = await client.post("/api/v1/jobs/createTask", json=t2i(), headers=customer.headers)
    assert created.status_code == 200, created.text
    task_id: str = created.json()["data"]["taskId"]
    return task_id


async def record_info(
    client: httpx.AsyncClient, customer: Customer, task_id: str, etag: str | None = None
) -> httpx.Response:
    headers = dict(customer.headers)
    if etag is not None:
        headers["If-None-Match"] = etag
    return await client.get("/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=headers)


async def test_an_unchanged_finished_task_is_answered_from_memory(settings: Settings) -> None:
    async with running_app(_kept_long(settings)) as (app, client):
        await _unchanged_is_answered_from_memory(app, client)


async def _unchanged_is_answered_from_memory(app: FastAPI, client: httpx.AsyncClient) -> None:
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    task_id = await create(client, customer)
    await wait_for_terminal(client, customer.headers, task_id)
    first = await record_info(client, customer, task_id)
    assert first.status_code == 200 and first.headers["ETag"].startswith('"')
    with statements(runtime) as seen:
        again = await record_info(client, customer, task_id)
        unchanged = await record_info(client, customer, task_id, etag=first.headers["ETag"])
    assert seen == []  # neither read asked the database
    assert again.content == first.content and again.headers["ETag"] == first.headers["ETag"]
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["ETag"] == first.headers["ETag"]
    # Weak and listed tags match too; another tag does not.
    listed = await record_info(client, customer, task_id, etag=f'"x", W/{first.headers["ETag"]}')
    assert listed.status_code == 304
    other = await record_info(client, customer, task_id, etag='"something-else"')
    assert other.status_code == 200 and other.json() == first.json()
    # The envelope is the one every other route answers with.
    assert set(first.json()) == {"code", "msg", "data"} and first.json()["code"] == 200


async def test_another_key_never_gets_the_kept_answer(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    runtime = runtime_of(app)
    owner, stranger = await make_customer(runtime), await make_customer(runtime)
    task_id = await create(client, owner)
    await wait_for_terminal(client, owner.headers, task_id)
    assert (await record_info(client, owner, task_id)).status_code == 200
    refused = await record_info(client, stranger, task_id)
    assert refused.status_code == 404


async def test_a_change_is_seen_at_once(settings: Settings) -> None:
    async with running_app(_kept_long(settings, workers_in_process=False)) as (app, client):
        await _change_is_seen_at_once(app, client)


async def _change_is_seen_at_once(app: FastAPI, client: httpx.AsyncClient) -> None:
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    task_id = await create(client, customer)
    queued = await record_info(client, customer, task_id)
    assert queued.json()["data"]["stage"] == "queued"
    async with runtime.sessions() as session:
        (claimed,) = await claim_due_tasks(session, owner="test", limit=1, lease_ms=60_000)
        assert claimed.id == task_id
        await session.commit()
    generating = await record_info(client, customer, task_id)
    assert generating.json()["data"]["stage"] == "generating"
    assert generating.headers["ETag"] != queued.headers["ETag"]
    async with runtime.sessions() as session:
        assert await renew_lease(
            session, task_id=task_id, owner="test", lease_ms=60_000, progress=40
        )
        await session.commit()
    progressed = await record_info(client, customer, task_id, etag=generating.headers["ETag"])
    assert progressed.status_code == 200 and progressed.json()["data"]["progress"] == 40
    async with runtime.sessions() as session:
        assert await fail_task(
            session, notifier=runtime.notifier, task_id=task_id, code="canceled", message="x"
        )
        await session.commit()
    failed = await record_info(client, customer, task_id, etag=progressed.headers["ETag"])
    assert failed.status_code == 200 and failed.json()["data"]["state"] == "fail"


async def test_a_change_in_another_process_reaches_this_one(settings: Settings) -> None:
    """Two API processes on one database: B keeps a task's answer, A changes the task; B
    answers the change promptly (through Redis at once; without Redis within its TTL)."""
    # With Redis only the announcement can refresh B within the test; without Redis nothing
    # reaches B but its TTL.
    shared = (
        _kept_long(settings, workers_in_process=False)
        if TEST_REDIS_URL
        else (settings.model_copy(update={"workers_in_process": False}))
    )
    async with running_app(shared) as (app_a, client_a), running_app(shared) as (_, client_b):
        runtime_a = runtime_of(app_a)
        customer = await make_customer(runtime_a)
        task_id = await create(client_a, customer)
        async with runtime_a.sessions() as session:
            await claim_due_tasks(session, owner="test", limit=1, lease_ms=60_000)
            await session.commit()
        kept = await record_info(client_b, customer, task_id)
        assert kept.json()["data"]["stage"] == "generating"
        async with runtime_a.sessions() as session:
            assert await fail_task(
                session, notifier=runtime_a.notifier, task_id=task_id, code="canceled", message="x"
            )
            await session.commit()

        async def seen_by_b() -> bool:
            answer = await record_info(client_b, customer, task_id)
            return bool(answer.json()["data"]["state"] == "fail")

        within = 5 if TEST_REDIS_URL else 10
        await eventually(seen_by_b, within_s=within, what="process B to see the change")


async def test_the_callback_state_is_never_stale(settings: Settings) -> None:
    """A finished task's callbackState moves on without the task row changing."""
    loopback = _kept_long(settings, outbound_allowlist=["127.0.0.1/32"])
    async with running_app(loopback) as (app, client):
        customer = await make_customer(runtime_of(app))
        with receiving() as receiver:
            body = {**t2i(), "callBackUrl": receiver.url + "/hook"}
            created = await client.post(
                "/api/v1/jobs/createTask", json=body, headers=customer.headers
            )
            task_id = created.json()["data"]["taskId"]
            await wait_for_terminal(client, customer.headers, task_id)

            async def delivered() -> bool:
                answer = await record_info(client, customer, task_id)
                return bool(answer.json()["data"]["callbackState"] == "delivered")

            await eventually(delivered, within_s=20, what="recordInfo to show the delivery")
            assert receiver.on("/hook")


async def test_a_queued_tasks_place_moves_when_one_ahead_starts(settings: Settings) -> None:
    async with running_app(_kept_long(settings, workers_in_process=False)) as (app, client):
        runtime = runtime_of(app)
        customer = await make_customer(runtime)
        first, second = await create(client, customer), await create(client, customer)
        behind = await record_info(client, customer, second)
        assert behind.json()["data"]["queuePosition"] == 2
        with statements(runtime) as seen:
            again = await record_info(client, customer, second, etag=behind.headers["ETag"])
        assert again.status_code == 304 and seen == []  # kept while nothing changed
        async with runtime.sessions() as session:
            (claimed,) = await claim_due_tasks(session, owner="test", limit=1, lease_ms=60_000)
            assert claimed.id == first
            await session.commit()
        moved = await record_info(client, customer, second, etag=behind.headers["ETag"])
        assert moved.status_code == 200 and moved.json()["data"]["queuePosition"] == 1


def test_a_queued_answer_lasts_until_anything_changes() -> None:
    cache = TaskViewCache(ttl_s=60)
    queued = CachedView.of("key", b"{}", ttl_s=60, queued=True)
    cache.put("task", queued, since=cache.begin())
    assert cache.get("task", "key") == queued
    cache.changed("another task")
    assert cache.get("task", "key") is None
    since = cache.begin()
    cache.changed("yet another")  # while it was read
    cache.put("task", queued, since=since)
    assert cache.get("task", "key") is None


def test_a_read_under_way_during_a_change_is_not_kept() -> None:
    cache = TaskViewCache(ttl_s=60)
    view = CachedView.of("key", b"{}", ttl_s=60)
    since = cache.begin()
    cache.changed("task")  # committed while the read was under way
    cache.put("task", view, since=since)
    assert cache.get("task", "key") is None
    cache.put("task", view, since=cache.begin())
    assert cache.get("task", "key") == view
    assert cache.get("task", "another key") is None
    cache.changed("task")
    assert cache.get("task", "key") is None


def test_forgotten_changes_are_taken_as_recent() -> None:
    cache = TaskViewCache(ttl_s=60, max_entries=2)
    since = cache.begin()
    for task_id in ("a", "b", "c"):  # "a" falls out of the change log
        cache.changed(task_id)
    cache.put("a", CachedView.of("key", b"{}", ttl_s=60), since=since)
    assert cache.get("a", "key") is None  # it may have changed after `since`: not kept


def test_entries_expire_and_the_cache_is_bounded() -> None:
    expired = TaskViewCache(ttl_s=0)
    expired.put("t", CachedView.of("key", b"{}", ttl_s=0), since=expired.begin())
    assert expired.get("t", "key") is None
    small = TaskViewCache(ttl_s=60, max_entries=2)
    for task_id in ("a", "b", "c"):
        small.put(task_id, CachedView.of("key", task_id.encode(), ttl_s=60), since=small.begin())
    assert small.get("a", "key") is None
    assert small.get("c", "key") is not None
