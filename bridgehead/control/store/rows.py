"""The rows the store keeps and hands back: plain dataclasses, the same for every backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

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


COUNTS = ("inserted", "updated", "ignored", "skipped", "errors")  # a sink delivery's outcomes


@dataclass(frozen=True)
class Delivery:
    """A succeeded job's delivery into its sink (``DeliveryStore``)."""

    job_id: str
    instance: str
    state: str  # pending (not started), delivering, done, failed (resumes on POST .../sync/retry)
    batch_size: int  # 0 until the delivery first starts; then fixed for good
    total: int
    error_code: str | None
    error_message: str | None
    started_at: float
    finished_at: float | None


@dataclass(frozen=True)
class Rejected:
    """A record the sink's instance refused, with its answer."""

    seq: int
    status: str
    message: str
    record: dict[str, Any]


@dataclass(frozen=True)
class ReleaseRow:
    """An uploaded agent release (``ReleaseStore``): its bytes are ``releases/<version>.bin`` in
    the data dir; ``signature`` (base64) is the release key's over the version and ``sha256``."""

    version: str
    size: int
    sha256: str  # lowercase hex
    signature: str
    uploaded_at: float
    uploaded_by: str  # the actor's id: an API token's, or "cli"


@dataclass(frozen=True)
class UpdateRow:
    """What an agent said of its move to ``version`` (``state``: an ``UpdateStatus`` state)."""

    agent: str
    cluster: str
    version: str
    state: str
    message: str
    at: float


class ReleaseConflict(Exception):
    """A release of that version exists with other bytes (another SHA-256): a version names one
    binary for good, so a rebuilt one needs a new version."""
