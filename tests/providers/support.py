"""Driving an adapter against its fake: submit, then poll until the job leaves Pending."""

from __future__ import annotations

from app.providers.base import Outcome, Pending, Provider, ProviderJob


async def no_progress(_progress: int) -> None:
    return None


async def submitted(provider: Provider, job: ProviderJob) -> Pending:
    outcome = await provider.submit(job, report=no_progress)
    assert isinstance(outcome, Pending), outcome
    return outcome


async def poll_to_end(provider: Provider, job: ProviderJob, upstream_id: str) -> Outcome:
    """Poll until the job leaves Pending; the fakes finish within a few polls."""
    for _ in range(10):
        outcome = await provider.poll(job, upstream_id)
        if not isinstance(outcome, Pending):
            return outcome
    raise AssertionError("the job was still pending after 10 polls")
