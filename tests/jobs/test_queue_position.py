"""queuePosition counts up to QUEUE_POSITION_CAP and saturates there; one read of the queue's
head serves every place until something leaves the queue."""

from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import insert, select

from app.jobs.models import Task
from app.jobs.queue import claim_due_tasks
from app.jobs.viewcache import TaskViewCache
from app.jobs.views import QUEUE_POSITION_CAP, describe_task
from tests.conftest import make_customer
from tests.jobs.conftest import t2i
from tests.jobs.test_record_info_cache import create
from tests.support.apps import runtime_of
from tests.support.statements import statements


async def _position(client: httpx.AsyncClient, headers: dict[str, str], task_id: str) -> Any:
    answer = await client.get(
        "/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]["queuePosition"]


async def test_queue_position_saturates_at_the_cap(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    first = await client.post("/api/v1/jobs/createTask", json=t2i(), headers=customer.headers)
    first_id = first.json()["data"]["taskId"]
    async with runtime.sessions() as s:
        template = (await s.execute(select(Task).where(Task.id == first_id))).scalar_one()  # type: ignore[arg-type]
        row = template.model_dump()
        # A backlog behind the first task, written directly: the cap plus some.
        rows = [
            {**row, "id": f"task_backlog_{i:05d}", "due_at": row["due_at"] + 1 + i}
            for i in range(QUEUE_POSITION_CAP + 50)
        ]
        await s.execute(insert(Task), rows)
        await s.commit()
    assert await _position(client, customer.headers, first_id) == 1
    assert await _position(client, customer.headers, "task_backlog_00000") == 2
    assert await _position(client, customer.headers, "task_backlog_00997") == QUEUE_POSITION_CAP - 1
    assert await _position(client, customer.headers, "task_backlog_00998") == QUEUE_POSITION_CAP
    assert await _position(client, customer.headers, "task_backlog_01049") == QUEUE_POSITION_CAP
    async with runtime.sessions() as s:  # the other path (MCP, callbacks) agrees
        last = await s.get(Task, "task_backlog_01049")
        assert last is not None
        view = await describe_task(s, runtime=runtime, task=last, base_url="http://x")
    assert view.queue_position == QUEUE_POSITION_CAP


def _counts(seen: list[str]) -> list[str]:
    return [sql for sql in seen if "count(" in sql.lower()]


async def test_places_come_from_one_read_of_the_queue_head(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    ids = [await create(client, customer) for _ in range(3)]
    with statements(runtime) as seen:
        places = [await _position(client, customer.headers, task_id) for task_id in ids]
    assert places == [1, 2, 3]
    assert _counts(seen) == []  # no task's place was counted on its own
    # The board is read once; each further read is the task's own statement only.
    assert len([sql for sql in seen if sql.startswith("SELECT")]) == 1 + len(ids)
    # A task leaving the queue drops the board: the places move at once.
    async with runtime.sessions() as session:
        (claimed,) = await claim_due_tasks(session, owner="test", limit=1, lease_ms=60_000)
        await session.commit()
    assert claimed.id == ids[0]
    assert [await _position(client, customer.headers, task_id) for task_id in ids[1:]] == [1, 2]


async def test_a_task_queued_after_the_board_was_read_is_counted(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    customer = await make_customer(runtime)
    first = await create(client, customer)
    assert await _position(client, customer.headers, first) == 1  # the board: [first]
    later = await create(client, customer)  # creating announces nothing: it queues behind
    with statements(runtime) as seen:
        assert await _position(client, customer.headers, later) == 2
    assert len(_counts(seen)) == 1  # the board cannot tell: counted for this task alone


def test_a_board_read_while_anything_changed_is_not_kept() -> None:
    cache = TaskViewCache(ttl_s=60)
    assert cache.claim_board_read() and not cache.claim_board_read()  # one read at a time
    since = cache.begin()
    cache.changed("task_a")  # e.g. a task left the queue during the read
    cache.release_board_read()
    assert cache.keep_board([(1, "task_a"), (2, "task_b")], since=since, cap=10) is None
    assert cache.queue_board() is None
    board = cache.keep_board([(2, "task_b")], since=cache.begin(), cap=10)
    assert board is not None and cache.queue_board() is board
    assert board.place("task_b", 2) == 1
    assert board.place("task_c", 3) is None  # behind a board that is not full: unknown
    cache.changed("task_b")
    assert cache.queue_board() is None


def test_a_full_board_places_every_task_behind_it_at_the_cap() -> None:
    cache = TaskViewCache(ttl_s=60)
    heads = [(10 + i, f"task_{i}") for i in range(4)]
    board = cache.keep_board(heads, since=cache.begin(), cap=5)
    assert board is not None
    assert [board.place(task_id, due) for due, task_id in heads] == [1, 2, 3, 4]
    assert board.place("task_z", 99) == 5
    assert board.place("task_0b", 10) is None  # queued after the read, ahead of its end
