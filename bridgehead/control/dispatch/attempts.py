"""Running attempts and the policy that decides what happens when one ends badly. No I/O.

A lost or failed attempt is run again as a new attempt only while attempts remain, nobody
asked to cancel the job, and either it never started on the agent (not ``accepted``) or its
plugin said it is safe to repeat. A refused offer never ran, so only the first two hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

RETRY_DELAY_MAX_S = 30.0
# A sync's name as the ldap plugin's params allow it; anything else names no sync (and the
# offer's ``sync_state.name`` must decode on the agent: 1 to 128 characters).
_SYNC_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


@dataclass
class Live:
    """A running attempt (a ``bridgehead.protocol.jobs.Holder``: its attempt and agent)."""

    job_id: str
    cluster: str
    plugin: str
    attempt: int
    agent: str
    max_attempts: int
    timeout_s: float
    started: float  # monotonic
    started_at: float  # wall clock, as stored
    offered: bool = False  # the offer frame is queued on the link (after its attempt was stored)
    # Offered at its commit (``Offer.confirm_follows``): the attempt's durability, and whether
    # the ``Confirm`` a run not safe to repeat waits for is still to be sent.
    durable: bool = True
    confirm_due: bool = False
    accepted: bool = False
    safe_to_repeat: bool = False
    cancel_requested: bool = False
    acked_seq: int = 0
    lease_expires: float = 0.0  # monotonic; refreshed while the agent's session is alive
    sync: str | None = None  # the sync whose state this attempt may replace (its params name it)


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed attempt runs again, and after how long: ``base_s`` doubling per attempt,
    at most ``max_s`` (a refused offer or a lost agent goes again at once)."""

    base_s: float = 0.5
    max_s: float = RETRY_DELAY_MAX_S

    def may_retry(self, live: Live) -> bool:
        return (
            live.attempt < live.max_attempts
            and not live.cancel_requested
            and (live.safe_to_repeat or not live.accepted)
        )

    def may_retry_refused(self, live: Live, retryable: bool) -> bool:
        """A refused offer never ran, so it may always go elsewhere while attempts remain."""
        return retryable and live.attempt < live.max_attempts and not live.cancel_requested

    def delay_s(self, attempt: int) -> float:
        return min(self.max_s, self.base_s * 2.0 ** (attempt - 1))

    def when_lost(self, live: Live) -> Literal["cancelled", "retry", "failed"]:
        """What a lost attempt (its lease lapsed, its agent restarted) becomes."""
        if live.cancel_requested:
            return "cancelled"
        return "retry" if self.may_retry(live) else "failed"

    @staticmethod
    def why_not(live: Live) -> str:
        return "no attempts left" if live.attempt >= live.max_attempts else "the plugin is not safe to repeat"


def final_state(live: Live, status: str) -> str:
    """The job's end state for a completion's status: a failure after a cancel request is
    the cancel taking effect."""
    return "cancelled" if live.cancel_requested and status == "failed" else status


def sync_name(params: dict[str, Any]) -> str | None:
    """The sync a job's params name (``params.sync``), whose state its run starts from and may
    replace. Plugin-agnostic: any plugin with a string ``sync`` param takes part."""
    name = params.get("sync")
    return name if isinstance(name, str) and _SYNC_NAME.fullmatch(name) else None
