"""The first wait for an asynchronous import set's outcomes follows the instance's own pace."""

from __future__ import annotations

import pytest

from bridgehead.control.sinks.pace import TransformPace


def test_before_learning_a_batch_waits_the_configured_poll() -> None:
    pace = TransformPace(0.5, ceiling_s=5.0)
    assert pace.first_wait(200) == pytest.approx(0.5)
    assert pace.first_wait(400) == pytest.approx(1.0)  # twice the rows, twice the wait


def test_a_quick_instance_is_polled_sooner_down_to_the_floor() -> None:
    pace = TransformPace(0.5, ceiling_s=5.0, floor_s=0.02)
    waits = []
    for _ in range(30):
        wait = pace.first_wait(200)
        waits.append(wait)
        pace.learn(200, wait, polls=1)  # done at the first poll, every time
    assert waits == sorted(waits, reverse=True)
    assert waits[1] < waits[0]
    assert waits[-1] == pytest.approx(0.02)


def test_a_slow_instance_teaches_how_long_it_takes_within_the_ceiling() -> None:
    pace = TransformPace(0.5, ceiling_s=5.0)
    pace.learn(200, 3.0, polls=4)  # it took 3 s to transform 200 rows
    assert pace.first_wait(200) == pytest.approx(3.0)
    assert pace.first_wait(100) == pytest.approx(1.5)
    pace.learn(200, 60.0, polls=9)
    assert pace.first_wait(200) == pytest.approx(5.0)  # never beyond the ceiling
