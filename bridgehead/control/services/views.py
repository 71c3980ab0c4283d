"""What callers are shown: jobs, deliveries, agents and tokens as plain JSON-ready data."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from bridgehead.control.services.ports import LiveAgent
from bridgehead.control.store.rows import TERMINAL_STATES, AgentRow, ApiTokenRow, Delivery, JobRow


def job_view(
    job: JobRow, progress: dict[str, Any] | None = None, outcome: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A job as the API shows it; ``outcome`` overrides the fields the job's end changed."""
    if outcome is not None:
        job = _Overlay(job, outcome)  # type: ignore[assignment]
    return {
        "id": job.id,
        "plugin": job.plugin,
        "cluster": job.cluster,
        "state": job.state,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "agent": job.agent,
        "error": {"code": job.error_code, "message": job.error_message or ""} if job.error_code else None,
        "record_count": job.record_count if job.terminal else job.acked_seq,
        "timeout_s": job.timeout_s,
        "idempotency_key": job.idempotency_key,
        "cancel_requested": job.cancel_requested,
        "params": job.params,
        "sink": job.sink,
        "progress": progress,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


class _Overlay:
    """A job row seen through the fields its end changed (cheaper than copying the row)."""

    def __init__(self, job: JobRow, changes: dict[str, Any]) -> None:
        self._job = job
        self._changes = changes

    def __getattr__(self, name: str) -> Any:
        return self._changes[name] if name in self._changes else getattr(self._job, name)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


def sync_view(delivery: Delivery | None, counts: dict[str, int], state: str, record_count: int) -> dict[str, Any]:
    """Where a job's delivery to ServiceNow stands: waiting (the job runs), pending,
    delivering, done, failed (with the reason), or not_delivered (the job did not succeed)."""
    if delivery is not None:  # queued in the commit that ended the job as succeeded
        sync_state = delivery.state
    else:
        sync_state = "not_delivered" if state in TERMINAL_STATES else "waiting"
    error = None
    if delivery is not None and delivery.error_code:
        error = {"code": delivery.error_code, "message": delivery.error_message or ""}
    return {
        "state": sync_state,
        **counts,
        "total": record_count,
        "error": error,
        "instance": delivery.instance if delivery is not None else None,
        "started_at": delivery.started_at if delivery is not None else None,
        "finished_at": delivery.finished_at if delivery is not None else None,
    }


def agent_view(agent: AgentRow, link: LiveAgent | None, elsewhere: str | None = None) -> dict[str, Any]:
    """An enrolled agent, with its live session's state when it has one here; ``elsewhere``:
    the other node its session is on (several nodes), whose details this node does not hold."""
    return {
        "name": agent.name,
        "cluster": agent.cluster,
        "connected": link is not None or elsewhere is not None,
        "node": elsewhere,
        "version": link.version if link else agent.version,
        "plugins": sorted(link.plugins) if link else [p["name"] for p in agent.plugins],
        "running": len(link.running) if link else 0,
        "draining": link.draining if link else False,
        "connections": agent.connections,
        "enrolled_at": agent.enrolled_at,
        "last_seen": time.time() if link else agent.last_seen,
        "certificate_expires_at": agent.cert_expires_at,
        "revoked": agent.revoked_at is not None,
    }


def token_view(token: ApiTokenRow) -> dict[str, Any]:
    return dataclasses.asdict(token)
