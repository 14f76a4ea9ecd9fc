"""The provider protocol: every upstream sits behind `submit` and `poll`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

ProgressReporter = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class ProviderJob:
    """What a provider gets: our task id (its idempotency key) and the normalised input."""

    task_id: str
    model_id: str
    scene: str
    media_type: str
    input: Mapping[str, Any]
    attempt: int
    # How many times this task was polled upstream so far (for an adapter's poll backoff).
    polls: int = 0


@dataclass(frozen=True)
class Output:
    data: bytes
    content_type: str


@dataclass(frozen=True)
class Completed:
    outputs: list[Output]
    # What the upstream reported it spent (tokens, seconds, credits), for cost and margin.
    cost: dict[str, Any] | None = None


@dataclass(frozen=True)
class Pending:
    """The upstream took the job; ask again after `poll_after_s`."""

    upstream_id: str
    progress: int = 0
    poll_after_s: float = 2.0
    # The job's place in the upstream's queue, when the upstream reports one (0 = next).
    queue_position: int | None = None


@dataclass(frozen=True)
class Failed:
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


Outcome = Completed | Pending | Failed


class ProviderUnavailable(Exception):
    """A transient failure (network, 5xx, throttling): the worker retries with backoff.

    `retry_after_s`: what the upstream asked for, if anything. `ambiguous`: the request may
    have reached the upstream (a timeout or a dropped connection after the body was sent,
    504, 524), so the job must not be submitted again elsewhere.
    """

    def __init__(
        self, message: str = "", *, retry_after_s: float | None = None, ambiguous: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.ambiguous = ambiguous


class Provider(Protocol):
    name: str
    # True when a second `submit` of the same task id cannot start a second upstream job
    # (the upstream dedupes by our id, or the adapter can look the job up by it). Only then
    # does the worker resubmit after a crash or an ambiguous submit; otherwise the task
    # fails refunded rather than risk paying the upstream twice.
    idempotent_submit: bool

    async def submit(self, job: ProviderJob, *, report: ProgressReporter) -> Outcome:
        """Start the job. Must be idempotent by `job.task_id`: a resubmission after a crash
        returns the same upstream job instead of starting (and billing) a second one."""
        ...

    async def poll(self, job: ProviderJob, upstream_id: str) -> Outcome: ...

    async def cancel(self, upstream_id: str) -> bool:
        """Ask the upstream to stop the job; True when it did. An upstream without a cancel
        answers False. Raises ProviderUnavailable on 429, 5xx and connection failures."""
        ...

    async def aclose(self) -> None:
        """Release what the adapter holds (its own HTTP client, if any)."""
        ...
