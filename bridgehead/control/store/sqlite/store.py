"""``SqliteStore``: the whole store contract over one SQLite connection.

One control-plane process owns the database while it serves; the CLI writes tokens and
enrolment grants to it from another process (``busy_timeout`` and ``BEGIN IMMEDIATE`` make
it wait its turn, and ``external_changes`` lets the server notice).
"""

from __future__ import annotations

from pathlib import Path

from bridgehead.control.store.base import Store
from bridgehead.control.store.sqlite.access import AccessTables
from bridgehead.control.store.sqlite.agents import AgentTables
from bridgehead.control.store.sqlite.jobs import JobTables, queue_positions
from bridgehead.control.store.sqlite.records import RecordTables
from bridgehead.control.store.sqlite.schedules import ScheduleTables
from bridgehead.control.store.sqlite.schema import open_database
from bridgehead.control.store.sqlite.sinks import SinkTables
from bridgehead.control.store.sqlite.syncs import SyncTables


class SqliteStore(JobTables, RecordTables, SyncTables, AgentTables, AccessTables, ScheduleTables, SinkTables, Store):
    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        self.path = path
        super().__init__(open_database(path, synchronous))
        self._queue_seq = queue_positions(self.db)
