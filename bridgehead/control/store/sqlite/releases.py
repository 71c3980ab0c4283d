"""What the SQLite store keeps of agent releases (``bridgehead.control.releases``): one row per
uploaded release (its bytes are a file beside the database), the version each cluster should
run, and the update reports of agents, appended.
"""

from __future__ import annotations

from typing import Any

from bridgehead.control.store.rows import ReleaseConflict, ReleaseRow, UpdateRow
from bridgehead.control.store.sqlite.writer import GroupCommit

RELEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    version TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    signature TEXT NOT NULL,
    uploaded_at REAL NOT NULL,
    uploaded_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS wanted_releases (
    cluster TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    set_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent TEXT NOT NULL,
    cluster TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS agent_updates_by_agent ON agent_updates (agent, at);
"""

_RELEASE = "version, size, sha256, signature, uploaded_at, uploaded_by"
_UPDATE = "agent, cluster, version, state, message, at"


def _release(row: tuple[Any, ...]) -> ReleaseRow:
    return ReleaseRow(*row)


def _update(row: tuple[Any, ...]) -> UpdateRow:
    return UpdateRow(*row)


class ReleaseTables(GroupCommit):
    async def add_release(self, row: ReleaseRow) -> ReleaseRow:
        def op() -> ReleaseRow:
            # Read and insert in one transaction. The op itself never raises on a conflict (that
            # would fail the writes committed with it): it hands back the kept row instead.
            kept = self.db.execute(
                f"SELECT {_RELEASE} FROM releases WHERE version=?",  # noqa: S608 - fixed column list
                (row.version,),
            ).fetchone()
            if kept is not None:
                return _release(kept)
            self.db.execute(
                f"INSERT INTO releases ({_RELEASE}) VALUES (?, ?, ?, ?, ?, ?)",  # noqa: S608 - fixed column list
                (row.version, row.size, row.sha256, row.signature, row.uploaded_at, row.uploaded_by),
            )
            return row

        kept = await self._write(op)
        if kept.sha256 != row.sha256:
            raise ReleaseConflict(row.version)
        return kept

    async def releases(self) -> list[ReleaseRow]:
        rows = self.db.execute(
            f"SELECT {_RELEASE} FROM releases ORDER BY uploaded_at DESC, rowid DESC"  # noqa: S608 - fixed column list
        ).fetchall()
        return [_release(r) for r in rows]

    async def release(self, version: str) -> ReleaseRow | None:
        row = self.db.execute(
            f"SELECT {_RELEASE} FROM releases WHERE version=?",  # noqa: S608 - fixed column list
            (version,),
        ).fetchone()
        return _release(row) if row else None

    async def set_wanted_release(self, cluster: str, version: str | None, at: float) -> None:
        if version is None:
            await self._write(lambda: self.db.execute("DELETE FROM wanted_releases WHERE cluster=?", (cluster,)))
            return
        await self._write(
            lambda: self.db.execute(
                "INSERT INTO wanted_releases (cluster, version, set_at) VALUES (?, ?, ?) "
                "ON CONFLICT (cluster) DO UPDATE SET version=excluded.version, set_at=excluded.set_at",
                (cluster, version, at),
            )
        )

    async def wanted_releases(self) -> dict[str, tuple[str, float]]:
        rows = self.db.execute("SELECT cluster, version, set_at FROM wanted_releases ORDER BY cluster").fetchall()
        return {cluster: (version, set_at) for cluster, version, set_at in rows}

    async def record_update(self, row: UpdateRow) -> None:
        await self._write(
            lambda: self.db.execute(
                f"INSERT INTO agent_updates ({_UPDATE}) VALUES (?, ?, ?, ?, ?, ?)",  # noqa: S608 - fixed column list
                (row.agent, row.cluster, row.version, row.state, row.message, row.at),
            )
        )

    async def updates(self, agent: str | None = None, limit: int = 100) -> list[UpdateRow]:
        where, args = ("WHERE agent=?", (agent,)) if agent is not None else ("", ())
        rows = self.db.execute(
            f"SELECT {_UPDATE} FROM agent_updates {where} ORDER BY at DESC, id DESC LIMIT ?",  # noqa: S608 - fixed parts
            (*args, max(limit, 0)),
        ).fetchall()
        return [_update(r) for r in rows]
