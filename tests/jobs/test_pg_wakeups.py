"""Wake-ups between processes through PostgreSQL LISTEN/NOTIFY, when there is no Redis.

Two runtimes on one database stand for two processes. The scan runs every 30 s and cached
answers live for a minute, so within these tests only a signal can explain a fast pickup, a
refused key or a fresh answer. PostgreSQL on both runs (tests/support/postgres.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import make_url, select, update

from app.core.config import Settings
from app.jobs.lifecycle import fail_task
from app.jobs.models import Task
from app.jobs.notify import MESSAGE_MAX_BYTES, _joined
from app.jobs.pgnotify import APPLICATION_NAME, CHANNEL_MAX_BYTES, PgTransport, channel_name
from app.keys.models import ApiKey
from app.runtime import Runtime
from tests.conftest import Customer, make_customer
from tests.jobs.conftest import t2i
from tests.support.apps import eventually, running_app, runtime_of, worker_running
from tests.support.backends import fresh_database
from tests.support.postgres import postgres_template

pytestmark = pytest.mark.timeout(60)

# Well inside the scan interval and the caches' lifetimes below.
PROMPTLY_S = 5.0


@pytest.fixture(scope="session")
def pg_template(template_database_url: str) -> Iterator[str]:
    with postgres_template(template_database_url, name="gengate_pgwake") as url:
        yield url


@pytest.fixture
def database_url(pg_template: str, tmp_path: Path) -> str:
    """Overrides the suite's: these tests need PostgreSQL."""
    return fresh_database(pg_template, tmp_path)


@pytest.fixture
def shared(settings: Settings) -> Settings:
    """Settings of each process: no Redis, no embedded workers, a slow scan, long caches."""
    return settings.model_copy(
        update={
            "redis_url": None,
            "workers_in_process": False,
            "scan_interval_seconds": 30.0,
            "key_cache_seconds": 60.0,
            "task_view_cache_seconds": 60.0,
        }
    )


@asynccontextmanager
async def process(settings: Settings) -> AsyncIterator[Runtime]:
    """A runtime of its own, as another process on the same database has."""
    runtime = await Runtime.start(settings)
    try:
        _transport(runtime)  # PostgreSQL carries the signals
        yield runtime
    finally:
        await runtime.close()


