"""``MemoryStore``: the whole store contract in memory, for tests (as httpx ships MockTransport).

The same semantics as ``SqliteStore``, checked by the one contract suite (``tests/unit/store``):
queue order, idempotency keys, fencing, writes applied in call order and resolved at the end
of the loop turn. A restart is a new store over the same ``MemoryState``::

    store = MemoryStore()
    await store.insert_job(job)
    store = store.reopen()          # what a restarted control plane reads
"""

from __future__ import annotations

from bridgehead.control.store.base import Store
from bridgehead.control.store.memory.agents import AccessTables, AgentTables
from bridgehead.control.store.memory.deliveries import DeliveryTables
from bridgehead.control.store.memory.jobs import JobTables
from bridgehead.control.store.memory.releases import ReleaseTables
from bridgehead.control.store.memory.schedules import ScheduleTables
from bridgehead.control.store.memory.state import MemoryState


class MemoryStore(JobTables, AgentTables, AccessTables, ScheduleTables, DeliveryTables, ReleaseTables, Store):
    def __init__(self, state: MemoryState | None = None) -> None:
        super().__init__(state if state is not None else MemoryState())

    def reopen(self) -> MemoryStore:
        """Another store over this one's state: what a restart reads back (after ``close``, or
        after a crash: without it), or another process writing to the same data meanwhile."""
        return MemoryStore(self.state)
