"""The store interface: everything the control plane keeps durably.

The dispatcher holds the hot state (queues, leases, credit) in memory and writes every
transition here *before* it acknowledges it to anyone (persist, then ack). A backend
implements these methods; ``SqliteStore`` is the embedded one, and a PostgreSQL backend for
several control-plane nodes implements the same surface.

Write methods that return an ``Awaitable`` *issue* the write when called and resolve once it
is durable. Writes are applied in the order they were issued. That contract lets the gateway
keep reading an agent's frames while earlier writes commit, and send each acknowledgement
only when its write is durable, without reordering anything.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from bridgehead.protocol import SyncState

_size_encoder = msgspec.json.Encoder()


def json_size(value: Any) -> int:
    """A value's size as JSON: the one measure the store's byte-capped lists and the API's
    ``next`` both use, so they agree where a page ends."""
    return 0 if value is None else len(_size_encoder.encode(value))


TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")


@dataclass
class SyncSummary:
    name: str
    version: int
    watermark: str | None
    identities: int
    job_id: str
    updated_at: float


@dataclass
class JobRow:
    id: str
    plugin: str
    params: dict[str, Any]
    cluster: str
    state: str = "queued"
    attempt: int = 0
    max_attempts: int = 3
    timeout_s: float = 3600.0
    idempotency_key: str | None = None
    sink: dict[str, Any] | None = None
    agent: str | None = None
    accepted: bool = False
    safe_to_repeat: bool = False
    cancel_requested: bool = False
    error_code: str | None = None
    error_message: str | None = None
    acked_seq: int = 0
    record_count: int = 0
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    queue_seq: int = 0
    progress: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass
class AgentRow:
    name: str
    cluster: str
    agent_id: str
    public_key: str
    enrolled_at: float
    last_seen: float | None = None
    version: str = ""
    plugins: list[dict[str, Any]] = field(default_factory=list)
    connections: list[str] = field(default_factory=list)
    cert_expires_at: float | None = None  # the newest certificate issued to it
    revoked_at: float | None = None  # set: refused at the gateway until enrolled again


@dataclass(frozen=True)
class Actor:
    """Who made a change, as the audit log names them: an API token (its public id and
    label), or the CLI, an enrolment token, the scheduler; and from which address."""

    id: str  # an API token's id, or "cli", "enrollment-token", "scheduler"
    name: str = ""
    role: str = ""
    address: str = "local"


CLI = Actor("cli", address="local")


@dataclass
class ApiTokenRow:
    """An API token as listed: never its secret, only ``id`` (the start of its hash)."""

    id: str
    name: str
    role: str
    created_at: float
    expires_at: float | None = None
    last_used_at: float | None = None
    revoked_at: float | None = None


@dataclass
class AuditRow:
    id: int
    at: float
    actor: str
    actor_name: str
    address: str
    action: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class EnrollmentGrant:
    """What an enrolment token allows (``Store.enroll_agent`` checks it in the same
    transaction that registers the agent)."""

    token_hash: str
    agent: AgentRow
    replace_allowed: bool = False  # refused unless the token was made with --replace NAME
    address: str = ""  # where the enrolment came from (for the audit log)


@dataclass(frozen=True)
class EnrollmentRefused:
    status: int  # the HTTP status to answer with
    code: str
    message: str


@dataclass
class ScheduleRow:
    """A recurring schedule (bridgehead.control.schedules); times are epoch seconds (UTC)."""

    name: str
    cron: str
    timezone: str
    job: dict[str, Any]  # the job template: a POST /api/v1/jobs body without idempotency_key
    enabled: bool = True
    next_run_at: float | None = None  # None while disabled
    last_run_at: float | None = None
    last_job_id: str | None = None
    runs: int = 0
    skipped_overlaps: int = 0
    last_error_code: str | None = None  # why the last due run made no job (None after a run)
    last_error_message: str | None = None
    created_at: float = 0.0


class Store(abc.ABC):
    # --- jobs ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_job(self, job: JobRow) -> tuple[JobRow, bool]:
        """Insert ``job``; with an idempotency key already used, return (existing, False)."""

    @abc.abstractmethod
    def insert_job(self, job: JobRow) -> Awaitable[None]:
        """Insert ``job``, which has no idempotency key, and give it its ``queue_seq`` at
        once; the write joins this turn's commit, so the job's first attempt may too."""

    @abc.abstractmethod
    async def get_job(self, job_id: str) -> JobRow | None: ...

    @abc.abstractmethod
    async def list_jobs(
        self, state: str | None, cluster: str | None, limit: int, before: str | None, max_bytes: int | None = None
    ) -> list[JobRow]:
        """Newest first; with ``max_bytes``, stop once the jobs' params and sinks reach it
        (at least one job)."""

    @abc.abstractmethod
    async def jobs_in_state(self, state: str) -> list[JobRow]:
        """Every job in ``state``, oldest first (to rebuild queues and leases at start)."""

    @abc.abstractmethod
    def start_attempt(self, job_id: str, attempt: int, agent: str, now: float) -> Awaitable[object]:
        """The job runs as ``attempt`` on ``agent``; earlier attempts' records are dropped."""

    @abc.abstractmethod
    def mark_accepted(self, job_id: str, attempt: int, safe_to_repeat: bool) -> Awaitable[object]: ...

    @abc.abstractmethod
    def append_records(self, job_id: str, attempt: int, first_seq: int, records: Sequence[bytes]) -> Awaitable[object]:
        """Store records ``first_seq`` ... of the attempt and advance its ``acked_seq``."""

    @abc.abstractmethod
    def finish_job(
        self,
        job_id: str,
        attempt: int,
        state: str,
        error_code: str | None,
        error_message: str | None,
        record_count: int,
        now: float,
        sync_state: SyncState | None = None,
    ) -> Awaitable[object]:
        """End the job; with ``sync_state``, keep it for the sync's next run in the same commit,
        unless another run replaced the state this one started from (its ``version``)."""

    # --- sync states ------------------------------------------------------------------------
    @abc.abstractmethod
    def sync_state(self, name: str) -> SyncState | None:
        """The kept state of sync ``name`` (None before its first successful run)."""

    @abc.abstractmethod
    async def sync_states(self, after: str = "", limit: int = -1) -> list[SyncSummary]:
        """By name, after ``after``; at most ``limit`` (-1: all)."""

    @abc.abstractmethod
    def delete_sync_state(self, name: str) -> Awaitable[object]:
        """Forget a sync's state: its next run returns every entry again."""

    @abc.abstractmethod
    def requeue_job(self, job_id: str, error_code: str | None, error_message: str | None) -> Awaitable[object]:
        """Back to ``queued`` (the next dispatch is a new attempt); the reason is kept."""

    @abc.abstractmethod
    def request_cancel(self, job_id: str) -> Awaitable[object]: ...

    @abc.abstractmethod
    async def records(
        self, job_id: str, attempt: int, after: int, limit: int, max_bytes: int | None = None
    ) -> list[tuple[int, bytes]]:
        """Records after ``after``: at most ``limit``, and at most ``max_bytes`` of them in
        total unless the first alone is larger (then it alone). Reads no more than that."""

    # --- agents and credentials -----------------------------------------------------------
    @abc.abstractmethod
    async def enroll_agent(self, grant: EnrollmentGrant, now: float) -> AgentRow | EnrollmentRefused:
        """In one transaction: check the token (known, unexpired, uses left, its cluster, the
        name free or the token made to replace it), spend one use, register the agent and
        audit it. A refusal spends nothing."""

    @abc.abstractmethod
    def set_agent_certificate(self, name: str, expires_at: float) -> Awaitable[object]: ...

    @abc.abstractmethod
    async def revoke_agent(self, name: str, actor: Actor, now: float) -> bool:
        """Refuse the agent from now on (its name may then be enrolled again); False if unknown."""

    @abc.abstractmethod
    async def revoked_agents(self, since: float) -> list[str]:
        """Names revoked at or after ``since`` (a running server polls what the CLI wrote)."""

    @abc.abstractmethod
    async def get_agent(self, name: str) -> AgentRow | None: ...

    @abc.abstractmethod
    async def list_agents(self, after: str = "", limit: int = -1) -> list[AgentRow]:
        """By name, after ``after``; at most ``limit`` (-1: all)."""

    @abc.abstractmethod
    def agent_seen(
        self, name: str, now: float, version: str, plugins: list[dict[str, Any]], connections: list[str]
    ) -> Awaitable[object]: ...

    @abc.abstractmethod
    def add_api_token(
        self, token_hash: str, role: str, name: str, now: float, expires_at: float | None = None
    ) -> Awaitable[object]: ...

    @abc.abstractmethod
    async def api_token(self, token_hash: str) -> ApiTokenRow | None:
        """The token with this hash, revoked and expired ones included."""

    @abc.abstractmethod
    async def api_tokens(self) -> list[ApiTokenRow]: ...

    @abc.abstractmethod
    async def revoke_api_token(self, token_id: str, now: float) -> ApiTokenRow | None:
        """Revoke the unrevoked token with this id; None if there is none."""

    @abc.abstractmethod
    def api_token_used(self, token_id: str, now: float) -> Awaitable[object]: ...

    @abc.abstractmethod
    def external_changes(self) -> int:
        """A number that changes whenever another process (the CLI) commits to the store:
        what a cache of tokens checks to notice a revocation at once."""

    @abc.abstractmethod
    def add_enrollment_token(
        self, token_hash: str, cluster: str, expires_at: float, now: float, uses: int = 1, replace: str | None = None
    ) -> Awaitable[object]: ...

    # --- schedules ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def add_schedule(self, schedule: ScheduleRow, limit: int) -> Literal["created", "exists", "full"]:
        """Insert ``schedule``: "created", or "exists" (its name is taken), or "full" (``limit``
        schedules exist already)."""

    @abc.abstractmethod
    async def get_schedule(self, name: str) -> ScheduleRow | None: ...

    @abc.abstractmethod
    async def list_schedules(self, after: str = "", limit: int = -1, max_bytes: int | None = None) -> list[ScheduleRow]:
        """By name, after ``after``; at most ``limit`` (-1: all), stopping once their job
        templates reach ``max_bytes`` (at least one)."""

    @abc.abstractmethod
    async def due_schedules(self, now: float) -> list[ScheduleRow]:
        """Enabled schedules whose ``next_run_at`` is at or before ``now``, earliest first."""

    @abc.abstractmethod
    async def next_schedule_at(self) -> float | None:
        """The earliest ``next_run_at`` of the enabled schedules."""

    @abc.abstractmethod
    async def delete_schedule(self, name: str) -> bool: ...

    @abc.abstractmethod
    async def set_schedule_enabled(self, name: str, enabled: bool, next_run_at: float | None) -> bool: ...

    @abc.abstractmethod
    def record_schedule_run(self, name: str, job_id: str, now: float, next_run_at: float | None) -> Awaitable[object]:
        """A run made job ``job_id``: count it, clear the last error, set the next occurrence."""

    @abc.abstractmethod
    def record_schedule_skip(
        self, name: str, next_run_at: float | None, overlap: bool, error: tuple[str, str] | None
    ) -> Awaitable[object]:
        """A due run made no job, because the previous run is still going (``overlap``) or
        because of ``error`` (code, message); move on to ``next_run_at``."""

    async def delivery_finished(self, job_id: str) -> bool:
        """Whether the job's sink delivery is over (done or failed), or it has none. Stores
        with sinks override this; without them there is never a delivery to wait for."""
        return True

    @abc.abstractmethod
    def audit(self, actor: Actor, action: str, detail: dict[str, Any], now: float) -> Awaitable[object]: ...

    @abc.abstractmethod
    async def audit_log(
        self,
        after: int,
        limit: int,
        actor: str | None = None,
        action: str | None = None,
        since: float | None = None,
        until: float | None = None,
        max_bytes: int | None = None,
    ) -> list[AuditRow]:
        """Audit entries past id ``after``, oldest first; ``actor`` matches its id or name;
        with ``max_bytes``, stop once their details reach it (at least one entry)."""

    @abc.abstractmethod
    async def close(self) -> None: ...
