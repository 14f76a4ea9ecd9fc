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

    async def submit(self, job: ProviderJob, *, report: ProgressReporter) -> Outcome:
        """Start the job. Must be idempotent by `job.task_id`: a resubmission after a crash
        returns the same upstream job instead of starting (and billing) a second one."""
        ...

    async def poll(self, job: ProviderJob, upstream_id: str) -> Outcome: ...
