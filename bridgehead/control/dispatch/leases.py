"""Lease bookkeeping: when an agent counts as gone and when its attempts lapse. No I/O.

A running attempt holds a *lease* for as long as its agent's session is alive: any frame
from the agent renews all of its leases. An agent silent for two heartbeat intervals
(``lease_s``) is dropped, and its leases lapse ``lease_s`` after it was last heard from.
After a control-plane restart, running attempts get ``restart_grace_s`` for their agents to
reconnect (their reconnect backoff may be longer than one lease). Times are monotonic
seconds, passed in, so the rules run against any clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bridgehead.control.dispatch.attempts import Live
from bridgehead.control.dispatch.links import AgentLink

# The agent enforces a job's timeout itself; the control plane steps in only if the agent
# has not reported this long after it, so a slow plugin cleanup is not cut short.
TIMEOUT_GRACE_S = 30.0


@dataclass(frozen=True)
class Leases:
    heartbeat_s: float = 5.0
    restart_grace_s: float = 60.0

    @property
    def lease_s(self) -> float:
        return 2 * self.heartbeat_s

    @property
    def grace_after_restart_s(self) -> float:
        return max(self.restart_grace_s, self.lease_s)

    def silent(self, link: AgentLink, now: float) -> bool:
        """The agent has not been heard from for a whole lease: its session is dropped."""
        return now - link.last_seen > self.lease_s

    def lapse_after(self, link: AgentLink) -> float:
        """When the leases of a link's attempts lapse if it is heard from no more."""
        return link.last_seen + self.lease_s

    def check(self, live: Live, holder: AgentLink | None, now: float) -> Literal["lost", "timed_out"] | None:
        """Renew the attempt's lease from its holder's session, if alive, then judge it:
        ``lost`` once the lease lapsed, ``timed_out`` once the job's timeout and its grace
        passed without a result, else None."""
        if holder is not None and not holder.closed:
            live.lease_expires = self.lapse_after(holder)
        if now > live.lease_expires:
            return "lost"
        if now > live.started + live.timeout_s + TIMEOUT_GRACE_S:
            return "timed_out"
        return None
