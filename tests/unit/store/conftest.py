"""The store contract suite runs every test once per backend: ``sqlite`` (a file in a temp dir)
and ``memory``. ``reopen()`` opens another store over the same data: a restart, or (while the
first is still open) another process such as the CLI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_contract import Reopen

from bridgehead.control.store.base import Store
from bridgehead.control.store.memory import MemoryState, MemoryStore
from bridgehead.control.store.sqlite import SqliteStore


@pytest.fixture(params=["sqlite", "memory"])
async def opened(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Reopen]:
    stores: list[Store] = []
    state = MemoryState()

    def reopen() -> Store:
        store: Store = SqliteStore(tmp_path / "control.db") if request.param == "sqlite" else MemoryStore(state)
        stores.append(store)
        return store

    yield reopen
    for store in stores:
        await store.close()


@pytest.fixture
def store(opened: Reopen) -> Store:
    return opened()


@pytest.fixture
def reopen(opened: Reopen, store: Store) -> Reopen:
    return opened
