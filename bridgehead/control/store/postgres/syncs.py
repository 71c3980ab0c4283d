"""The PostgreSQL store's sync states: what each named sync keeps for its next run.

``version`` counts the runs that replaced a state, so a run that started from an older state
cannot overwrite it (the UPDATE's ``WHERE version=$n`` decides, whichever node ends first).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import asyncpg

from bridgehead.control.store.postgres.writer import GroupCommit
from bridgehead.control.store.rows import SyncSummary
from bridgehead.protocol import SyncState

log = logging.getLogger("bridgehead.control.store")


async def keep_sync_state(db: asyncpg.Connection, state: SyncState, job_id: str, now: float) -> None:
    """Part of the commit that ends a job as succeeded: keep the state its sync run reached."""
    values = (state.version + 1, state.watermark, state.ids, job_id, now, state.name)
    updated = await db.fetchval(
        "UPDATE sync_states SET version=$1, watermark=$2, ids=$3, job_id=$4, updated_at=$5 WHERE name=$6 "
        "AND version=$7 RETURNING 1",
        *values,
        state.version,
    )
    if not updated and state.version == 0:
        updated = await db.fetchval(
            "INSERT INTO sync_states (version, watermark, ids, job_id, updated_at, name) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING 1",
            *values,
        )
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
        row = await (await self._reads()).fetchrow(
            "SELECT version, watermark, ids FROM sync_states WHERE name=$1", name
        )
        if row is None:
            return None
        return SyncState(name=name, version=row[0], watermark=row[1], ids=bytes(row[2]))

    async def sync_states(self, after: str = "", limit: int = -1) -> list[SyncSummary]:
        rows = await (await self._reads()).fetch(
            "SELECT name, version, watermark, length(ids), job_id, updated_at FROM sync_states WHERE name > $1 "
            "ORDER BY name LIMIT $2",
            after,
            None if limit < 0 else limit,
        )
        return [SyncSummary(r[0], r[1], r[2], r[3] // 16, r[4], r[5]) for r in rows]

    def delete_sync_state(self, name: str) -> Awaitable[Any]:
        async def op(db: asyncpg.Connection) -> None:
            await db.execute("DELETE FROM sync_states WHERE name=$1", name)

        return self._write(op)
