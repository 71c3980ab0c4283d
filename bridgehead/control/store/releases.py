"""The releases part of the store contract: uploaded agent releases, the version each cluster
should run, and what agents reported of their updates.

The bytes of a release are a file in the data dir (``bridgehead.control.releases.files``);
the store keeps what names and vouches for them. A version names one binary for good:
uploading it again with the same bytes is a no-op, with other bytes a ``ReleaseConflict``.
"""

from __future__ import annotations

import abc

from bridgehead.control.store.rows import ReleaseRow, UpdateRow


class ReleaseStore(abc.ABC):
    @abc.abstractmethod
    async def add_release(self, row: ReleaseRow) -> ReleaseRow:
        """Keep ``row`` and return it; if its version is kept already with the same SHA-256,
        the kept row (nothing changes); with another, ``ReleaseConflict`` (nothing changes)."""

    @abc.abstractmethod
    async def releases(self) -> list[ReleaseRow]:
        """Every release, newest (``uploaded_at``) first; uploads of one instant, last kept first."""

    @abc.abstractmethod
    async def release(self, version: str) -> ReleaseRow | None: ...

    @abc.abstractmethod
    async def set_wanted_release(self, cluster: str, version: str | None, at: float) -> None:
        """The version ``cluster``'s agents should run from now on; ``None``: none (agents stay
        on what they run). The caller checks that the release exists."""

    @abc.abstractmethod
    async def wanted_releases(self) -> dict[str, tuple[str, float]]:
        """Cluster -> (wanted version, when it was set), for every cluster that has one."""

    @abc.abstractmethod
    async def record_update(self, row: UpdateRow) -> None:
        """Append what an agent reported of an update (the history is kept, not replaced)."""

    @abc.abstractmethod
    async def updates(self, agent: str | None = None, limit: int = 100) -> list[UpdateRow]:
        """The last ``limit`` update reports (of ``agent`` only, if given), newest first (by
        ``at``; reports of one instant, last recorded first)."""
