"""Fencing: which frames of which attempt from which agent may change a job. No I/O.

Only the current attempt of a running job, from the agent that holds it, may add records,
report progress or complete it (``bridgehead.protocol.jobs.is_current``); anything else is
answered with ``abandon``. The records of earlier attempts are dropped when a new one
starts, so the visible records are the final attempt's. A completion re-sent after its
end was stored (the ``complete_ack`` was lost with a connection) is acknowledged again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from bridgehead.control.dispatch.attempts import Live
from bridgehead.control.store.base import JobRow
from bridgehead.protocol import SyncState
from bridgehead.protocol.jobs import is_current


def current(live: Mapping[str, Live], agent: str, job_id: str, attempt: int) -> Live | None:
    """The running attempt a frame of ``attempt`` of ``job_id`` from ``agent`` may change."""
    found = live.get(job_id)
    return found if found is not None and is_current(found, agent, attempt) else None


def answer_stale_completion(job: JobRow | None, agent: str, attempt: int) -> Literal["complete_ack", "abandon"]:
    """A completion for an attempt that is not running: a re-sent one if the stored job ended
    with that very attempt on that agent; else a stale or foreign attempt."""
    if job is not None and job.attempt == attempt and job.terminal and job.agent == agent:
        return "complete_ack"
    return "abandon"


def sync_state_to_keep(live: Live, state: str, reported: SyncState | None) -> SyncState | None:
    """The sync state a completion may leave: only a succeeded run of the sync it was given
    (whatever else an agent claims is dropped; the caller says so, a bug or an attack)."""
    if reported is None or state != "succeeded" or reported.name != live.sync:
        return None
    return reported
