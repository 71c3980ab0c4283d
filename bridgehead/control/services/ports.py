"""What the services need of the dispatcher: its public face, as protocols.

The services depend on these rather than on ``bridgehead.control.dispatch`` itself, so the
dispatcher can change inside and a test can stand in for it; ``app`` wires the real one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from bridgehead.control.store.rows import JobRow


class LiveAgent(Protocol):
    """An agent with a live session."""

    @property
    def name(self) -> str: ...
    @property
    def cluster(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def plugins(self) -> set[str]: ...
    @property
    def running(self) -> set[str]: ...
    @property
    def draining(self) -> bool: ...


class JobDispatcher(Protocol):
    @property
    def links(self) -> Mapping[str, LiveAgent]: ...
    @property
    def links_version(self) -> int: ...  # bumped whenever the set of live agents changes
    @property
    def progress(self) -> Mapping[str, dict[str, Any]]: ...  # job id -> what its agent last said

    async def submit(self, job: JobRow) -> tuple[JobRow, bool]: ...
    async def cancel(self, job: JobRow) -> JobRow: ...
    async def wait(self, job_id: str, timeout_s: float) -> dict[str, Any] | None: ...
    def disconnect(self, name: str, reason: str) -> None: ...
