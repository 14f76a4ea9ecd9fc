"""When a failed callback is tried again: the schedule, its jitter, and Retry-After."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

from app.callbacks.models import DeliveryStatus

JITTER = 0.10
# A receiver's Retry-After is honoured up to this many times the scheduled wait.
RETRY_AFTER_CAP = 4


@dataclass(frozen=True)
class Verdict:
    status: DeliveryStatus
    wait_s: float | None = None  # while pending: seconds until the next attempt


def judge(
    *, attempt: int, schedule: list[float], status_code: int | None, retry_after: str | None
) -> Verdict:
    """Where a delivery stands after its `attempt`-th attempt (1-based).

    2xx: delivered. 410 Gone: failed at once. Anything else (3xx, other statuses, network
    errors, timeouts, refused addresses) waits for the next attempt of the schedule, or
    fails when none is left; 429 and 503 wait what Retry-After says, up to
    RETRY_AFTER_CAP x the scheduled wait.
    """
    if status_code is not None and 200 <= status_code < 300:
        return Verdict(DeliveryStatus.DELIVERED)
    if status_code == 410 or attempt > len(schedule):
        return Verdict(DeliveryStatus.FAILED)
    scheduled = schedule[attempt - 1]
    wait = scheduled * (1 + random.uniform(0, JITTER))  # noqa: S311 - jitter, not a secret
    asked = parse_retry_after(retry_after) if status_code in (429, 503) else None
    if asked is not None:
        wait = min(asked, scheduled * RETRY_AFTER_CAP)
    return Verdict(DeliveryStatus.PENDING, wait)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())
