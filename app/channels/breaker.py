"""A circuit breaker per channel: consecutive upstream failures open it for a cool-down,
then one trial request is let through (half-open); its outcome closes or reopens it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]
# Fail codes that say nothing about the channel: the caller's input or our own rules.
_NOT_THE_CHANNELS = frozenset({"invalid_input", "content_policy", "input_unreachable", "canceled"})


def counts_against_channel(fail_code: str) -> bool:
    """Whether a failure with this code is the upstream's doing (and so trips breakers)."""
    return fail_code not in _NOT_THE_CHANNELS


class CircuitBreaker:
    def __init__(
        self,
        *,
        failures: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failures
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        # When the half-open trial went out; a trial whose outcome never came (its worker
        # lost the task) is given up after another cool-down, so the channel is not lost.
        self._trial_at: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self._cooldown_s:
            return "half_open"
        return "open"

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """May a request go through now? In half-open, only one at a time (the trial)."""
        state = self.state
        if state == "closed":
            return True
        now = self._clock()
        if state == "half_open" and (
            self._trial_at is None or now - self._trial_at >= self._cooldown_s
        ):
            self._trial_at = now
            return True
        return False

    def record_success(self) -> None:
        self._failures, self._opened_at, self._trial_at = 0, None, None

    def record_failure(self) -> None:
        self._failures += 1
        if self._opened_at is not None or self._failures >= self._threshold:
            self._opened_at, self._trial_at = self._clock(), None  # (re)open
