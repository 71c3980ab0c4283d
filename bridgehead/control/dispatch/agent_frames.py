"""What the dispatcher does with each frame an agent sends, and with the jobs it holds on hello.

Every frame is handled without awaiting: the in-memory state changes at once, the store
write is issued (writes apply in issue order) and the answer that promises durability
(``ack``, ``complete_ack``) is sent from the write's completion. Sequence and completion
rules are the protocol's (``bridgehead.protocol.jobs``); which attempt may speak is
``fencing``'s; what a failure becomes is ``attempts.RetryPolicy``'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from bridgehead.control.dispatch.attempts import Live, RetryPolicy, final_state
from bridgehead.control.dispatch.durability import Durability
from bridgehead.control.dispatch.fencing import answer_stale_completion, current, sync_state_to_keep
from bridgehead.control.dispatch.links import AgentLink
from bridgehead.control.metrics import Metrics
from bridgehead.control.store.base import Store
from bridgehead.protocol import (
    Abandon,
    Accept,
    Ack,
    Complete,
    CompleteAck,
    Credit,
    Drain,
    Heartbeat,
    HeldJob,
    Hello,
    Progress,
    Records,
    Reject,
    ResumeJob,
    SyncState,
)
from bridgehead.protocol.jobs import check_completion, fresh_records, is_current, resume_verdict

log = logging.getLogger("bridgehead.control.dispatcher")

NOT_CURRENT = "not the current attempt"


class Host(Protocol):
    """What frame handling needs of the dispatcher: its hot state, its store and the ends of
    attempts (``Dispatcher`` is the one host; the seam keeps this module from importing it)."""

    live: dict[str, Live]
    links: dict[str, AgentLink]
    progress: dict[str, dict[str, Any]]
    store: Store
    metrics: Metrics
    durability: Durability
    retry_policy: RetryPolicy
    max_credit: int
    heartbeat_s: float

    def dispatch(self, cluster: str) -> None: ...

    def confirm(self, live: Live) -> None: ...

    def detach(self, link: AgentLink) -> None: ...

    def lost_hold(self, link: AgentLink, job_id: str) -> None: ...

    def attempt_lost(self, live: Live, why: str, notify: bool = True) -> None: ...

    def retry(self, live: Live, code: str, message: str, delay_s: float | None = None) -> asyncio.Future[Any]: ...

    def finish(
        self,
        job_id: str,
        attempt: int,
        state: str,
        code: str | None,
        message: str | None,
        record_count: int,
        sync_state: SyncState | None = None,
    ) -> asyncio.Future[Any]: ...


class AgentFrames:
    def __init__(self, dispatcher: Host) -> None:
        self.dispatcher = dispatcher

    def attach(self, link: AgentLink, hello: Hello) -> list[ResumeJob]:
        """A session is being opened: settle every attempt the agent holds or should hold.

        The verdicts travel in the welcome; the link takes offers only once ``activate``d,
        after the welcome is on its way, since nothing but the welcome may precede it.
        """
        old = self.dispatcher.links.get(link.name)
        if old is not None:
            old.close(4004, "replaced by a newer session of the same agent")
            old.replaced = True
            self.dispatcher.detach(old)
        verdicts = [self._verdict(link, held) for held in hello.jobs]
        held_keys = {(h.job_id, h.attempt) for h in hello.jobs}
        for live in [v for v in self.dispatcher.live.values() if v.agent == link.name]:
            if (live.job_id, live.attempt) not in held_keys:
                # Offered but never journaled there (lost in flight), or the agent lost its journal.
                self.dispatcher.attempt_lost(live, f"agent {link.name} reconnected without it", notify=False)
        return verdicts

    def _verdict(self, link: AgentLink, held: HeldJob) -> ResumeJob:
        live = self.dispatcher.live.get(held.job_id)
        if live is not None and is_current(live, link.name, held.attempt):
            if not live.accepted:
                # Journaled there, so it may have started, whether or not its accept arrived
                # (the agent may have died with it unsent): an attempt with no accept would
                # count as one that never ran, and a lost one would run again even if it is
                # not safe to repeat. The agent says which it is (an older one does not:
                # then it counts as not safe to repeat).
                live.accepted = True
                live.safe_to_repeat = held.safe_to_repeat is True
                self.dispatcher.durability.after(
                    self.dispatcher.store.mark_accepted(live.job_id, live.attempt, live.safe_to_repeat)
                )
            if held.state == "lost":
                self.dispatcher.attempt_lost(live, f"agent {link.name} restarted while the attempt ran", notify=False)
            else:
                link.running.add(live.job_id)
                # The welcome that continues it confirms it: it follows a durable write (the
                # gateway's ``agent_seen``), and the attempt was committed before this session.
                live.confirm_due = False
        return resume_verdict(live, link.name, held, live.acked_seq if live is not None else 0)

    def handle(self, link: AgentLink, message: Any) -> None:
        """One frame from an agent, in order; raises ``ProtocolError`` to close the session."""
        if link.closed:  # a replaced or dropped session: whatever it still says is stale
            return
        link.last_seen = time.monotonic()
        if isinstance(message, Records):
            self._on_records(link, message)
        elif isinstance(message, Complete):
            self._on_complete(link, message)
        elif isinstance(message, Accept):
            live = current(self.dispatcher.live, link.name, message.job_id, message.attempt)
            if live is not None:
                live.accepted = True
                live.safe_to_repeat = message.safe_to_repeat
                self.dispatcher.durability.after(
                    self.dispatcher.store.mark_accepted(live.job_id, live.attempt, message.safe_to_repeat)
                )
                self.dispatcher.confirm(live)  # a run not safe to repeat waits for it
        elif isinstance(message, Reject):
            self._on_reject(link, message)
        elif isinstance(message, Progress):
            if current(self.dispatcher.live, link.name, message.job_id, message.attempt) is not None:
                self.dispatcher.progress[message.job_id] = {
                    "done": message.done,
                    "total": message.total,
                    "message": message.message,
                }
        elif isinstance(message, Credit):
            link.grant(message.n, self.dispatcher.max_credit)
            self.dispatcher.dispatch(link.cluster)
        elif isinstance(message, Drain):
            link.draining = True
            log.info("agent %s is draining: %s", link.name, message.reason)
        elif isinstance(message, Heartbeat):
            link.count_beat(self.dispatcher.heartbeat_s)
            # One answer waiting is enough: an agent that sends heartbeats without reading
            # the answers must not grow its outbox (the gateway bounds it too).
            if not link.heartbeat_pending:
                link.heartbeat_pending = True
                link.send(Heartbeat())

    def _on_records(self, link: AgentLink, message: Records) -> None:
        live = current(self.dispatcher.live, link.name, message.job_id, message.attempt)
        if live is None:
            link.send(Abandon(job_id=message.job_id, attempt=message.attempt, reason=NOT_CURRENT))
            return
        first = live.acked_seq + 1
        fresh = fresh_records(live.job_id, live.attempt, live.acked_seq, message)
        if not fresh:
            link.send(Ack(job_id=live.job_id, attempt=live.attempt, seq=live.acked_seq))
            return
        live.acked_seq += len(fresh)
        ack = Ack(job_id=live.job_id, attempt=live.attempt, seq=live.acked_seq)
        self.dispatcher.metrics.records_received.inc(len(fresh))
        appended = asyncio.ensure_future(
            self.dispatcher.store.append_records(live.job_id, live.attempt, first, [bytes(r) for r in fresh])
        )
        self.dispatcher.durability.after(appended, lambda: self._acknowledge(link, live.job_id, appended, ack))

    def _on_complete(self, link: AgentLink, message: Complete) -> None:
        ack = CompleteAck(job_id=message.job_id, attempt=message.attempt)
        live = current(self.dispatcher.live, link.name, message.job_id, message.attempt)
        if live is None:
            self.dispatcher.durability.spawn(self._on_stale_complete(link, message))
            return
        check_completion(live.job_id, live.attempt, live.acked_seq, message)
        error = message.error
        if (
            message.status == "failed"
            and error is not None
            and error.retryable
            and self.dispatcher.retry_policy.may_retry(live)
        ):
            self.dispatcher.retry(live, error.code, error.message).add_done_callback(lambda _f: link.send(ack))
            return
        state = final_state(live, message.status)
        sync_state = sync_state_to_keep(live, state, message.sync_state)
        if message.sync_state is not None and sync_state is None:
            log.warning(
                "job %s attempt %d (agent %s) reported state for sync %r, which it was not given: ignored",
                live.job_id,
                live.attempt,
                link.name,
                message.sync_state.name,
            )
        job_id = live.job_id
        self.dispatcher.finish(
            live.job_id,
            live.attempt,
            state,
            error.code if error else None,
            error.message if error else None,
            message.record_count,
            sync_state,
        ).add_done_callback(lambda ended: self._acknowledge(link, job_id, ended, ack))

    def _acknowledge(self, link: AgentLink, job_id: str, write: asyncio.Future[Any], answer: Ack | CompleteAck) -> None:
        """Send ``answer`` for a durable write, unless the store fenced it out (it says False:
        another node holds the attempt now, see ``store.nodes``)."""
        if write.cancelled() or write.exception() is not None:
            return  # the store failed: the process is stopping (fail-stop)
        if write.result() is False:
            self.dispatcher.lost_hold(link, job_id)
        else:
            link.send(answer)

    async def _on_stale_complete(self, link: AgentLink, message: Complete) -> None:
        job = await self.dispatcher.store.get_job(message.job_id)
        if answer_stale_completion(job, link.name, message.attempt) == "complete_ack":
            link.send(CompleteAck(job_id=message.job_id, attempt=message.attempt))  # a re-sent completion
        else:
            link.send(Abandon(job_id=message.job_id, attempt=message.attempt, reason=NOT_CURRENT))

    def _on_reject(self, link: AgentLink, message: Reject) -> None:
        live: Live | None = current(self.dispatcher.live, link.name, message.job_id, message.attempt)
        if live is None:
            return
        live.accepted = False
        if self.dispatcher.retry_policy.may_retry_refused(live, message.error.retryable):
            self.dispatcher.retry(live, message.error.code, message.error.message, delay_s=0.0)
        else:
            self.dispatcher.finish(live.job_id, live.attempt, "failed", message.error.code, message.error.message, 0)
