"""Routing: priority tiers, weights, exclusions, and the breaker, on a clock of the test's."""

from __future__ import annotations

import random
from collections import Counter

from app.channels.config import Channel
from app.channels.router import ChannelRouter

M = "gpt-image-2-text-to-image"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _router(*channels: Channel, clock: Clock | None = None) -> ChannelRouter:
    return ChannelRouter(
        channels,
        breaker_failures=3,
        breaker_cooldown_s=30,
        rng=random.Random(7),
        clock=clock or Clock(),
    )


def _channel(name: str, priority: int = 0, weight: int = 1) -> Channel:
    return Channel(name=name, adapter="local", models=(M,), priority=priority, weight=weight)


def test_the_highest_priority_tier_wins_and_weights_split_it() -> None:
    router = _router(_channel("a", 10, 3), _channel("b", 10, 1), _channel("fallback", 0))
    picks = Counter(router.route(M).name for _ in range(4000))  # type: ignore[union-attr]
    assert set(picks) == {"a", "b"}
    assert 2.5 < picks["a"] / picks["b"] < 3.5


def test_tried_channels_are_excluded_then_the_next_tier_serves() -> None:
    router = _router(_channel("a", 10), _channel("b", 5))
    assert router.route(M, exclude={"a"}).name == "b"  # type: ignore[union-attr]
    assert router.route(M, exclude={"a", "b"}) is None
    assert router.route("another-model") is None


def test_the_breaker_opens_half_opens_and_closes() -> None:
    clock = Clock()
    router = _router(_channel("a", 10), _channel("b", 0), clock=clock)
    for _ in range(3):
        router.record("a", fail_code="provider_error")
    assert {h.name: h.breaker for h in router.health()}["a"] == "open"
    assert router.route(M).name == "b"  # type: ignore[union-attr]
    clock.now += 30
    assert router.route(M).name == "a"  # the one trial of half-open
    assert router.route(M).name == "b"  # no second trial while it is out
    router.record("a", fail_code="provider_timeout")  # the trial failed: open again
    assert router.route(M).name == "b"  # type: ignore[union-attr]
    clock.now += 30
    assert router.route(M).name == "a"  # type: ignore[union-attr]
    router.record("a", fail_code=None)
    assert {h.name: h.breaker for h in router.health()}["a"] == "closed"


def test_the_callers_failures_never_trip_a_breaker() -> None:
    router = _router(_channel("a"))
    for code in ("invalid_input", "content_policy", "input_unreachable", "canceled") * 5:
        router.record("a", fail_code=code)
    (health,) = router.health()
    assert (health.breaker, health.consecutive_failures) == ("closed", 0)


def test_a_trial_whose_outcome_never_came_is_given_up_after_a_cool_down() -> None:
    clock = Clock()
    router = _router(_channel("a", 10), _channel("b", 0), clock=clock)
    for _ in range(3):
        router.record("a", fail_code="provider_error")
    clock.now += 30
    assert router.route(M).name == "a"  # type: ignore[union-attr]
    clock.now += 29
    assert router.route(M).name == "b"  # type: ignore[union-attr]
    clock.now += 1  # the trial's worker lost the task: another trial may go
    assert router.route(M).name == "a"  # type: ignore[union-attr]
