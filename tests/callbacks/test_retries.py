"""Receivers that fail, hang, go away, ask for time or redirect: each attempt is the same
signed message, recorded as it went, and the delivery ends in the state the rules say."""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import formatdate
from itertools import pairwise
from typing import Any

import httpx

from app.core.config import Settings
from app.runtime import Runtime
from tests.callbacks.helpers import (
    app_with,
    check_attempts_match,
    create_task,
    record,
    settled_delivery,
    webhook_secret,
)
from tests.conftest import Customer
from tests.support.apps import wait_for_terminal
from tests.support.receiver import Answer, Received, Receiver, receiving

# A receiver's answer is kept up to this many bytes; the rest of a big answer is dropped.
EXCERPT = 1024
BIG = b"x" * 5000


async def _deliver(
    client: httpx.AsyncClient, customer: Customer, receiver: Receiver, path: str = "/hook"
) -> tuple[str, dict[str, Any], list[Received]]:
    """A task calling back to `receiver`, run until its delivery settles."""
    task_id = await create_task(client, customer, receiver.url + path)
    await wait_for_terminal(client, customer.headers, task_id)
    delivery = await settled_delivery(client, customer, task_id)
    return task_id, delivery, receiver.on(path)


async def _check(
    client: httpx.AsyncClient,
    customer: Customer,
    task_id: str,
    delivery: dict[str, Any],
    received: list[Received],
    *,
    state: str,
) -> None:
    check_attempts_match(delivery, received, await webhook_secret(client, customer))
    assert delivery["state"] == state
    assert (await record(client, customer, task_id))["callbackState"] == state


def _gaps(received: list[Received]) -> list[float]:
    return [later.at - earlier.at for earlier, later in pairwise(received)]


