"""Which channel a task goes to: the highest-priority tier with a channel that may take a
request now, weighted random inside it, never one already tried for this task."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from app.channels.breaker import BreakerState, CircuitBreaker, counts_against_channel
from app.channels.config import Channel


@dataclass(frozen=True)
class ChannelHealth:
    name: str
    adapter: str
    priority: int
    weight: int
    models: tuple[str, ...]
    breaker: BreakerState
    consecutive_failures: int


class ChannelRouter:
    def __init__(
        self,
        channels: Iterable[Channel],
        *,
        breaker_failures: int,
        breaker_cooldown_s: float,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channels = list(channels)
        self._rng = rng or random.Random()  # noqa: S311 - load spreading, not a secret
        self._breakers = {
            c.name: CircuitBreaker(
                failures=breaker_failures, cooldown_s=breaker_cooldown_s, clock=clock
            )
            for c in self._channels
        }

    def route(self, model_id: str, *, exclude: Collection[str] = ()) -> Channel | None:
        """The channel for the next attempt of a task of `model_id`, or None when every
        channel serving it was tried already or has its breaker open."""
        serving = [c for c in self._channels if model_id in c.models and c.name not in exclude]
        for priority in sorted({c.priority for c in serving}, reverse=True):
            tier = [c for c in serving if c.priority == priority]
            while tier:
                chosen = self._rng.choices(tier, weights=[c.weight for c in tier])[0]
                if self._breakers[chosen.name].allow():
                    return chosen
                tier.remove(chosen)
        return None

    def available(self, model_id: str, *, exclude: Collection[str] = ()) -> bool:
        """Whether some channel outside `exclude` could take a task of `model_id` now (an
        open breaker cannot; a half-open one may). Unlike `route`, it takes no trial."""
        return any(
            model_id in c.models
            and c.name not in exclude
            and self._breakers[c.name].state != "open"
            for c in self._channels
        )

    def record(self, channel: str, *, fail_code: str | None) -> None:
        """An attempt's outcome on `channel`: None for a success. Failures that are the
        caller's (its input) never count against the channel."""
        breaker = self._breakers[channel]
        if fail_code is None:
            breaker.record_success()
        elif counts_against_channel(fail_code):
            breaker.record_failure()

    def health(self) -> list[ChannelHealth]:
        return [
            ChannelHealth(
                name=c.name,
                adapter=c.adapter,
                priority=c.priority,
                weight=c.weight,
                models=c.models,
                breaker=self._breakers[c.name].state,
                consecutive_failures=self._breakers[c.name].consecutive_failures,
            )
            for c in self._channels
        ]
