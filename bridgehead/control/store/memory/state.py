"""What a ``MemoryStore`` keeps, and how its writes are applied.

``MemoryState`` is the "disk": everything acknowledged, and nothing else. Several stores may
be opened over one state, one after another (a restart: ``MemoryStore.reopen()``) or side by
side (another process, such as the CLI, writing to the same store).

Writes follow the same shape as SQLite's group commit, so tests meet the same timing: a write
is queued when called, every write queued during one loop turn is applied at the end of the
turn in call order, and only then do their awaitables resolve. Each write checks before it
changes anything, so one that raises has changed nothing.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bridgehead.control.store.rows import AgentRow, AuditRow, JobRow, Rejected, ReleaseRow, ScheduleRow, UpdateRow
from bridgehead.protocol import SyncState

T = TypeVar("T")


@dataclass
class Batch:
    """One ``append_records`` call's records, as SQLite keeps them (one row per message)."""

    first_seq: int
    records: list[bytes]


@dataclass
class KeptSync:
    state: SyncState  # its version: the number of runs that replaced it
    job_id: str
    updated_at: float


@dataclass
class EnrollmentToken:
    cluster: str
    expires_at: float
    created_at: float
    uses_left: int
    replace_name: str | None
    used_at: float | None = None
    used_by: str | None = None


@dataclass
class ApiToken:
    token_hash: str
    role: str
    name: str
    created_at: float
    expires_at: float | None
    last_used_at: float | None = None
    revoked_at: float | None = None


@dataclass
class SinkDelivery:
    job_id: str
    instance: str
    state: str
    batch_size: int
    total: int
    started_at: float
    updated_at: float
    error_code: str | None = None
    error_message: str | None = None
    finished_at: float | None = None
    batches: dict[int, tuple[int, dict[str, int]]] = field(default_factory=dict)  # first seq: last, counts
    rejected: dict[int, Rejected] = field(default_factory=dict)
    node: str | None = None  # the node driving it (store.deliveries: its lease)
    lease_until: float = 0.0


@dataclass
class MemoryState:
    """Every table of the store, in memory; dicts keep insertion order where SQLite keeps rowid order."""

    jobs: dict[str, JobRow] = field(default_factory=dict)
    idempotency_keys: dict[str, str] = field(default_factory=dict)
    record_batches: dict[tuple[str, int], dict[int, Batch]] = field(default_factory=dict)  # by last seq
    sync_states: dict[str, KeptSync] = field(default_factory=dict)
    agents: dict[str, AgentRow] = field(default_factory=dict)
    enrollment_tokens: dict[str, EnrollmentToken] = field(default_factory=dict)
    api_tokens: dict[str, ApiToken] = field(default_factory=dict)
    audit: list[AuditRow] = field(default_factory=list)
    schedules: dict[str, ScheduleRow] = field(default_factory=dict)
    schedule_claims: dict[str, tuple[str, float]] = field(default_factory=dict)  # name: (node, until)
    deliveries: dict[str, SinkDelivery] = field(default_factory=dict)
    refresh_tokens: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    releases: dict[str, ReleaseRow] = field(default_factory=dict)
    wanted_releases: dict[str, tuple[str, float]] = field(default_factory=dict)  # cluster -> (version, set at)
    updates: list[UpdateRow] = field(default_factory=list)
    queue_seq: int = 0  # the highest queue position handed out
    commits: int = 0  # by every store over this state (external_changes)


class MemoryWrites:
    """The write queue of one store over a ``MemoryState``."""

    def __init__(self, state: MemoryState) -> None:
        self.state = state
        self._pending: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._flush_scheduled = False
        self._own_commits = 0
        # Commits applied (readers see them) but not yet durable: a model of the flush to disk
        # the SQLite store waits for, held open by tests so that they can see that nothing is
        # acknowledged before its write is durable. None: every commit is durable at once.
        self._not_durable: list[tuple[asyncio.Future[Any], Any, BaseException | None]] | None = None
        self._on_commit: list[Callable[[], None]] = []

    @property
    def commits_before_durable(self) -> bool:
        """While durability is held, a commit comes before its flush, as on SQLite."""
        return self._not_durable is not None

    def when_committed(self, callback: Callable[[], None]) -> None:
        if self._not_durable is None:
            raise NotImplementedError("durability is not held: a commit is all there is")
        self._on_commit.append(callback)
        self._schedule_flush()

    def hold_durability(self) -> None:
        """From now on, commits apply but their writes resolve only at ``release_durability``."""
        if self._not_durable is None:
            self._not_durable = []

    def release_durability(self) -> None:
        """The held commits become durable: their writes resolve, in order."""
        held, self._not_durable = self._not_durable or [], None
        _settle(held)

    def _write(self, op: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((op, future))
        self._schedule_flush()
        return future

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        committed, self._on_commit = self._on_commit, []
        if not batch:
            for callback in committed:
                callback()
            return
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        for op, future in batch:
            try:
                outcomes.append((future, op(), None))
            except Exception as exc:  # noqa: BLE001 - its caller learns of it
                outcomes.append((future, None, exc))
        self.state.commits += 1
        self._own_commits += 1
        if self._not_durable is not None:
            self._not_durable += outcomes
        else:
            _settle(outcomes)
        for callback in committed:
            callback()

    async def close(self) -> None:
        if self._pending:
            self._flush()
        self.release_durability()

    def external_changes(self) -> int:
        return self.state.commits - self._own_commits


def copied(value: T) -> T:
    """Rows go in and out as copies, as they would through a database: a caller changing a
    row it holds changes nothing stored."""
    return copy.deepcopy(value)


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
