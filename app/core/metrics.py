"""Prometheus metrics: every definition, and the one-line helpers the instrumented code calls.

Labels only ever take bounded values (route templates, catalog models, configured channels,
documented fail codes, registered tools), so no caller can grow the number of series.

Under `gengate serve --workers N` the API processes write their values to files in
PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode, chosen when the library is
imported, so the parent sets it before uvicorn spawns them) and any of them answers /metrics
for all. Anywhere else (one API process, a `gengate worker`) the values live in the process.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.core.errors import AppError, ServiceUnavailable
from app.core.outages import is_outage
from app.jobs.failures import fail_code as documented_fail_code
from app.providers.base import (
    Completed,
    Failed,
    Outcome,
    ProgressReporter,
    Provider,
    ProviderJob,
    ProviderUnavailable,
)

if TYPE_CHECKING:
    from app.jobs.models import Task

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The `_created` series double every counter's output and no dashboard here reads them.
disable_created_metrics()

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

HTTP_REQUESTS = Counter(
    "gengate_http_requests",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "gengate_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by route template and method",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
)
MCP_TOOL_CALLS = Counter(
    "gengate_mcp_tool_calls",
    "MCP tool calls, by tool and outcome (ok, tool_error, unavailable, internal_error)",
    ["tool", "outcome"],
)
TASKS_CREATED = Counter("gengate_tasks_created", "Tasks created (committed), by model", ["model"])
TASKS_FINISHED = Counter(
    "gengate_tasks_finished",
    "Tasks that reached a final state, by model, state (success, fail) and fail code",
    ["model", "state", "fail_code"],
)
PICKUP = Histogram(
    "gengate_task_pickup_seconds",
    "Time from a task's creation to the first time a worker took it",
    buckets=_WAIT_BUCKETS,
)
SLOTS_BUSY = Gauge(
    "gengate_worker_slots_busy",
    "Worker slots in use: submit (running a task) or poll (asking an upstream about one)",
    ["pool"],
    multiprocess_mode="livesum",
)
PROVIDER_DURATION = Histogram(
    "gengate_provider_call_duration_seconds",
    "Time a channel took to answer a submit or a poll",
    ["channel", "kind"],
    buckets=_UPSTREAM_BUCKETS,
)
PROVIDER_CALLS = Counter(
    "gengate_provider_calls",
    "Calls to a channel by outcome: succeeded, accepted (the upstream holds the job), "
    "unavailable, exception, or the fail code of a failed one",
    ["channel", "kind", "outcome"],
)
CALLBACK_ATTEMPTS = Counter(
    "gengate_callback_attempts",
    "Callback POSTs by what the delivery became: delivered, pending (retried later), failed",
    ["outcome"],
)
CREDITS_HELD = Counter("gengate_credits_held", "Credits held for tasks when they were created")
CREDITS_SETTLED = Counter("gengate_credits_settled", "Held credits that became a charge")
CREDITS_REFUNDED = Counter("gengate_credits_refunded", "Held credits given back")

QUEUE_STAGES = ("queued", "generating", "held_upstream")


def task_created(model: str, price: int) -> None:
    TASKS_CREATED.labels(model).inc()
    CREDITS_HELD.inc(price)


def task_finished(model: str, code: str | None) -> None:
    """A task reached its final state: `code` is its fail code, None for a success."""
    if code is None:
        TASKS_FINISHED.labels(model, "success", "").inc()
    else:
        TASKS_FINISHED.labels(model, "fail", documented_fail_code(code).code).inc()


def picked_up(tasks: Iterable[Task]) -> None:
    """Observe the pickup latency of the tasks a claim took for their first attempt (a poll
    or a retry is not a pickup)."""
    for task in tasks:
        if task.attempts == 1 and task.polls == 0 and task.started_at is not None:
            PICKUP.observe(max(0, task.started_at - task.created_at) / 1000)


def slot_taken(running: asyncio.Task[None], *, polls: bool) -> None:
    """A worker slot (of the poll pool or the submit pool) is busy until `running` ends."""
    busy = SLOTS_BUSY.labels("poll" if polls else "submit")
    busy.inc()
    running.add_done_callback(lambda _running: busy.dec())


class TimedProvider:
    """A channel's adapter whose submits and polls are timed and counted under the channel
    (app.channels.registry hands these out). The adapter's call starts only when this one
    does, so a call the worker closes unstarted leaves no coroutine behind."""

    def __init__(self, provider: Provider, channel: str) -> None:
        self._provider = provider
        self._channel = channel
        self.name = provider.name
        self.idempotent_submit = provider.idempotent_submit

    async def submit(self, job: ProviderJob, *, report: ProgressReporter) -> Outcome:
        return await _provider_call(
            self._channel, "submit", self._provider.submit(job, report=report)
        )

    async def poll(self, job: ProviderJob, upstream_id: str) -> Outcome:
        return await _provider_call(self._channel, "poll", self._provider.poll(job, upstream_id))

    async def cancel(self, upstream_id: str) -> bool:
        return await self._provider.cancel(upstream_id)

    async def aclose(self) -> None:
        await self._provider.aclose()


async def _provider_call(channel: str, kind: str, call: Awaitable[Outcome]) -> Outcome:
    """Await a provider's submit or poll, timing it and counting its outcome. A call
    cancelled because the lease was lost is neither timed nor counted."""
    started = perf_counter()
    try:
        outcome = await call
    except ProviderUnavailable:
        _provider_done(channel, kind, "unavailable", started)
        raise
    except Exception:
        _provider_done(channel, kind, "exception", started)
        raise
    if isinstance(outcome, Failed):
        label = documented_fail_code(outcome.code).code
    else:
        label = "succeeded" if isinstance(outcome, Completed) else "accepted"
    _provider_done(channel, kind, label, started)
    return outcome


def _provider_done(channel: str, kind: str, outcome: str, started: float) -> None:
    PROVIDER_DURATION.labels(channel, kind).observe(perf_counter() - started)
    PROVIDER_CALLS.labels(channel, kind, outcome).inc()


def tool_called(tool: str, error: BaseException | None = None) -> None:
    """Count an MCP tool call by how it ended: `error` is what its service raised, if any."""
    if error is None:
        outcome = "ok"
    elif isinstance(error, ServiceUnavailable) or is_outage(error):
        outcome = "unavailable"
    elif isinstance(error, AppError):
        outcome = "tool_error"
    else:
        outcome = "internal_error"
    MCP_TOOL_CALLS.labels(tool, outcome).inc()


class QueueDepth(Collector):
    """Active tasks by stage, as counted by one query just before the scrape (see
    app.api.metrics): a figure of the whole queue, the same from every process."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "gengate_queue_depth",
            "Active tasks: queued (waiting for a worker), generating (a worker runs it), "
            "held_upstream (an upstream has the job; polled until it ends)",
            labels=["stage"],
        )
        for stage in QUEUE_STAGES:
            family.add_metric([stage], self._counts.get(stage, 0))
        yield family


def exposition(queue_depth: Mapping[str, int] | None) -> bytes:
    """The text exposition of this process, or of every API process under
    `serve --workers N`; with the queue depth unless it could not be counted."""
    body = generate_latest(_process_registry())
    if queue_depth is not None:
        body += generate_latest(QueueDepth(queue_depth))
    return body


def _process_registry() -> CollectorRegistry:
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def share_between_processes() -> Path:
    """In `serve --workers N`'s parent, before the processes start: give them one fresh
    directory for their values (PROMETHEUS_MULTIPROC_DIR as set, emptied; else a temporary
    one, removed when the parent exits)."""
    chosen = os.environ.get(MULTIPROC_ENV)
    path = Path(chosen) if chosen else Path(tempfile.mkdtemp(prefix="gengate-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # a previous run's counts are not this run's
        stale.unlink()
    if not chosen:
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def process_stopped() -> None:
    """An API process leaving: under multiprocess mode its live gauges (busy slots) stop
    counting; its counters stay, so totals never go back."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())
