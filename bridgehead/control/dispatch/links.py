"""An agent's live session as the dispatcher sees it, and the liveness rules it answers to."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bridgehead.protocol import ProtocolError, ServerMessage
from bridgehead.protocol.errors import CLOSE_POLICY_VIOLATION

# An agent sends one heartbeat an interval; more than this many in one is a flood (dropped).
MAX_BEATS_PER_INTERVAL = 50


class Flooding(ProtocolError):
    close_code = CLOSE_POLICY_VIOLATION


@dataclass
class AgentLink:
    """One live agent session, as the dispatcher sees it."""

    name: str
    cluster: str
    session_id: str
    plugins: set[str]
    credit: int
    send: Callable[[ServerMessage], None]
    close: Callable[[int, str], None]
    encode: Callable[[ServerMessage], bytes]  # raises if the message cannot be sent
    send_encoded: Callable[[bytes], None]
    last_seen: float = field(default_factory=time.monotonic)
    draining: bool = False
    closed: bool = False
    replaced: bool = False  # a newer session of the same agent took its place on this node
    version: str = ""
    confirms: bool = False  # the agent holds a run not safe to repeat for ``Confirm`` (its hello says)
    running: set[str] = field(default_factory=set)
    heartbeat_pending: bool = False  # an answer to a heartbeat is queued, not yet written
    beats: int = 0  # heartbeats received since ``beats_since`` (monotonic)
    beats_since: float = 0.0

    @property
    def takes_offers(self) -> bool:
        return self.credit > 0 and not self.draining and not self.closed

    def count_beat(self, interval_s: float) -> None:
        """One heartbeat, heard at ``last_seen``. An agent beats once an interval; dozens in
        one interval is a flood, not liveness: ``Flooding`` closes the session."""
        if self.last_seen - self.beats_since > interval_s:
            self.beats_since, self.beats = self.last_seen, 0
        self.beats += 1
        if self.beats > MAX_BEATS_PER_INTERVAL:
            raise Flooding("heartbeat_flood", f"over {MAX_BEATS_PER_INTERVAL} heartbeats in {interval_s:g} s")

    def grant(self, n: int, max_credit: int) -> None:
        """More credit, capped: an agent asking for more than its share cannot hoard its
        cluster's queue."""
        self.credit = min(self.credit + n, max(0, max_credit - len(self.running)))
