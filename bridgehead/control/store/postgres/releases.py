"""What the PostgreSQL store keeps of agent releases: one row per uploaded release, the version
each cluster should run, and the update reports of agents, appended (``store.releases``)."""

from __future__ import annotations

import asyncpg

from bridgehead.control.store.postgres.writer import GroupCommit
from bridgehead.control.store.rows import ReleaseConflict, ReleaseRow, UpdateRow

_RELEASE = "version, size, sha256, signature, uploaded_at, uploaded_by"
_UPDATE = "agent, cluster, version, state, message, at"


class ReleaseTables(GroupCommit):
    async def add_release(self, row: ReleaseRow) -> ReleaseRow:
        async def op(db: asyncpg.Connection) -> ReleaseRow:
            # Never raises on a conflict (that would fail the writes committed with it): the
            # insert yields to a kept row, handed back to be compared.
            await db.execute(
                f"INSERT INTO releases ({_RELEASE}) VALUES ($1, $2, $3, $4, $5, $6) "  # noqa: S608 - fixed column list
                "ON CONFLICT (version) DO NOTHING",
                row.version,
                row.size,
                row.sha256,
                row.signature,
                row.uploaded_at,
                row.uploaded_by,
            )
            kept = await db.fetchrow(
                f"SELECT {_RELEASE} FROM releases WHERE version=$1",  # noqa: S608 - fixed column list
                row.version,
            )
            assert kept is not None  # noqa: S101 - inserted or kept, in this transaction
            return ReleaseRow(*kept)

        kept = await self._write(op)
        if kept.sha256 != row.sha256:
            raise ReleaseConflict(row.version)
        return kept

    async def releases(self) -> list[ReleaseRow]:
        rows = await (await self._reads()).fetch(
            f"SELECT {_RELEASE} FROM releases ORDER BY uploaded_at DESC, seq DESC"  # noqa: S608 - fixed column list
        )
        return [ReleaseRow(*r) for r in rows]

    async def release(self, version: str) -> ReleaseRow | None:
        row = await (await self._reads()).fetchrow(
            f"SELECT {_RELEASE} FROM releases WHERE version=$1",  # noqa: S608 - fixed column list
            version,
        )
        return ReleaseRow(*row) if row else None

    async def set_wanted_release(self, cluster: str, version: str | None, at: float) -> None:
        async def op(db: asyncpg.Connection) -> None:
            if version is None:
                await db.execute("DELETE FROM wanted_releases WHERE cluster=$1", cluster)
                return
            await db.execute(
                "INSERT INTO wanted_releases (cluster, version, set_at) VALUES ($1, $2, $3) "
                "ON CONFLICT (cluster) DO UPDATE SET version=excluded.version, set_at=excluded.set_at",
                cluster,
                version,
                at,
            )

        await self._write(op)

    async def wanted_releases(self) -> dict[str, tuple[str, float]]:
        rows = await (await self._reads()).fetch(
            "SELECT cluster, version, set_at FROM wanted_releases ORDER BY cluster"
        )
        return {cluster: (version, set_at) for cluster, version, set_at in rows}

    async def record_update(self, row: UpdateRow) -> None:
        async def op(db: asyncpg.Connection) -> None:
            await db.execute(
                f"INSERT INTO agent_updates ({_UPDATE}) VALUES ($1, $2, $3, $4, $5, $6)",  # noqa: S608 - fixed column list
                row.agent,
                row.cluster,
                row.version,
                row.state,
                row.message,
                row.at,
            )

        await self._write(op)

    async def updates(self, agent: str | None = None, limit: int = 100) -> list[UpdateRow]:
        where, args = ("WHERE agent=$2", (agent,)) if agent is not None else ("", ())
        rows = await (await self._reads()).fetch(
            f"SELECT {_UPDATE} FROM agent_updates {where} ORDER BY at DESC, id DESC LIMIT $1",  # noqa: S608 - fixed parts
            max(limit, 0),
            *args,
        )
        return [UpdateRow(*r) for r in rows]