class WatchedEvent(asyncio.Event):
    """An Event that counts who waited on it and how often it was set."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0
        self.sets = 0

    async def wait(self) -> bool:  # type: ignore[override]
        self.waits += 1
        return await super().wait()

    def set(self) -> None:
        self.sets += 1
        super().set()


async def create(client: httpx.AsyncClient, customer: Customer) -> str:
    created = await client.post("/api/v1/jobs/createTask", json=t2i(), headers=customer.headers)
    assert created.status_code == 200, created.text
    task_id: str = created.json()["data"]["taskId"]
    return task_id


async def test_a_task_created_in_one_process_wakes_the_others_worker(shared: Settings) -> None:
    async with running_app(shared) as (app, client), process(shared) as other:
        customer = await make_customer(runtime_of(app))
        work = other.notifier.work = WatchedEvent()
        async with worker_running(other) as worker:

            async def idle() -> bool:
                return work.waits > 0

            await eventually(idle, within_s=PROMPTLY_S, what="the worker to wait for work")
            task_id = await create(client, customer)

            async def woken() -> bool:
                return work.sets > 0

            await eventually(woken, within_s=PROMPTLY_S, what="the wake-up to arrive")

            async def picked_up() -> str | None:
                async with other.sessions() as session:
                    row = await session.execute(
                        select(Task.lease_owner, Task.started_at).where(Task.id == task_id)  # type: ignore[call-overload]
                    )
                    owner, started_at = row.one()
                return owner if started_at is not None else None

            owner = await eventually(picked_up, within_s=PROMPTLY_S, what="the pickup")
            assert owner == worker.owner


async def test_a_key_revoked_in_one_process_is_refused_at_once_in_the_other(
    shared: Settings,
) -> None:
    async with running_app(shared) as (app_a, client_a), running_app(shared) as (_, client_b):
        customer = await make_customer(runtime_of(app_a))
        async with runtime_of(app_a).sessions() as session:
            key_id = (await session.execute(select(ApiKey.id))).scalar_one()  # type: ignore[call-overload]
        assert await _status(client_b, customer) == 200  # now cached in B
        revoked = await client_a.delete(f"/api/v1/keys/{key_id}", headers=customer.headers)
        assert revoked.status_code == 200, revoked.text

        async def refused_by_b() -> bool:
            return await _status(client_b, customer) == 401

        await eventually(refused_by_b, within_s=PROMPTLY_S, what="B to refuse the key")


async def test_a_task_change_in_one_process_drops_the_others_cached_answer(
    shared: Settings,
) -> None:
    async with running_app(shared) as (app_a, client_a), running_app(shared) as (_, client_b):
        runtime_a = runtime_of(app_a)
        customer = await make_customer(runtime_a)
        task_id = await create(client_a, customer)
        kept = await _record_info(client_b, customer, task_id)
        assert kept["state"] == "waiting"
        async with runtime_a.sessions() as session:
            assert await fail_task(
                session, notifier=runtime_a.notifier, task_id=task_id, code="canceled", message="x"
            )
            await session.commit()

        async def seen_by_b() -> bool:
            return (await _record_info(client_b, customer, task_id))["state"] == "fail"

        await eventually(seen_by_b, within_s=PROMPTLY_S, what="B to see the change")


async def test_many_changed_tasks_arrive_in_payloads_postgres_takes(shared: Settings) -> None:
    """A loop turn's changed ids go in as few NOTIFY payloads as fit under 8000 bytes."""
    ids = [f"task_{n:012x}{n:016x}" for n in range(1000)]  # about 34 kB in all
    async with process(shared) as sender, process(shared) as receiver:
        seen: set[str] = set()
        receiver.notifier.on_task_changed = seen.add
        for task_id in ids:
            sender.notifier.task_changed(task_id)

        async def all_seen() -> bool:
            return seen >= set(ids)

        await eventually(all_seen, within_s=PROMPTLY_S, what="every id to arrive")


