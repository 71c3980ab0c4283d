"""Unit tests of the reconnect backoff: full jitter under an exponentially growing cap."""

from __future__ import annotations

import itertools
import random

import pytest

from bridgehead.agent.backoff import backoff


class RecordingRandom(random.Random):
    """A seeded Random that remembers the bounds of each ``uniform`` call (the caps)."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.bounds: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.bounds.append((a, b))
        return super().uniform(a, b)


def caps(initial_s: float, max_s: float, n: int, seed: int = 0) -> list[float]:
    rng = RecordingRandom(seed)
    list(itertools.islice(backoff(initial_s, max_s, rng), n))
    assert all(0 == low for low, _high in rng.bounds)
    return [high for _low, high in rng.bounds]


def test_caps_double_until_the_maximum_then_stay() -> None:
    """The jitter's cap starts at initial_s, doubles each attempt, and stays at max_s once reached."""
    assert [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0] == caps(0.5, 30.0, 10)


def test_cap_stays_at_maximum_for_long_outages() -> None:
    """After many attempts the cap is still exactly max_s (no overflow, no drift)."""
    assert [60.0] * 10 == caps(1.0, 60.0, 2000)[-10:]


def test_cap_equal_initial_and_max_is_constant() -> None:
    """With initial_s == max_s the cap never moves."""
    assert [5.0] * 6 == caps(5.0, 5.0, 6)


@pytest.mark.parametrize("seed", range(5))
def test_delays_lie_between_zero_and_the_cap(seed: int) -> None:
    """Every delay is within [0, cap] for its attempt."""
    expected_caps = [min(10.0, 0.25 * 2**n) for n in range(200)]
    delays = list(itertools.islice(backoff(0.25, 10.0, random.Random(seed)), 200))
    assert 200 == len(delays)
    for delay, cap in zip(delays, expected_caps, strict=True):
        assert 0 <= delay <= cap


def test_delays_are_jittered_not_fixed() -> None:
    """Delays at the cap vary (full jitter), so a fleet does not reconnect in lockstep."""
    delays = list(itertools.islice(backoff(1.0, 1.0, random.Random(7)), 50))
    assert 40 < len(set(delays))
    assert min(delays) < 0.25
    assert max(delays) > 0.75


def test_same_seed_gives_same_delays() -> None:
    """A seeded generator is reproducible; another seed gives other delays."""
    first = list(itertools.islice(backoff(0.5, 30.0, random.Random(42)), 20))
    again = list(itertools.islice(backoff(0.5, 30.0, random.Random(42)), 20))
    other = list(itertools.islice(backoff(0.5, 30.0, random.Random(43)), 20))
    assert first == again
    assert first != other


def test_default_random_source_works() -> None:
    """Without an rng the generator still yields delays within the first caps."""
    delays = list(itertools.islice(backoff(0.1, 0.4), 5))
    for delay, cap in zip(delays, [0.1, 0.2, 0.4, 0.4, 0.4], strict=True):
        assert 0 <= delay <= cap
