"""The dispatcher: queues, credit, attempts, leases, fencing, retries, cancel and timeouts.

Hot state lives here, in memory; every transition is written to the store before anyone
is told of it. One control-plane process owns its store (the PostgreSQL backend moves the
claim into the database for several nodes).

* A job is dispatched as an *attempt* (1, 2, ...) to an agent of its cluster that has
  credit and the plugin; agents get offers in turn, so the load spreads.
* A running attempt holds a *lease* for as long as its agent's session is alive: any frame
  from the agent renews all of its leases. An agent silent for two heartbeat intervals
  (``lease_s``) is dropped, and its leases lapse ``lease_s`` after it was last heard from.
  After a control-plane restart, running attempts get ``restart_grace_s`` for their agents
  to reconnect (their reconnect backoff may be longer than one lease).
* A lapsed lease requeues the job as a new attempt when the attempt had not started, or
  the plugin said it is safe to repeat and attempts remain; otherwise the job fails with
  ``agent_lost``.
* Fencing: only the current attempt of a running job, from the agent that holds it, may add
  records or complete it; anything else is answered with ``abandon``. The records of earlier
  attempts are dropped when a new one starts, so the visible records are the final attempt's.

Frames from agents are handled without awaiting: the in-memory state changes at once, the
store write is issued (writes apply in issue order), and the answer that promises durability
(``ack``, ``complete_ack``, an ``offer`` whose attempt is recorded) is sent from the write's
completion. So one agent's frames keep flowing while earlier writes commit together. If a
write fails, memory and store may disagree, so the process stops (``fail_stop``) and a
restart rebuilds everything from the store, which is the source of truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bridgehead.control.metrics import Metrics
from bridgehead.control.store.base import JobRow, Store
from bridgehead.protocol import (
    Abandon,
    Accept,
    Ack,
    Cancel,
    Complete,
    CompleteAck,
    Credit,
    Drain,
    Heartbeat,
    HeldJob,
    Hello,
    Offer,
    Progress,
    ProtocolError,
    Records,
    Reject,
    ResumeJob,
    ServerMessage,
    SyncState,
)
from bridgehead.protocol.errors import CLOSE_POLICY_VIOLATION
from bridgehead.protocol.signing import OfferSigner

log = logging.getLogger("bridgehead.control.dispatcher")

# The agent enforces a job's timeout itself; the control plane steps in only if the agent
# has not reported this long after it, so a slow plugin cleanup is not cut short.
TIMEOUT_GRACE_S = 30.0
RETRY_DELAY_MAX_S = 30.0
# An agent sends one heartbeat an interval; more than this many in one is a flood (dropped).
MAX_BEATS_PER_INTERVAL = 50


class Flooding(ProtocolError):
    close_code = CLOSE_POLICY_VIOLATION


@dataclass
class Live:
    """A running attempt."""

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
    accepted: bool = False
    safe_to_repeat: bool = False
    cancel_requested: bool = False
    acked_seq: int = 0
    lease_expires: float = 0.0  # monotonic; refreshed while the agent's session is alive
    sync: str | None = None  # the sync whose state this attempt may replace (its params name it)


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
    version: str = ""
    running: set[str] = field(default_factory=set)
    heartbeat_pending: bool = False  # an answer to a heartbeat is queued, not yet written
    beats: int = 0  # heartbeats received since ``beats_since`` (monotonic)
    beats_since: float = 0.0


class Dispatcher:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        heartbeat_s: float = 5.0,
        restart_grace_s: float = 60.0,
        signer: OfferSigner | None = None,
        max_credit: int = 256,
    ) -> None:
        self.store = store
        self.signer = signer
        self.max_credit = max_credit
        self.metrics = metrics
        self.heartbeat_s = heartbeat_s
        self.lease_s = 2 * heartbeat_s
        self.restart_grace_s = max(restart_grace_s, self.lease_s)
        # cluster -> plugin -> queued (queue_seq, job_id), oldest first
        self.queues: dict[str, dict[str, deque[tuple[int, str]]]] = {}
        self.queued: dict[str, JobRow] = {}  # job id -> row, for every job in a queue
        self.live: dict[str, Live] = {}
        self.links: dict[str, AgentLink] = {}
        self.progress: dict[str, dict[str, Any]] = {}
        self._waiters: dict[str, set[asyncio.Future[dict[str, Any]]]] = {}
        self._monitor: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._rr: dict[str, int] = {}
        # Read at scrape time, so the hot path pays nothing for them.
        metrics.jobs_queued.set_function(lambda: len(self.queued))
        metrics.jobs_running.set_function(lambda: len(self.live))
        metrics.agents_connected.set_function(lambda: len(self.links))
        self.links_version = 0  # bumped whenever the set of live links changes
        # Called with (job id, state) once a job's end is durable (the sink runner listens).
        self.on_finished: list[Callable[[str, str], None]] = []

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild queues and leases from the store; running attempts get a fresh lease so
        their agents have time to reconnect after a control-plane restart."""
        for job in await self.store.jobs_in_state("queued"):
            self._enqueue(job)
        now = time.monotonic()
        for job in await self.store.jobs_in_state("running"):
            self.live[job.id] = Live(
                job_id=job.id,
                cluster=job.cluster,
                plugin=job.plugin,
                attempt=job.attempt,
                agent=job.agent or "",
                max_attempts=job.max_attempts,
                timeout_s=job.timeout_s,
                started=now - (time.time() - (job.started_at or time.time())),
                started_at=job.started_at or time.time(),
                accepted=job.accepted,
                safe_to_repeat=job.safe_to_repeat,
                cancel_requested=job.cancel_requested,
                acked_seq=job.acked_seq,
                offered=True,
                lease_expires=now + self.restart_grace_s,
                sync=sync_name(job.params),
            )
        self._monitor = asyncio.create_task(self._monitor_loop(), name="lease monitor")
        log.info("dispatcher started: %d queued, %d running", len(self.queued), len(self.live))

    async def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        for link in list(self.links.values()):
            link.close(1001, "control plane stopping")

    def _durable(self, write: Awaitable[Any], then: Callable[[], None] | None = None) -> asyncio.Future[None]:
        """Run ``then`` once ``write`` is durable; the returned future resolves after it."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_write(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                done.cancel()
                return
            error = future.exception()
            if error is not None:
                self.fail_stop(error)
                done.set_exception(error)
                return
            try:
                if then is not None:
                    then()
            finally:
                done.set_result(None)

        asyncio.ensure_future(write).add_done_callback(on_write)
        return done

    def fail_stop(self, error: BaseException) -> None:
        log.critical("a store write failed (%s): stopping so that a restart rebuilds state from the store", error)
        logging.shutdown()
        os._exit(70)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_task_failure)

    # --- the job API's side ------------------------------------------------------------------

    async def submit(self, job: JobRow) -> tuple[JobRow, bool]:
        if job.idempotency_key is None:
            # Nothing can refuse it: queued now, so with an agent free its first attempt is
            # written in the same commit as the job, and offered once that commit is done.
            written = self._durable(self.store.insert_job(job))  # a failure stops the process
            self._queue_new(job)
            await written
            return job, True
        stored, created = await self.store.create_job(job)  # may give an earlier job back
        if created:
            self._queue_new(stored)
        return stored, created

    def _queue_new(self, job: JobRow) -> None:
        self.metrics.jobs_submitted.inc()
        self._enqueue(job)
        self.dispatch(job.cluster)

    async def cancel(self, job: JobRow) -> JobRow:
        if job.terminal:
            return job
        if job.id in self.queued:
            self._dequeue(job)
            await self._finish(job.id, job.attempt, "cancelled", "cancelled", "cancelled before it ran", 0)
        else:
            await self.store.request_cancel(job.id)
            live = self.live.get(job.id)
            if live is not None:
                live.cancel_requested = True
                link = self.links.get(live.agent)
                # Not yet offered: the cancel follows the offer (a cancel first would be ignored).
                if link is not None and live.offered:
                    link.send(Cancel(job_id=live.job_id, attempt=live.attempt, reason="cancelled via the API"))
        return await self.store.get_job(job.id) or job

    async def wait(self, job_id: str, timeout_s: float) -> dict[str, Any] | None:
        """Wait until the job ends (return the fields its end changed, as stored) or
        ``timeout_s`` passes (return None)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, set()).add(future)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[job_id]

    # --- queues ------------------------------------------------------------------------------

    def _enqueue(self, job: JobRow) -> None:
        queue = self.queues.setdefault(job.cluster, {}).setdefault(job.plugin, deque())
        entry = (job.queue_seq, job.id)
        if queue and queue[-1][0] > job.queue_seq:  # a retry: keep its original place in line
            items = sorted([*queue, entry])
            queue.clear()
            queue.extend(items)
        else:
            queue.append(entry)
        self.queued[job.id] = job

    def _dequeue(self, job: JobRow) -> None:
        queue = self.queues.get(job.cluster, {}).get(job.plugin)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove((job.queue_seq, job.id))
        self.queued.pop(job.id, None)

    def _next_for(self, link: AgentLink) -> deque[tuple[int, str]] | None:
        """The queue holding the oldest job of the link's cluster that the link can run."""
        best: deque[tuple[int, str]] | None = None
        for plugin, queue in self.queues.get(link.cluster, {}).items():
            if queue and plugin in link.plugins and (best is None or queue[0][0] < best[0][0]):
                best = queue
        return best

    def dispatch(self, cluster: str) -> None:
        """Offer queued jobs to the cluster's agents with credit, one each in turn."""
        if not self.queues.get(cluster):
            return
        while True:
            links = [
                link
                for link in self.links.values()
                if link.cluster == cluster and link.credit > 0 and not link.draining and not link.closed
            ]
            if not links:
                return
            start = self._rr.get(cluster, 0) % len(links)
            self._rr[cluster] = start + 1
            progressed = False
            for link in links[start:] + links[:start]:
                queue = self._next_for(link)
                if queue is None:
                    continue
                _seq, job_id = queue.popleft()
                link.credit -= 1
                self._offer(link, self.queued.pop(job_id))
                progressed = True
            if not progressed:
                return

    def _offer(self, link: AgentLink, job: JobRow) -> None:
        attempt = job.attempt + 1
        offer = Offer(
            job_id=job.id,
            attempt=attempt,
            plugin=job.plugin,
            params=self._with_sync_state(job),
            timeout_s=job.timeout_s,
            agent=link.name,
        )
        if self.signer is not None:
            offer = self.signer.sign(offer, time.time())
        try:
            encoded = link.encode(offer)  # encodable and within the frame limit, before any state changes
        except Exception as exc:  # noqa: BLE001 - the job cannot be offered anywhere: it fails
            link.credit += 1
            self._finish(job.id, job.attempt, "failed", "invalid_job", f"cannot be sent to an agent: {exc}", 0)
            return
        now, wall = time.monotonic(), time.time()
        self.live[job.id] = Live(
            job_id=job.id,
            cluster=job.cluster,
            plugin=job.plugin,
            attempt=attempt,
            agent=link.name,
            max_attempts=job.max_attempts,
            timeout_s=job.timeout_s,
            started=now,
            started_at=wall,
            cancel_requested=job.cancel_requested,
            lease_expires=now + self.lease_s,
            sync=sync_name(job.params),
        )
        link.running.add(job.id)
        live = self.live[job.id]

        def send_offer() -> None:
            live.offered = True
            link.send_encoded(encoded)
            if live.cancel_requested:  # cancelled while the offer waited for its commit
                link.send(Cancel(job_id=live.job_id, attempt=live.attempt, reason="cancelled via the API"))

        # The attempt is on record before the agent hears of it, so a crash here fences it.
        self._durable(self.store.start_attempt(job.id, attempt, link.name, wall), send_offer)

    def _with_sync_state(self, job: JobRow) -> dict[str, Any]:
        """A sync job's params, with the state its run starts from (read at each attempt, so
        a job that waited in the queue starts from the newest state)."""
        params = job.params
        name = sync_name(params)
        if name is None:
            return params
        state = self.store.sync_state(name) or SyncState(name=name)
        return {**params, "sync_state": msgspec.to_builtins(state)}

    # --- the gateway's side --------------------------------------------------------------------

    def attach(self, link: AgentLink, hello: Hello) -> list[ResumeJob]:
        """A session is being opened: settle every attempt the agent holds or should hold.

        The verdicts travel in the welcome; the link takes offers only once ``activate``d,
        after the welcome is on its way, since nothing but the welcome may precede it.
        """
        old = self.links.get(link.name)
        if old is not None:
            old.close(4004, "replaced by a newer session of the same agent")
            self.detach(old)
        verdicts = [self._verdict(link, held) for held in hello.jobs]
        held_keys = {(h.job_id, h.attempt) for h in hello.jobs}
        for live in [v for v in self.live.values() if v.agent == link.name]:
            if (live.job_id, live.attempt) not in held_keys:
                # Offered but never journaled there (lost in flight), or the agent lost its journal.
                self._attempt_lost(live, f"agent {link.name} reconnected without it", notify=False)
        return verdicts

    def activate(self, link: AgentLink) -> None:
        """The welcome is sent: the link takes part in dispatch from now on."""
        if link.closed:
            return
        self.links[link.name] = link
        self.links_version += 1
        self.dispatch(link.cluster)

    def _verdict(self, link: AgentLink, held: HeldJob) -> ResumeJob:
        live = self.live.get(held.job_id)
        if live is None or live.attempt != held.attempt or live.agent != link.name:
            return ResumeJob(job_id=held.job_id, attempt=held.attempt, action="abandon")
        if held.state == "lost":
            self._attempt_lost(live, f"agent {link.name} restarted while the attempt ran", notify=False)
            return ResumeJob(job_id=held.job_id, attempt=held.attempt, action="abandon")
        link.running.add(live.job_id)
        return ResumeJob(job_id=held.job_id, attempt=held.attempt, action="continue", acked_seq=live.acked_seq)

    def detach(self, link: AgentLink) -> None:
        link.closed = True
        if self.links.get(link.name) is link:
            del self.links[link.name]
            for live in self.live.values():
                if live.agent == link.name:
                    live.lease_expires = link.last_seen + self.lease_s
        self.links_version += 1

    def disconnect(self, name: str, reason: str) -> None:
        """End the agent's session now (revoked); its attempts' leases run out as for a lost agent."""
        link = self.links.get(name)
        if link is not None:
            log.warning("disconnecting agent %s: %s", name, reason)
            link.close(4003, reason)
            self.detach(link)

    def _current(self, link: AgentLink, job_id: str, attempt: int) -> Live | None:
        live = self.live.get(job_id)
        if live is None or live.attempt != attempt or live.agent != link.name:
            return None
        return live

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
            live = self._current(link, message.job_id, message.attempt)
            if live is not None:
                live.accepted = True
                live.safe_to_repeat = message.safe_to_repeat
                self._durable(self.store.mark_accepted(live.job_id, live.attempt, message.safe_to_repeat))
        elif isinstance(message, Reject):
            self._on_reject(link, message)
        elif isinstance(message, Progress):
            if self._current(link, message.job_id, message.attempt) is not None:
                self.progress[message.job_id] = {
                    "done": message.done,
                    "total": message.total,
                    "message": message.message,
                }
        elif isinstance(message, Credit):
            # Capped: an agent asking for more than its share cannot hoard its cluster's queue.
            link.credit = min(link.credit + message.n, max(0, self.max_credit - len(link.running)))
            self.dispatch(link.cluster)
        elif isinstance(message, Drain):
            link.draining = True
            log.info("agent %s is draining: %s", link.name, message.reason)
        elif isinstance(message, Heartbeat):
            # An agent beats once an interval; dozens in one interval is a flood, not liveness.
            if link.last_seen - link.beats_since > self.heartbeat_s:
                link.beats_since, link.beats = link.last_seen, 0
            link.beats += 1
            if link.beats > MAX_BEATS_PER_INTERVAL:
                raise Flooding("heartbeat_flood", f"over {MAX_BEATS_PER_INTERVAL} heartbeats in {self.heartbeat_s:g} s")
            # One answer waiting is enough: an agent that sends heartbeats without reading
            # the answers must not grow its outbox (the gateway bounds it too).
            if not link.heartbeat_pending:
                link.heartbeat_pending = True
                link.send(Heartbeat())

    def _on_records(self, link: AgentLink, message: Records) -> None:
        live = self._current(link, message.job_id, message.attempt)
        if live is None:
            link.send(Abandon(job_id=message.job_id, attempt=message.attempt, reason="not the current attempt"))
            return
        expected = live.acked_seq + 1
        if message.seq > expected:
            raise ProtocolError(
                "record_gap", f"job {live.job_id} attempt {live.attempt}: got seq {message.seq}, expected {expected}"
            )
        fresh = message.records[expected - message.seq :]
        if not fresh:
            link.send(Ack(job_id=live.job_id, attempt=live.attempt, seq=live.acked_seq))
            return
        live.acked_seq += len(fresh)
        ack = Ack(job_id=live.job_id, attempt=live.attempt, seq=live.acked_seq)
        self.metrics.records_received.inc(len(fresh))
        self._durable(
            self.store.append_records(live.job_id, live.attempt, expected, [bytes(r) for r in fresh]),
            lambda: link.send(ack),
        )

    def _on_complete(self, link: AgentLink, message: Complete) -> None:
        ack = CompleteAck(job_id=message.job_id, attempt=message.attempt)
        live = self._current(link, message.job_id, message.attempt)
        if live is None:
            self._spawn(self._on_stale_complete(link, message))
            return
        if message.record_count != live.acked_seq:
            raise ProtocolError(
                "record_gap",
                f"job {live.job_id} attempt {live.attempt} completed with {message.record_count} records, "
                f"{live.acked_seq} received",
            )
        error = message.error
        if message.status == "failed" and error is not None and error.retryable and self._may_retry(live):
            self._retry(live, error.code, error.message).add_done_callback(lambda _f: link.send(ack))
            return
        state = message.status
        if live.cancel_requested and state == "failed":
            state = "cancelled"
        sync_state = message.sync_state
        if sync_state is not None and (state != "succeeded" or sync_state.name != live.sync):
            # Only a succeeded run of that very sync may leave its state; whatever else an
            # agent claims is dropped (and said, since it is a bug or an attack).
            log.warning(
                "job %s attempt %d (agent %s) reported state for sync %r, which it was not given: ignored",
                live.job_id,
                live.attempt,
                link.name,
                sync_state.name,
            )
            sync_state = None
        self._finish(
            live.job_id,
            live.attempt,
            state,
            error.code if error else None,
            error.message if error else None,
            message.record_count,
            sync_state,
        ).add_done_callback(lambda _f: link.send(ack))

    async def _on_stale_complete(self, link: AgentLink, message: Complete) -> None:
        job = await self.store.get_job(message.job_id)
        if job is not None and job.attempt == message.attempt and job.terminal and job.agent == link.name:
            link.send(CompleteAck(job_id=message.job_id, attempt=message.attempt))  # a re-sent completion
        else:
            link.send(Abandon(job_id=message.job_id, attempt=message.attempt, reason="not the current attempt"))

    def _on_reject(self, link: AgentLink, message: Reject) -> None:
        live = self._current(link, message.job_id, message.attempt)
        if live is None:
            return
        # A refused offer never ran, so it may always go elsewhere while attempts remain.
        live.accepted = False
        if message.error.retryable and live.attempt < live.max_attempts and not live.cancel_requested:
            self._retry(live, message.error.code, message.error.message, delay_s=0.0)
        else:
            self._finish(live.job_id, live.attempt, "failed", message.error.code, message.error.message, 0)

    def _may_retry(self, live: Live) -> bool:
        return (
            live.attempt < live.max_attempts
            and not live.cancel_requested
            and (live.safe_to_repeat or not live.accepted)
        )

    def _retry(self, live: Live, code: str, message: str, delay_s: float | None = None) -> asyncio.Future[None]:
        self._release(live)
        delay = min(RETRY_DELAY_MAX_S, 0.5 * 2 ** (live.attempt - 1)) if delay_s is None else delay_s
        log.info("job %s attempt %d: %s (%s); retrying in %.1f s", live.job_id, live.attempt, code, message, delay)

        async def requeue() -> None:
            if delay:
                await asyncio.sleep(delay)
            current = await self.store.get_job(live.job_id)
            if current is not None and current.state == "queued" and current.id not in self.queued:
                self._enqueue(current)
                self.dispatch(current.cluster)

        return self._durable(self.store.requeue_job(live.job_id, code, message), lambda: self._spawn(requeue()))

    def _attempt_lost(self, live: Live, why: str, notify: bool = True) -> None:
        self.metrics.attempts_lost.inc()
        link = self.links.get(live.agent)
        if link is not None and notify:
            link.send(Abandon(job_id=live.job_id, attempt=live.attempt, reason=why))
        if live.cancel_requested:
            self._finish(live.job_id, live.attempt, "cancelled", "cancelled", f"cancelled; {why}", live.acked_seq)
        elif self._may_retry(live):
            self._retry(live, "agent_lost", why, delay_s=0.0)
        else:
            reason = "no attempts left" if live.attempt >= live.max_attempts else "the plugin is not safe to repeat"
            self._finish(
                live.job_id, live.attempt, "failed", "agent_lost", f"{why}; not retried: {reason}", live.acked_seq
            )

    def _release(self, live: Live) -> None:
        self.live.pop(live.job_id, None)
        self.progress.pop(live.job_id, None)
        link = self.links.get(live.agent)
        if link is not None:
            link.running.discard(live.job_id)

    def _finish(
        self,
        job_id: str,
        attempt: int,
        state: str,
        code: str | None,
        message: str | None,
        record_count: int,
        sync_state: SyncState | None = None,
    ) -> asyncio.Future[None]:
        live = self.live.get(job_id)
        if live is not None:
            self._release(live)
        started = live.started if live is not None else None
        now = time.time()
        outcome = {
            "state": state,
            "attempt": attempt,
            "error_code": code,
            "error_message": message,
            "record_count": record_count,
            "finished_at": now,
        }
        if live is not None:
            outcome |= {"agent": live.agent, "started_at": live.started_at, "acked_seq": live.acked_seq}

        def finished() -> None:
            self.metrics.jobs_finished.labels(state).inc()
            if started is not None:
                self.metrics.job_duration.observe(time.monotonic() - started)
            for future in self._waiters.pop(job_id, ()):
                if not future.done():
                    future.set_result(outcome)
            for listener in self.on_finished:
                listener(job_id, state)

        return self._durable(
            self.store.finish_job(job_id, attempt, state, code, message, record_count, now, sync_state), finished
        )

    # --- leases, silence and timeouts -------------------------------------------------------------

    async def _monitor_loop(self) -> None:
        interval = min(0.25, self.heartbeat_s / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                self.check_leases(time.monotonic())
            except Exception:  # noqa: BLE001 - the monitor must outlive any one bad job
                log.exception("lease check failed")

    def check_leases(self, now: float) -> None:
        for link in list(self.links.values()):
            if now - link.last_seen > self.lease_s:
                log.warning("agent %s silent for %.1f s: dropping its session", link.name, now - link.last_seen)
                link.close(4005, f"no heartbeat for {now - link.last_seen:.1f} s")
                self.detach(link)
        for live in list(self.live.values()):
            holder = self.links.get(live.agent)
            if holder is not None and not holder.closed:
                live.lease_expires = holder.last_seen + self.lease_s
            if now > live.lease_expires:
                self._attempt_lost(live, f"agent {live.agent} lost (lease lapsed)")
            elif now > live.started + live.timeout_s + TIMEOUT_GRACE_S:
                if holder is not None:
                    holder.send(Abandon(job_id=live.job_id, attempt=live.attempt, reason="timed out"))
                self._finish(
                    live.job_id,
                    live.attempt,
                    "failed",
                    "timeout",
                    f"no result {live.timeout_s:g} s (+{TIMEOUT_GRACE_S:g} s grace) after the attempt started",
                    live.acked_seq,
                )


def sync_name(params: dict[str, Any]) -> str | None:
    """The sync a job's params name (LDAP sync mode), whose state its run starts from."""
    name = params.get("sync") if params.get("mode") == "sync" else None
    return name if isinstance(name, str) else None


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task failed", exc_info=task.exception())
