"""An in-memory store, for tests: ``MemoryStore`` (and ``MemoryState``, what it keeps)."""

from bridgehead.control.store.memory.state import MemoryState
from bridgehead.control.store.memory.store import MemoryStore

__all__ = ["MemoryState", "MemoryStore"]
