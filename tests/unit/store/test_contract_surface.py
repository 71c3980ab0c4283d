"""The contract is the whole surface: callers hold a ``Store``, so a backend's public method
that the contract lacks would be a concrete type leaking into them."""

from __future__ import annotations

import inspect

import pytest

from bridgehead.control.store.base import Store
from bridgehead.control.store.memory import MemoryStore
from bridgehead.control.store.nodes import NodeStore
from bridgehead.control.store.postgres import PostgresStore
from bridgehead.control.store.sqlite import SqliteStore

# MemoryStore.reopen: restarts, for tests; hold/release_durability: a slow flush to disk, for tests.
# PostgresStore.with_identity: the shared identity's transaction, run once at start before the
# node serves (bridgehead.control.nodes.shared_identity), never by a caller holding a Store.
EXTRAS = {
    SqliteStore: set(),
    PostgresStore: {"with_identity"},
    MemoryStore: {"reopen", "hold_durability", "release_durability"},
}


def public_methods(cls: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}


@pytest.mark.parametrize("backend", [SqliteStore, PostgresStore, MemoryStore], ids=lambda b: b.__name__)
def test_a_backend_adds_no_public_method_to_the_contract(backend: type[Store]) -> None:
    # A backend several nodes can share adds the NodeStore contract (store.nodes), no more.
    contracts = public_methods(Store) | (public_methods(NodeStore) if issubclass(backend, NodeStore) else set())
    assert EXTRAS[backend] == public_methods(backend) - contracts
    assert not inspect.isabstract(backend)


def test_every_read_is_async_but_external_changes() -> None:
    # (``when_committed`` is no read: it registers a callback for the next commit.)
    sync = {
        name
        for name in public_methods(Store)
        if not inspect.iscoroutinefunction(getattr(Store, name))
        and "Awaitable" not in str(inspect.signature(getattr(Store, name)).return_annotation)
    }
    assert {"external_changes", "when_committed"} == sync
