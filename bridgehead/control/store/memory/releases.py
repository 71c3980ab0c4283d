"""The in-memory store's releases, wanted versions and update reports (the contract:
``store.releases``)."""

from __future__ import annotations

from bridgehead.control.store.memory.state import MemoryWrites
from bridgehead.control.store.rows import ReleaseConflict, ReleaseRow, UpdateRow


class ReleaseTables(MemoryWrites):
    async def add_release(self, row: ReleaseRow) -> ReleaseRow:
        def op() -> ReleaseRow:
            kept = self.state.releases.get(row.version)
            if kept is None:
                self.state.releases[row.version] = row
                return row
            if kept.sha256 != row.sha256:
                raise ReleaseConflict(row.version)  # raised before any change: nothing happened
            return kept

        return await self._write(op)

    async def releases(self) -> list[ReleaseRow]:
        # Rows are frozen, so they go out as they are. Insertion order stands for SQLite's rowid.
        kept = list(enumerate(self.state.releases.values()))
        return [row for _, row in sorted(kept, key=lambda k: (k[1].uploaded_at, k[0]), reverse=True)]

    async def release(self, version: str) -> ReleaseRow | None:
        return self.state.releases.get(version)

    async def set_wanted_release(self, cluster: str, version: str | None, at: float) -> None:
        def op() -> None:
            if version is None:
                self.state.wanted_releases.pop(cluster, None)
            else:
                self.state.wanted_releases[cluster] = (version, at)

        await self._write(op)

    async def wanted_releases(self) -> dict[str, tuple[str, float]]:
        return dict(self.state.wanted_releases)

    async def record_update(self, row: UpdateRow) -> None:
        await self._write(lambda: self.state.updates.append(row))

    async def updates(self, agent: str | None = None, limit: int = 100) -> list[UpdateRow]:
        kept = [(i, u) for i, u in enumerate(self.state.updates) if agent is None or u.agent == agent]
        return [u for _, u in sorted(kept, key=lambda k: (k[1].at, k[0]), reverse=True)[: max(limit, 0)]]