async def test_a_500_then_a_200_is_delivered_on_the_second_attempt(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    def answer(_request: Received, before: int) -> Answer:
        return Answer(500, body=BIG) if before == 0 else Answer(200, body=BIG)

    with receiving(answer) as receiver:
        task_id, delivery, received = await _deliver(client, customer, receiver)
    await _check(client, customer, task_id, delivery, received, state="delivered")
    attempts = delivery["attempts"]
    assert [a["statusCode"] for a in attempts] == [500, 200]
    assert attempts[0]["error"] is None
    # The first 1 KB of each answer, not more.
    assert [a["response"] for a in attempts] == ["x" * EXCERPT] * 2
    assert delivery["completeTime"] is not None and delivery["nextAttemptTime"] is None


async def test_a_receiver_that_times_out_is_tried_again(settings: Settings) -> None:
    def answer(_request: Received, before: int) -> Answer:
        return Answer(200, delay_s=3.0) if before == 0 else Answer(200)

    with receiving(answer) as receiver:
        async with app_with(settings, callback_timeout_seconds=1.0) as (client, _rt, customer):
            task_id, delivery, received = await _deliver(client, customer, receiver)
            await _check(client, customer, task_id, delivery, received, state="delivered")
    first, second = delivery["attempts"]
    assert first["statusCode"] is None and "timed out" in first["error"], first
    assert first["latencyMs"] >= 900 and first["response"] is None
    assert second["statusCode"] == 200


async def test_410_gone_stops_at_once(client: httpx.AsyncClient, customer: Customer) -> None:
    with receiving(lambda _r, _n: Answer(410, body=b"gone")) as receiver:
        task_id, delivery, received = await _deliver(client, customer, receiver)
    await _check(client, customer, task_id, delivery, received, state="failed")
    (attempt,) = delivery["attempts"]
    assert (attempt["statusCode"], attempt["response"]) == (410, "gone")
    assert delivery["nextAttemptTime"] is None


async def _retry_after_gap(
    settings: Settings, status: int, retry_after: Callable[[], str]
) -> float:
    """The gap a receiver that asks for time once sees between its first two requests, with
    0.5 s scheduled between attempts."""

    def answer(_request: Received, before: int) -> Answer:
        if before == 0:
            return Answer(status, headers={"Retry-After": retry_after()})
        return Answer(200)

    with receiving(answer) as receiver:
        async with app_with(settings, callback_retry_schedule=[0.5, 0.5]) as (
            client,
            _rt,
            customer,
        ):
            task_id, delivery, received = await _deliver(client, customer, receiver)
            await _check(client, customer, task_id, delivery, received, state="delivered")
    assert [a["statusCode"] for a in delivery["attempts"]] == [status, 200]
    (gap,) = _gaps(received)
    return gap


async def test_429_retry_after_is_honoured(settings: Settings) -> None:
    # 1 s asked, 0.5 s scheduled (2 s cap): the receiver's wish wins.
    gap = await _retry_after_gap(settings, 429, lambda: "1")
    assert 0.95 <= gap < 1.9, gap


async def test_503_retry_after_is_capped_at_four_scheduled_waits(settings: Settings) -> None:
    # 120 s asked, 0.5 s scheduled: the cap (2 s) wins.
    gap = await _retry_after_gap(settings, 503, lambda: "120")
    assert 1.95 <= gap < 3.5, gap


async def test_a_redirect_is_a_failure_and_never_followed(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    with receiving() as target:

        def answer(_request: Received, _before: int) -> Answer:
            return Answer(302, headers={"Location": target.url + "/elsewhere"}, body=b"moved")

        with receiving(answer) as receiver:
            task_id, delivery, received = await _deliver(client, customer, receiver)
    await _check(client, customer, task_id, delivery, received, state="failed")
    assert target.received == []
    attempts = delivery["attempts"]
    assert len(attempts) == 4  # the first and one per scheduled wait
    for attempt in attempts:
        assert attempt["statusCode"] == 302 and "redirect" in attempt["error"], attempt


async def test_a_receiver_that_always_fails_ends_failed_and_the_task_is_untouched(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    schedule = runtime.settings.callback_retry_schedule
    with receiving(lambda _r, _n: Answer(500, body=BIG)) as receiver:
        task_id = await create_task(client, customer, receiver.url + "/hook")
        before = await wait_for_terminal(client, customer.headers, task_id)
        delivery = await settled_delivery(client, customer, task_id)
        received = receiver.on("/hook")
    await _check(client, customer, task_id, delivery, received, state="failed")
    assert len(received) == len(delivery["attempts"]) == len(schedule) + 1
    assert [a["statusCode"] for a in delivery["attempts"]] == [500] * (len(schedule) + 1)
    assert all(a["response"] == "x" * EXCERPT for a in delivery["attempts"])
    # Each wait at least the scheduled one (the jitter only adds).
    assert all(gap >= wait for gap, wait in zip(_gaps(received), schedule, strict=True))
    after = await record(client, customer, task_id)
    assert {k: v for k, v in after.items() if k not in ("callbackState", "resultJson")} == {
        k: v for k, v in before.items() if k not in ("callbackState", "resultJson")
    }
    assert (before["state"], after["state"]) == ("success", "success")


async def test_an_answer_with_nul_and_invalid_utf8_is_recorded(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    # PostgreSQL text cannot hold NUL: the excerpt must still be storable, or the attempt
    # is never recorded and the delivery is sent again at every lease expiry.
    answer = Answer(200, body=b"ok\x00\xff\xfe" + BIG)
    with receiving(lambda _r, _n: answer) as receiver:
        task_id, delivery, received = await _deliver(client, customer, receiver)
    await _check(client, customer, task_id, delivery, received, state="delivered")
    (attempt,) = delivery["attempts"]
    assert attempt["statusCode"] == 200
    assert attempt["response"].startswith("ok") and "\x00" not in attempt["response"]


async def test_a_receiver_that_is_not_listening_is_retried_then_failed(
    client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    with receiving() as receiver:
        url = receiver.url + "/hook"
    # The receiver is gone; its port refuses connections.
    task_id = await create_task(client, customer, url)
    delivery = await settled_delivery(client, customer, task_id)
    assert delivery["state"] == "failed"
    attempts = delivery["attempts"]
    assert len(attempts) == len(runtime.settings.callback_retry_schedule) + 1
    for attempt in attempts:
        assert attempt["statusCode"] is None and "ConnectError" in attempt["error"], attempt
    assert (await record(client, customer, task_id))["callbackState"] == "failed"


async def test_retry_after_as_an_http_date_is_honoured_up_to_the_cap(settings: Settings) -> None:
    # A date at least 2 s ahead, 0.5 s scheduled: the cap (2 s) wins, not the schedule.
    gap = await _retry_after_gap(settings, 429, lambda: formatdate(time.time() + 3, usegmt=True))
    assert 1.95 <= gap < 3.5, gap