async def test_the_listening_connection_comes_back_after_it_is_killed(
    shared: Settings, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed: reconnected in the background, with one warning; then everything cached is
    forgotten (announcements may have been lost), the loops scan, and signals flow again."""
    caplog.set_level(logging.INFO, logger="gengate.notify")
    async with running_app(shared) as (app, client), process(shared) as other:
        runtime = runtime_of(app)
        customer = await make_customer(runtime)
        assert await _status(client, customer) == 200  # now cached
        async with runtime.sessions() as session:  # disabled unannounced: still cached
            await session.execute(update(ApiKey).values(disabled=True))
            await session.commit()
        assert await _status(client, customer) == 200
        transport = _transport(runtime)
        runtime.notifier.work.clear()
        killed = transport.listener_pid
        await _terminate(database_url, killed)

        async def reconnected() -> bool:
            return transport.listener_pid not in (None, killed)

        await eventually(reconnected, within_s=PROMPTLY_S, what="the channel to reconnect")
        assert runtime.notifier.work.is_set()  # the loops scan for what was missed
        assert await _status(client, customer) == 401  # the cached key was forgotten

        await _signal_both_ways(runtime, other)
    assert _logged(caplog, "wake-up channel lost") == 1  # once, not once per attempt
    assert _logged(caplog, "wake-up channel back") == 1


async def test_signals_flow_again_once_every_notify_connection_was_killed(
    shared: Settings, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """As a database restart does: both processes lose their listening and their sending
    connection; the first signal each sends afterwards arrives all the same."""
    caplog.set_level(logging.INFO, logger="gengate.notify")
    async with process(shared) as one, process(shared) as two:
        await _signal_both_ways(one, two)  # each sending connection is open now
        transports = [_transport(one), _transport(two)]
        killed = {transport.listener_pid for transport in transports}
        assert await _terminate_notify_connections(database_url) == 4

        async def reconnected() -> bool:
            return all(transport.listener_pid not in killed for transport in transports)

        await eventually(reconnected, within_s=PROMPTLY_S, what="both channels to reconnect")
        await _signal_both_ways(one, two)
    assert _logged(caplog, "wake-up channel lost") == 2  # one per process


def test_ids_are_split_into_messages_of_bounded_size() -> None:
    ids = [f"id{n:05d}" for n in range(3000)]  # 7 bytes each, 8 with the space
    messages = list(_joined(ids, MESSAGE_MAX_BYTES))
    assert all(len(m.encode()) <= MESSAGE_MAX_BYTES for m in messages)
    assert len(messages) == -(-len(ids) * 8 // MESSAGE_MAX_BYTES)  # as few as fit
    assert " ".join(messages).split() == ids


def test_a_long_prefix_still_names_a_channel_of_its_own() -> None:
    assert channel_name("gengate") == "gengate"
    long_a, long_b = "a" * 70, "a" * 69 + "b"
    assert len(channel_name(long_a).encode()) <= CHANNEL_MAX_BYTES
    assert channel_name(long_a) != channel_name(long_b)


def _transport(runtime: Runtime) -> PgTransport:
    transport = runtime.notifier.transport
    assert isinstance(transport, PgTransport)
    return transport


async def _signal_both_ways(one: Runtime, two: Runtime) -> None:
    """A signal from each process reaches the other."""
    await _signal(one, two)
    await _signal(two, one)


async def _signal(sender: Runtime, receiver: Runtime) -> None:
    """A changed task of an id no one else announces reaches `receiver` (a wake-up could be
    the sender's own, heard by itself)."""
    probe = f"probe_{uuid.uuid4().hex}"
    seen: set[str] = set()
    notifier = receiver.notifier
    forget = notifier.on_task_changed
    assert forget is not None

    def record(task_id: str) -> None:
        seen.add(task_id)
        forget(task_id)

    async def arrived() -> bool:
        return probe in seen

    notifier.on_task_changed = record
    try:
        sender.notifier.task_changed(probe)
        await eventually(arrived, within_s=PROMPTLY_S, what="a signal to arrive")
    finally:
        notifier.on_task_changed = forget


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


async def _status(client: httpx.AsyncClient, customer: Customer) -> int:
    return (await client.get("/api/v1/account", headers=customer.headers)).status_code


async def _record_info(
    client: httpx.AsyncClient, customer: Customer, task_id: str
) -> dict[str, object]:
    answer = await client.get(
        "/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=customer.headers
    )
    assert answer.status_code == 200, answer.text
    data: dict[str, object] = answer.json()["data"]
    return data


async def _terminate(database_url: str, pid: int | None) -> None:
    """End one backend, from an admin connection of the test's own."""
    assert pid is not None
    assert await _admin(database_url, "SELECT pg_terminate_backend(%s)", pid) is True


async def _terminate_notify_connections(database_url: str) -> int:
    """End every wake-up connection to the test's database; how many there were."""
    ended: int = await _admin(
        database_url,
        # Counted whether or not each was still there: a process that lost its listening
        # connection closes its sending one itself, perhaps before its turn here.
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = %s",
        APPLICATION_NAME,
    )
    return ended


async def _admin(database_url: str, query: str, *params: object) -> Any:
    """The one value `query` answers, on an admin connection of the test's own."""
    conninfo = make_url(database_url).set(drivername="postgresql")
    async with await psycopg.AsyncConnection.connect(
        conninfo.render_as_string(hide_password=False), autocommit=True
    ) as admin:
        row = await (await admin.execute(query, params)).fetchone()
        assert row is not None
        return row[0]
