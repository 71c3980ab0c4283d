"""The SQLite store's sync states: what each named sync keeps for its next run.

``version`` counts the runs that replaced a state, so a run that started from an older state
cannot overwrite it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable
from typing import Any

from bridgehead.control.store.rows import SyncSummary
from bridgehead.control.store.sqlite.writer import GroupCommit
from bridgehead.protocol import SyncState

log = logging.getLogger("bridgehead.control.store")


def keep_sync_state(db: sqlite3.Connection, state: SyncState, job_id: str, now: float) -> None:
    """Part of the commit that ends a job as succeeded: keep the state its sync run reached."""
    values = (state.version + 1, state.watermark, state.ids, job_id, now, state.name, state.version)
    updated = db.execute(
        "UPDATE sync_states SET version=?, watermark=?, ids=?, job_id=?, updated_at=? WHERE name=? AND version=?",
        values,
    ).rowcount
    if not updated and state.version == 0:
        updated = db.execute(
            "INSERT OR IGNORE INTO sync_states (version, watermark, ids, job_id, updated_at, name) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            values[:-1],
        ).rowcount
    if not updated:
        log.warning(
            "sync %r: job %s started from state version %d, which another run has replaced; "
            "its records stand, its state is not kept",
            state.name,
            job_id,
            state.version,
        )


class SyncTables(GroupCommit):
    async def sync_state(self, name: str) -> SyncState | None:
        row = self.db.execute("SELECT version, watermark, ids FROM sync_states WHERE name=?", (name,)).fetchone()
        if row is None:
            return None
        return SyncState(name=name, version=row[0], watermark=row[1], ids=bytes(row[2]))

    async def sync_states(self, after: str = "", limit: int = -1) -> list[SyncSummary]:
        rows = self.db.execute(
            "SELECT name, version, watermark, length(ids), job_id, updated_at FROM sync_states WHERE name > ? "
            "ORDER BY name LIMIT ?",
            (after, limit),
        ).fetchall()
        return [SyncSummary(r[0], r[1], r[2], r[3] // 16, r[4], r[5]) for r in rows]

    def delete_sync_state(self, name: str) -> Awaitable[Any]:
        return self._write(lambda: self.db.execute("DELETE FROM sync_states WHERE name=?", (name,)))
