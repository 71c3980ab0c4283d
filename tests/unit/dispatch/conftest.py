"""Fixtures of the dispatcher's unit tests: a Dispatcher over the in-memory store, no sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bridgehead.control.dispatch import Dispatcher, RetryPolicy
from bridgehead.control.metrics import Metrics
from bridgehead.control.store.memory import MemoryStore


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def dispatcher(store: MemoryStore) -> AsyncIterator[Dispatcher]:
    """Retries without delay; a fail-stop is collected (and fails the test) instead of
    ending the process, unless the test expects one and replaces ``fail_stop`` itself."""
    dispatcher = Dispatcher(store, Metrics(), heartbeat_s=5.0, retry=RetryPolicy(base_s=0.0))
    stops: list[BaseException] = []
    dispatcher.fail_stop = stops.append  # type: ignore[method-assign]
    yield dispatcher
    await dispatcher.stop()
    assert [] == stops
