"""Reconnect delays: exponential backoff with full jitter.

``delay = uniform(0, min(cap, initial * 2 ** n))`` (the "full jitter" of the AWS
architecture blog): a fleet of agents cut off together does not reconnect in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff(initial_s: float, max_s: float, rng: random.Random | None = None) -> Iterator[float]:
    rand = rng or random.Random()  # noqa: S311 - jitter, not cryptography
    ceiling = initial_s
    while True:
        yield rand.uniform(0, ceiling)
        ceiling = min(max_s, ceiling * 2)
