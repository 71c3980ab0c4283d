"""``SqliteStore``: the whole store contract over one SQLite connection.

One control-plane process owns the database while it serves; the CLI writes tokens and
enrolment grants to it from another process (``busy_timeout`` and ``BEGIN IMMEDIATE`` make
it wait its turn, and ``external_changes`` lets the server notice).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from bridgehead.control.store.base import Store
from bridgehead.control.store.sqlite.access import AccessTables
from bridgehead.control.store.sqlite.agents import AgentTables
from bridgehead.control.store.sqlite.jobs import JobTables, queue_positions
from bridgehead.control.store.sqlite.records import RecordTables
from bridgehead.control.store.sqlite.releases import ReleaseTables
from bridgehead.control.store.sqlite.schedules import ScheduleTables
from bridgehead.control.store.sqlite.schema import open_database
from bridgehead.control.store.sqlite.sinks import SinkTables
from bridgehead.control.store.sqlite.syncs import SyncTables
from bridgehead.core.wal_sync import WalSync


class SqliteStore(
    JobTables, RecordTables, SyncTables, AgentTables, AccessTables, ScheduleTables, SinkTables, ReleaseTables, Store
):
    def __init__(self, path: Path, synchronous: Literal["full", "normal"] = "full") -> None:
        """``synchronous``: ``full`` (the default) resolves a write once a flush of the WAL
        covers it, so it survives a power loss; ``normal`` once committed, so it survives a
        crash of the process only (``writer.GroupCommit``)."""
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        self.path = path
        super().__init__(open_database(path), WalSync(path) if synchronous == "full" else None)
        self._queue_seq = queue_positions(self.db)
