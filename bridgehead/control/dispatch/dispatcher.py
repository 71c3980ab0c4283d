"""The dispatcher: the pure parts of this package wired to the store and the agents' links.

Hot state lives here, in memory; every transition is written to the store before anyone
is told of it (``durability``). On SQLite one process owns the store and the queues are in
memory (``queues``); on PostgreSQL (a ``NodeStore``) several nodes share it, jobs are claimed
from the database (``bridgehead.control.nodes.claims``), and the nodes hear each other
(``bridgehead.control.nodes.coordinator``): this node holds only the attempts of the agents
connected to it, and every write about one is fenced by the node holding it.

* A job is dispatched as an *attempt* (1, 2, ...) to an agent of its cluster that has
  credit and the plugin (``queues``); the attempt is on record before its offer is sent.
* A running attempt holds a *lease* while its agent's session is alive (``leases``); a
  lapsed lease requeues the job as a new attempt when the policy allows (``attempts``),
  otherwise the job fails with ``agent_lost``.
* Fencing (``fencing``, ``bridgehead.protocol.jobs``): only the current attempt of a running
  job, from the agent that holds it, may add records or complete it.

Frames from agents are handled without awaiting: the in-memory state changes at once, the
store write is issued, and the answer that promises durability is sent from the write's
completion (see ``agent_frames``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from bridgehead.control.dispatch.agent_frames import AgentFrames
from bridgehead.control.dispatch.attempts import Live, RetryPolicy, sync_name
from bridgehead.control.dispatch.durability import Durability
from bridgehead.control.dispatch.leases import TIMEOUT_GRACE_S, Leases
from bridgehead.control.dispatch.links import AgentLink
from bridgehead.control.dispatch.queues import FairQueues
from bridgehead.control.dispatch.waiters import Waiters
from bridgehead.control.metrics import Metrics
from bridgehead.control.nodes.claims import Claims
from bridgehead.control.nodes.coordinator import Coordinator
from bridgehead.control.store.base import JobRow, Store
from bridgehead.control.store.nodes import NodeStore
from bridgehead.protocol import Abandon, Cancel, Confirm, Hello, Offer, ResumeJob, SyncState
from bridgehead.protocol.errors import CLOSE_REPLACED
from bridgehead.protocol.signing import OfferSigner

log = logging.getLogger("bridgehead.control.dispatcher")


class Dispatcher:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        heartbeat_s: float = 5.0,
        restart_grace_s: float = 60.0,
        signer: OfferSigner | None = None,
        max_credit: int = 256,
        retry: RetryPolicy | None = None,
        node_dead_after_s: float = 5.0,
    ) -> None:
        self.store = store
        self.signer = signer
        self.max_credit = max_credit
        self.metrics = metrics
        self.heartbeat_s = heartbeat_s
        self.leases = Leases(heartbeat_s, restart_grace_s)
        self.lease_s = self.leases.lease_s
        self.restart_grace_s = self.leases.grace_after_restart_s
        self.retry_policy = retry or RetryPolicy()
        self.queues = FairQueues()
        # Taken from its queue, its offer waiting for the sync state it starts from: still
        # queued in the store (no attempt on record), so a cancel ends it as a queued job.
        self.pending: dict[str, JobRow] = {}
        self.live: dict[str, Live] = {}
        self.links: dict[str, AgentLink] = {}
        self.progress: dict[str, dict[str, Any]] = {}
        self.waiters = Waiters()
        # Ended here, the end written but not yet durable: its waiters wake once it is.
        self.ending: set[str] = set()
        self.durability = Durability(lambda error: self.fail_stop(error))
        self._monitor: asyncio.Task[None] | None = None
        # Read at scrape time, so the hot path pays nothing for them.
        metrics.jobs_queued.set_function(self._queued)
        metrics.jobs_running.set_function(lambda: len(self.live))
        metrics.agents_connected.set_function(lambda: len(self.links))
        self.links_version = 0  # bumped whenever the set of live links changes
        # Called with (job id, state) once a job's end is durable (the sink runner listens).
        self.on_finished: list[Callable[[str, str], None]] = []
        self.frames = AgentFrames(self)
        # Several nodes on one database: claims from it, and the other nodes' signals.
        self.nodes = store if isinstance(store, NodeStore) else None
        self.claims = Claims(self, self.nodes) if self.nodes is not None else None
        self.coordinator = Coordinator(self, self.nodes, node_dead_after_s) if self.nodes is not None else None

    def _queued(self) -> int:
        """Jobs waiting: this process's queues, or the database's (several nodes, a second old)."""
        return self.coordinator.queued if self.coordinator is not None else len(self.queues)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild queues and leases from the store; running attempts get a fresh lease so
        their agents have time to reconnect after a control-plane restart."""
        if self.nodes is not None and self.coordinator is not None:
            # The queue is the database's; the attempts this node held before it restarted are
            # its own again (another node may have taken some over meanwhile: those stay there).
            self.hold(await self.durability.after_value(self.nodes.take_over_node(self.nodes.node_id)), grace=True)
            await self.coordinator.start()
            self._monitor = asyncio.create_task(self._monitor_loop(), name="lease monitor")
            log.info("dispatcher started as node %s: %d running here", self.nodes.node_id, len(self.live))
            return
        for job in await self.store.jobs_in_state("queued"):
            self.queues.add(job)
        self.hold(await self.store.jobs_in_state("running"), grace=True)
        self._monitor = asyncio.create_task(self._monitor_loop(), name="lease monitor")
        log.info("dispatcher started: %d queued, %d running", len(self.queues), len(self.live))

    def hold(self, jobs: list[JobRow], grace: bool) -> None:
        """Hold the running attempts of ``jobs`` here (as they are on record); ``grace``: the
        agents get the restart grace to come back, else one lease."""
        now = time.monotonic()
        for job in jobs:
            held = self.live.get(job.id)
            if held is not None and held.attempt == job.attempt:
                continue
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
                lease_expires=now + (self.restart_grace_s if grace else self.lease_s),
                sync=sync_name(job.params),
            )

    async def stop(self) -> None:
        if self.coordinator is not None:
            await self.coordinator.stop()
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        for link in list(self.links.values()):
            link.close(1001, "control plane stopping")

    def fail_stop(self, error: BaseException) -> None:
        """Stop at once: nothing more is acknowledged. On SQLite the process exits (70) for its
        supervisor to start again; on PostgreSQL it waits for the database and re-executes
        itself (``control.recovery``). Either way the next start rebuilds state from the store.
        Never returns: it blocks the event loop, which is what stops everything else."""
        from bridgehead.control.recovery import restart_or_exit  # (imported here: the one use)

        log.critical("a store write failed (%s): stopping so that a restart rebuilds state from the store", error)
        restart_or_exit()

    # --- the job API's side ------------------------------------------------------------------

    async def submit(self, job: JobRow) -> tuple[JobRow, bool]:
        if job.idempotency_key is None:
            # Nothing can refuse it: queued now, so with an agent free its first attempt is
            # written in the same commit as the job, and offered once that commit is done.
            written = self.durability.after(self.store.insert_job(job))  # a failure stops the process
            self._queue_new(job)
            await written
            return job, True
        stored, created = await self.store.create_job(job)  # may give an earlier job back
        if created:
            self._queue_new(stored)
        return stored, created

    def _queue_new(self, job: JobRow) -> None:
        self.metrics.jobs_submitted.inc()
        if self.claims is None:
            self.queues.add(job)
        self.dispatch(job.cluster)

    async def cancel(self, job: JobRow) -> JobRow:
        if job.terminal:
            return job
        if self.claims is not None and job.state == "queued":
            # Whichever node ends it first: a claim racing with this cancel either finds it
            # cancelled or moved its attempt on (then this write is fenced out, and the
            # cancel goes to the attempt that runs, below).
            await self.finish(job.id, job.attempt, "cancelled", "cancelled", "cancelled before it ran", 0)
            current = await self.store.get_job(job.id)
            if current is None or current.terminal:
                return current or job
            job = current
        if self.claims is None and (self.queues.remove(job) or self.pending.pop(job.id, None) is not None):
            await self.finish(job.id, job.attempt, "cancelled", "cancelled", "cancelled before it ran", 0)
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
        waiter = self.waiters.register(job_id)
        # The job may have ended since the caller read it (a submission whose offer left at
        # its commit can end before the submitter's own write resolves): with the waiter in
        # place, look again, unless the job is known here to be on its way (then its end,
        # once durable, wakes the waiter). On several nodes another node may end it.
        if self.nodes is not None or not self._in_flight(job_id):
            self.ended_elsewhere(job_id)
        return await self.waiters.until(job_id, waiter, timeout_s)

    def _in_flight(self, job_id: str) -> bool:
        """Queued, offered, running or ending here (its end not durable yet): whatever becomes
        of it, its end will call ``waiters.finished``."""
        return job_id in self.live or job_id in self.queues or job_id in self.pending or job_id in self.ending

    # --- what other nodes say (bridgehead.control.nodes.coordinator) -------------------------

    def ended_elsewhere(self, job_id: str) -> None:
        """Job ``job_id`` may have ended on another node, or before its waiters were in
        place: wake them if the store says it did."""
        if not self.waiters.waiting(job_id):
            return

        async def wake() -> None:
            job = await self.store.get_job(job_id)
            if job is not None and job.terminal:
                self.waiters.finished(job_id, outcome_of(job))

        self.durability.spawn(wake())

    def cancel_asked(self, job_id: str) -> None:
        live = self.live.get(job_id)
        if live is None or live.cancel_requested:
            return
        live.cancel_requested = True
        link = self.links.get(live.agent)
        if link is not None and live.offered:
            link.send(Cancel(job_id=live.job_id, attempt=live.attempt, reason="cancelled via the API"))

    def agent_moved(self, name: str) -> None:
        """The agent opened a session on another node, which holds its attempts now."""
        link = self.links.pop(name, None)
        if link is not None:
            link.closed = True
            link.close(CLOSE_REPLACED, "replaced by a newer session of the same agent on another node")
            self.links_version += 1
        for live in [v for v in self.live.values() if v.agent == name]:
            self.release(live)

    def lost_hold(self, link: AgentLink, job_id: str) -> None:
        """A write about an attempt of ``link``'s agent was fenced out: another node holds it
        now. The session is closed, so the agent reconnects and resumes where it is held."""
        live = self.live.get(job_id)
        if live is not None:
            self.release(live)
        if not link.closed:
            log.warning("job %s moved to another node while agent %s was here: reconnecting it", job_id, link.name)
            link.close(CLOSE_REPLACED, "its attempt is held by another node now; reconnect")
            self.detach(link)

    def claims_clusters(self) -> set[str]:
        return self.claims.clusters() if self.claims is not None else set()

    def claims_dispatch_all(self) -> None:
        if self.claims is not None:
            self.claims.dispatch_all()

    async def prepare_attach(self, name: str) -> None:
        """Before ``attach``: on several nodes, hold here every running attempt of the agent
        (its session is here now), wherever it was held."""
        if self.nodes is not None:
            self.hold(await self.durability.after_value(self.nodes.adopt_agent_attempts(name)), grace=False)

    # --- offers ------------------------------------------------------------------------------

    def dispatch(self, cluster: str) -> None:
        """Offer queued jobs to the cluster's agents with credit, one each in turn."""
        if self.claims is not None:
            self.claims.dispatch(cluster)
            return

        def takers() -> list[AgentLink]:
            return [link for link in self.links.values() if link.cluster == cluster and link.takes_offers]

        for link, job in self.queues.assign(cluster, takers):
            link.credit -= 1
            name = sync_name(job.params)
            if name is None:
                self._offer(link, job, None)
            else:
                self.pending[job.id] = job
                self.durability.spawn(self._offer_sync(link, job, name))

    async def _offer_sync(self, link: AgentLink, job: JobRow, name: str) -> None:
        """A sync job's offer, with the state its run starts from (read at each attempt, so a
        job that waited in the queue starts from the newest state)."""
        state = await self.store.sync_state(name) or SyncState(name=name)
        if self.pending.pop(job.id, None) is None:  # cancelled meanwhile
            link.credit += 1
            self.dispatch(link.cluster)
        elif link.closed:  # the agent left meanwhile: back in line for another
            self.queues.add(job)
            self.dispatch(job.cluster)
        else:
            self._offer(link, job, state)

    def offer_claimed(self, link: AgentLink, job: JobRow) -> None:
        """A job claimed from the database for ``link``'s agent: its attempt is on record."""
        name = sync_name(job.params)
        if name is None:
            self._offer(link, job, None, claimed=True)
            return

        async def with_state() -> None:
            state = await self.store.sync_state(name) or SyncState(name=name)
            self._offer(link, job, state, claimed=True)

        self.durability.spawn(with_state())

    def _offer(self, link: AgentLink, job: JobRow, sync_state: SyncState | None, claimed: bool = False) -> None:
        """Offer ``job`` as its next attempt, or (``claimed``) as the attempt a claim started.

        The attempt is on record before the agent hears of it, so a crash fences it. Where a
        commit comes before its flush (SQLite, power-loss safe), the offer leaves at the commit,
        ``confirm_follows``: the agent journals and accepts it while the flush runs, and a run
        not safe to repeat waits for ``Confirm`` (``confirm``), so a power loss that takes the
        attempt with it leaves nothing run twice. Elsewhere the offer waits for the write."""
        attempt = job.attempt if claimed else job.attempt + 1
        early = link.confirms and not claimed and self.store.commits_before_durable
        offer = Offer(
            job_id=job.id,
            attempt=attempt,
            plugin=job.plugin,
            params=job.params,
            timeout_s=job.timeout_s,
            agent=link.name,
            sync_state=sync_state,
            confirm_follows=early,
        )
        if self.signer is not None:
            offer = self.signer.sign(offer, time.time())
        try:
            encoded = link.encode(offer)  # encodable and within the frame limit, before any state changes
        except Exception as exc:  # noqa: BLE001 - the job cannot be offered anywhere: it fails
            link.credit += 1
            why = f"cannot be sent to an agent: {exc}"  # a claimed attempt is held here: its end is ours to write
            self.finish(job.id, attempt if claimed else job.attempt, "failed", "invalid_job", why, 0)
            return
        now, wall = time.monotonic(), time.time()
        live = self.live[job.id] = Live(
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
            sync=sync_state.name if sync_state is not None else None,
            durable=not early,
            confirm_due=early,
        )
        link.running.add(job.id)

        def send_offer() -> None:
            live.offered = True
            link.send_encoded(encoded)
            if live.cancel_requested:  # cancelled while the offer waited for its commit
                link.send(Cancel(job_id=live.job_id, attempt=live.attempt, reason="cancelled via the API"))

        if claimed:  # the claim recorded it
            if link.closed:  # the agent left while the claim was in flight
                self.attempt_lost(live, f"agent {link.name} left before its offer was sent", notify=False)
            else:
                send_offer()
            return
        written = self.store.start_attempt(job.id, attempt, link.name, wall)
        if not early:
            self.durability.after(written, send_offer)
            return

        def durable() -> None:
            live.durable = True
            self.confirm(live)

        self.store.when_committed(send_offer)
        self.durability.after(written, durable)

    def confirm(self, live: Live) -> None:
        """Tell the agent that an attempt offered at its commit is durable, once it is and the
        agent has accepted it as not safe to repeat (a run safe to repeat never waits)."""
        if not (live.confirm_due and live.durable and live.accepted) or live.safe_to_repeat:
            return
        link = self.links.get(live.agent)
        if self.live.get(live.job_id) is not live or link is None or link.closed:
            return  # ended, or its agent left: a welcome that continues it confirms it
        live.confirm_due = False
        link.send(Confirm(job_id=live.job_id, attempt=live.attempt))

    # --- the gateway's side (see agent_frames) -----------------------------------------------

    def attach(self, link: AgentLink, hello: Hello) -> list[ResumeJob]:
        """A session is being opened: settle every attempt the agent holds or should hold."""
        return self.frames.attach(link, hello)

    def activate(self, link: AgentLink) -> None:
        """The welcome is sent: the link takes part in dispatch from now on."""
        if link.closed:
            return
        # The agent's heartbeat timer starts when it reads the welcome, so its silence is
        # counted from here: the welcome waits on a store write, seconds under a reconnect
        # storm (bench/many_agents.py), which must not eat into its lease.
        link.last_seen = time.monotonic()
        self.links[link.name] = link
        self.links_version += 1
        self.dispatch(link.cluster)

    def detach(self, link: AgentLink) -> None:
        link.closed = True
        if self.links.get(link.name) is link:
            del self.links[link.name]
            if self.nodes is not None and not link.replaced:  # its session here ended
                self.durability.after(self.nodes.agent_left(link.name))
            for live in self.live.values():
                if live.agent == link.name:
                    live.lease_expires = self.leases.lapse_after(link)
        self.links_version += 1

    def disconnect(self, name: str, reason: str) -> None:
        """End the agent's session now (revoked); its attempts' leases run out as for a lost agent."""
        link = self.links.get(name)
        if link is not None:
            log.warning("disconnecting agent %s: %s", name, reason)
            link.close(4003, reason)
            self.detach(link)

    def handle(self, link: AgentLink, message: Any) -> None:
        """One frame from an agent, in order; raises ``ProtocolError`` to close the session."""
        self.frames.handle(link, message)

    # --- ends of attempts ----------------------------------------------------------------------

    def retry(self, live: Live, code: str, message: str, delay_s: float | None = None) -> asyncio.Future[Any]:
        self.release(live)
        delay = self.retry_policy.delay_s(live.attempt) if delay_s is None else delay_s
        log.info("job %s attempt %d: %s (%s); retrying in %.1f s", live.job_id, live.attempt, code, message, delay)

        async def requeue() -> None:
            if delay:
                await asyncio.sleep(delay)
            if self.claims is not None:
                self.dispatch(live.cluster)
                return
            current = await self.store.get_job(live.job_id)
            if current is not None and current.state == "queued" and current.id not in self.queues:
                self.queues.add(current)
                self.dispatch(current.cluster)

        # On several nodes the backoff is on record too, so no other node claims it earlier.
        not_before = time.time() + delay if self.claims is not None and delay else None
        return self.durability.after(
            self.store.requeue_job(live.job_id, code, message, not_before), lambda: self.durability.spawn(requeue())
        )

    def attempt_lost(self, live: Live, why: str, notify: bool = True) -> None:
        self.metrics.attempts_lost.inc()
        link = self.links.get(live.agent)
        if link is not None and notify:
            link.send(Abandon(job_id=live.job_id, attempt=live.attempt, reason=why))
        verdict = self.retry_policy.when_lost(live)
        if verdict == "cancelled":
            self.finish(live.job_id, live.attempt, "cancelled", "cancelled", f"cancelled; {why}", live.acked_seq)
        elif verdict == "retry":
            self.retry(live, "agent_lost", why, delay_s=0.0)
        else:
            reason = self.retry_policy.why_not(live)
            self.finish(
                live.job_id, live.attempt, "failed", "agent_lost", f"{why}; not retried: {reason}", live.acked_seq
            )

    def release(self, live: Live) -> None:
        self.live.pop(live.job_id, None)
        self.progress.pop(live.job_id, None)
        link = self.links.get(live.agent)
        if link is not None:
            link.running.discard(live.job_id)

    def finish(
        self,
        job_id: str,
        attempt: int,
        state: str,
        code: str | None,
        message: str | None,
        record_count: int,
        sync_state: SyncState | None = None,
    ) -> asyncio.Future[Any]:
        live = self.live.get(job_id)
        if live is not None:
            self.release(live)
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
            self.ending.discard(job_id)
            if ended.result() is False:  # fenced out: another node holds this attempt now
                return
            self.metrics.jobs_finished.labels(state).inc()
            if started is not None:
                self.metrics.job_duration.observe(time.monotonic() - started)
            self.waiters.finished(job_id, outcome)
            for listener in self.on_finished:
                listener(job_id, state)

        self.ending.add(job_id)  # until its end is durable (a failed write stops the process)
        ended = asyncio.ensure_future(
            self.store.finish_job(job_id, attempt, state, code, message, record_count, now, sync_state)
        )
        return self.durability.after(ended, finished)

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
            if self.leases.silent(link, now):
                log.warning("agent %s silent for %.1f s: dropping its session", link.name, now - link.last_seen)
                link.close(4005, f"no heartbeat for {now - link.last_seen:.1f} s")
                self.detach(link)
        for live in list(self.live.values()):
            holder = self.links.get(live.agent)
            verdict = self.leases.check(live, holder, now)
            if verdict == "lost":
                self.attempt_lost(live, f"agent {live.agent} lost (lease lapsed)")
            elif verdict == "timed_out":
                if holder is not None:
                    holder.send(Abandon(job_id=live.job_id, attempt=live.attempt, reason="timed out"))
                self.finish(
                    live.job_id,
                    live.attempt,
                    "failed",
                    "timeout",
                    f"no result {live.timeout_s:g} s (+{TIMEOUT_GRACE_S:g} s grace) after the attempt started",
                    live.acked_seq,
                )


def outcome_of(job: JobRow) -> dict[str, Any]:
    """The fields a job's end changed, as a waiter is given them (``Dispatcher.finish``)."""
    return {
        "state": job.state,
        "attempt": job.attempt,
        "error_code": job.error_code,
        "error_message": job.error_message,
        "record_count": job.record_count,
        "finished_at": job.finished_at,
        "agent": job.agent,
        "started_at": job.started_at,
        "acked_seq": job.acked_seq,
    }
