"""The running agent: one outbound websocket, kept up, pumping the protocol.

``AgentService.run`` dials the control URLs in turn with jittered backoff; each connection
is one protocol session (challenge, hello, welcome, then open) served by three tasks: a
reader (offers, acks, cancels), a writer (accepts, credit, records, completions, in that
order on every pass, so a job's records always precede its completion) and a heartbeat.
Jobs keep running while the connection is down; their output waits in the window and spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import logging
import ssl
import time
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect

from bridgehead import __version__
from bridgehead.agent import offers
from bridgehead.agent.backoff import backoff
from bridgehead.agent.config import AgentConfig
from bridgehead.agent.credentials import Credentials
from bridgehead.agent.dialing import SessionEnded, describe, expect, websocket_url
from bridgehead.agent.identity import Identity
from bridgehead.agent.journal import Journal
from bridgehead.agent.outbox import FRAME_OVERHEAD, Lane, take_pass
from bridgehead.agent.plugin_loader import AnyPlugin, params_schema
from bridgehead.agent.runner import Attempt, Key, Runner
from bridgehead.agent.stream import SpoolBudget
from bridgehead.agent.tls import client_context, proxy_for
from bridgehead.agent.updater import Updater
from bridgehead.core.crash_points import crash_point
from bridgehead.core.errors import ConfigError
from bridgehead.core.files import make_private_tree
from bridgehead.core.sdnotify import Notifier, keep_watchdog
from bridgehead.protocol import (
    FEATURE_CONFIRM,
    SUBPROTOCOL,
    Abandon,
    Ack,
    AgentMessage,
    AgentSession,
    Cancel,
    Certificate,
    Challenge,
    Complete,
    CompleteAck,
    Confirm,
    Credit,
    Drain,
    Error,
    ErrorInfo,
    Heartbeat,
    HeldJob,
    Hello,
    JobRef,
    Offer,
    PluginInfo,
    ProtocolError,
    Reject,
    ReleaseChunk,
    UpdateOffer,
    Welcome,
    pack,
)
from bridgehead.protocol.jobs import resume_from
from bridgehead.protocol.signing import OfferVerifier
from bridgehead.sdk import Profile

# Loop turns the writer lets pass before a pass that may flush (see ``_writer``): one turn lets
# a job that ends at once (a no-op, a cached answer) end in the pass that would carry its
# accept, and a run safe to repeat that ends there needs no accept and no flush at all
# (``outbox``). Measured on bench/dispatch.py (2026-12-06, with completions still flushed):
# 0 and 3 turns gave 0.70-0.87x against 0.92-0.93x for one.
WRITER_YIELDS = 1
log = logging.getLogger("bridgehead.agent")
# What the sender sends, in order: a lane of frames, or the error of a flush (it stops).
Outgoing = asyncio.Queue[Lane | BaseException]


class AgentService:
    def __init__(
        self,
        config: AgentConfig,
        identity: Identity,
        plugins: dict[str, AnyPlugin],
        profiles: dict[str, Profile],
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.plugins = plugins
        self.limits = config.limits
        make_private_tree(Path(config.agent.data_dir))
        self.journal = Journal(Path(config.agent.data_dir) / "journal.db", durable=config.agent.synchronous == "full")
        self.budget = SpoolBudget(self.limits.spool_max_bytes, self.journal.spool_bytes())
        self.runner = Runner(config, plugins, profiles, self.journal, self.budget, self._wake, self._slot_freed)
        self.lost: dict[Key, bool | None] = {}  # attempt -> safe to repeat (None: not known)
        self.draining = False
        self.connected = False
        self._wakeup = asyncio.Event()
        self._control: deque[AgentMessage] = deque()
        self._stop = asyncio.Event()
        self._plugin_infos = [
            PluginInfo(name=p.name, version=p.version, params_schema=params_schema(p)) for p in plugins.values()
        ]
        self.verifier = OfferVerifier(identity.trusted_signing_keys(), identity.agent, config.control.max_clock_skew_s)
        self.credentials = Credentials(identity, self.verifier)
        self.updater = Updater(config, identity, self._send, self.stop)
        # systemd (Type=notify): READY once first connected, STATUS, WATCHDOG while healthy().
        self.notifier = notifier or Notifier(None)
        self._ready = False
        self._failed_attempts = 0  # since the last successful connection
        self._progress_at = time.monotonic()  # last sign of the connection loop moving on
        self._heartbeat_s = 0.0
        self._loops: list[asyncio.Task[None]] = []
        self._restore()

    # --- state carried over a restart ----------------------------------------------------

    def _restore(self) -> None:
        for job in self.journal.jobs():
            key = (job.job_id, job.attempt)
            if job.state == "done" and job.status is not None:
                stream = self.runner.new_stream(job.job_id, job.attempt, next_seq=job.next_seq)
                stream.completion = Complete(
                    job_id=job.job_id,
                    attempt=job.attempt,
                    status=job.status,
                    record_count=job.next_seq - 1,
                    error=job.error,
                    sync_state=job.sync_state,
                )
                safe = bool(job.safe_to_repeat)
                self.runner.attempts[key] = Attempt(job.job_id, job.attempt, job.plugin, stream, safe_to_repeat=safe)
                log.info("job %s attempt %d finished before a restart; its output will be re-sent", *key)
            else:
                # It was running when the agent died: its unsent output is gone, so it must not
                # resume. The control plane runs it again (if safe) as a new attempt.
                self.lost[key] = job.safe_to_repeat
                log.warning("job %s attempt %d was interrupted by a restart; reporting it lost", *key)

    def held_jobs(self) -> list[HeldJob]:
        held = [
            HeldJob(
                job_id=a.offer_job_id,
                attempt=a.attempt,
                state="done" if a.stream.completion is not None else "running",
                next_seq=a.stream.next_seq,
                safe_to_repeat=a.safe_to_repeat,
            )
            for a in self.runner.attempts.values()
        ]
        held += [
            HeldJob(job_id=j, attempt=n, state="lost", safe_to_repeat=safe)
            for (j, n), safe in sorted(self.lost.items())
        ]
        return held

    # --- callbacks from the runner -------------------------------------------------------

    def _wake(self) -> None:
        self._wakeup.set()

    def _send(self, message: AgentMessage) -> None:
        self._control.append(message)
        self._wake()

    def _slot_freed(self, attempt: Attempt) -> None:
        if self.connected and not self.draining:
            self._control.append(Credit(n=1))
            self._wake()

    # --- the connection loop ---------------------------------------------------------------

    def stop(self) -> None:
        if not self._stop.is_set():
            if self.updater.ready is not None or self.updater.rolling_back:
                # The same process comes back (exec, same PID): STOPPING=1 would make systemd
                # treat the unit as going down and kill what comes back after TimeoutStopSec.
                self.notifier.status(f"draining to restart for an update: {self.runner.running} job(s) running")
            else:
                self.notifier.stopping(f"draining: {self.runner.running} job(s) running")
        self._stop.set()

    # --- health, for systemd's watchdog ------------------------------------------------------

    def healthy(self) -> bool:
        """True while the agent does its work: its connection loop and journal committer
        still run (if either ended, the agent would sit idle forever) and the connection loop
        moved on within ``stall_limit_s`` (each dial starts, each heartbeat of a live session
        marks progress; every wait between them has a timeout, so only a bug outlasts it).
        The caller runs on the agent's event loop: a blocked loop never gets to ask. While
        draining, systemd's stop timeout bounds the agent instead, so it counts as healthy."""
        if self.draining:
            return True
        if any(task.done() for task in self._loops):
            return False
        return time.monotonic() - self._progress_at <= self.stall_limit_s()

    def stall_limit_s(self) -> float:
        """The longest the connection loop may go without progress: a whole dial (connect,
        challenge and welcome, each bounded by connect_timeout_s), the longest backoff, a
        close (5 s), two heartbeats, and a margin for a busy machine."""
        control = self.config.control
        return 3 * control.connect_timeout_s + control.backoff_max_s + 5 + 2 * self._heartbeat_s + 10

    def _connected(self, url: str, heartbeat_s: float) -> None:
        self._failed_attempts = 0
        self._heartbeat_s = heartbeat_s
        self._progress_at = time.monotonic()
        status = self._state_line(url)
        if not self._ready:
            self._ready = True
            self.notifier.ready(status)
        else:
            self.notifier.status(status)

    def _state_line(self, url: str) -> str:
        draining = "draining; " if self.draining else ""
        return f"{draining}connected to {url}; {self.runner.running} job(s) running"

    def _reconnecting(self, reason: str) -> None:
        self._failed_attempts += 1
        self.notifier.status(f"reconnecting (attempt {self._failed_attempts}): {reason}")

    async def run(self) -> None:
        """Serve until ``stop()``; then drain: finish running jobs, deliver, leave."""
        connection = asyncio.create_task(self._connect_forever(), name="connection")
        committer = asyncio.create_task(self._commit_periodically(), name="journal commits")
        self._loops = [connection, committer]
        watchdog = asyncio.create_task(keep_watchdog(self.notifier, self.healthy), name="watchdog")
        trial = asyncio.create_task(self.updater.watch_trial(), name="update trial")
        await self._stop.wait()
        trial.cancel()
        await self._drain()
        for task in (connection, committer, watchdog):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for plugin in self.plugins.values():
            with contextlib.suppress(Exception):
                await plugin.aclose()
        self.journal.close()

    async def _commit_periodically(self) -> None:
        """Bound how long spooled records wait uncommitted while no frame forces a commit."""
        while True:
            await asyncio.sleep(1.0)
            self.journal.commit()

    async def _drain(self) -> None:
        self.draining = True
        if self.connected:
            self._control.append(Drain(reason="agent stopping"))
            self._wake()
        timeout = self.config.agent.drain_timeout_s
        log.info("draining: waiting up to %g s for %d running job(s)", timeout, self.runner.running)
        deadline = time.monotonic() + timeout
        while self.runner.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.runner.running:
            log.warning("drain timeout: stopping %d job(s); they will be retried elsewhere", self.runner.running)
            await self.runner.stop_all("shutdown")
        # Give the connection a moment to deliver what finished, so nothing waits for a restart.
        deadline = time.monotonic() + min(10.0, max(timeout, 1.0))
        while self.runner.attempts and self.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _connect_forever(self) -> None:
        urls = itertools.cycle(self.config.control.all_urls)
        control = self.config.control
        delays = backoff(control.backoff_initial_s, control.backoff_max_s)
        while True:
            url = websocket_url(next(urls))
            started = self._progress_at = time.monotonic()
            via = ""
            try:
                proxy = proxy_for(self.config, url)  # credentials re-read each time: rotation works
                via = f" via proxy {urlsplit(proxy).hostname}:{urlsplit(proxy).port}" if proxy else ""
                async with connect(
                    url,
                    ssl=self._tls_context() if url.startswith("wss:") else None,
                    proxy=proxy,
                    subprotocols=[websockets.Subprotocol(SUBPROTOCOL)],
                    max_size=self.limits.max_message_bytes,
                    open_timeout=control.connect_timeout_s,
                    close_timeout=5,
                    ping_interval=None,  # liveness is the protocol's heartbeat, in both directions
                    compression=None,  # records are mostly unique; deflate costs CPU and 50 KiB a socket
                    user_agent_header=f"bridgehead-agent/{__version__}",
                ) as ws:
                    await self._serve(ws, url)
            except asyncio.CancelledError:
                raise
            except SessionEnded as exc:
                log.error("control plane %s ended the session: %s", url, exc)
                self._reconnecting(f"{url} ended the session: {exc}")
            except ConfigError as exc:
                log.error("cannot connect to %s: %s", url, exc)
                self._reconnecting(f"cannot connect to {url}: {exc}")
            except (OSError, TimeoutError, websockets.WebSocketException, ProtocolError) as exc:
                log.warning("connection to %s%s failed: %s", url, via, describe(exc))
                self._reconnecting(f"{url}{via}: {describe(exc)}")
            except Exception as exc:  # noqa: BLE001 - a bug costs one session, never the agent
                log.exception("connection to %s failed unexpectedly", url)
                self._reconnecting(f"{url}: unexpected {type(exc).__name__}")
            finally:
                self.connected = False
            if time.monotonic() - started > 30:
                delays = backoff(control.backoff_initial_s, control.backoff_max_s)  # it was healthy
            delay = next(delays)
            log.info("reconnecting in %.2f s", delay)
            await asyncio.sleep(delay)

    def _tls_context(self) -> ssl.SSLContext:
        if not self.identity.certificate or not self.identity.server_ca:
            raise SessionEnded(
                "this agent was enrolled without a certificate (before TLS): enrol it again with a new token"
            )
        return client_context(self.identity.server_ca, self.identity)

    async def _serve(self, ws: ClientConnection, url: str) -> None:
        session = AgentSession(self.limits.max_message_bytes)
        timeout = self.config.control.connect_timeout_s
        challenge = expect(session.receive(await asyncio.wait_for(ws.recv(), timeout)), Challenge)
        # The server certificate this connection sees goes into the hello's signature, so a
        # relay terminating TLS with any other certificate cannot pass the hello on.
        ssl_object = ws.transport.get_extra_info("ssl_object")
        server_der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        binding = hashlib.sha256(server_der).hexdigest() if server_der else ""
        self._control.clear()
        # From here on, freed slots become Credit frames of this session (queued until open).
        self.connected = True
        capacity = 0 if self.draining else max(0, self.config.agent.max_concurrent_jobs - self.runner.running)
        hello = Hello(
            agent=self.identity.agent,
            cluster=self.identity.cluster,
            signature=self.identity.sign_hello(challenge.nonce, binding),
            version=__version__,
            capacity=capacity,
            plugins=self._plugin_infos,
            connections=sorted(self.config.connections),
            jobs=self.held_jobs(),
            features=[FEATURE_CONFIRM],
        )
        await ws.send(session.send(hello))
        # The welcome may share its frame with what followed it at once (an offer, say).
        first = session.receive(await asyncio.wait_for(ws.recv(), timeout))
        welcome = expect(first[:1], Welcome)
        self.credentials.learn_signing_keys(welcome)
        self._apply_resume(welcome)
        for message in first[1:]:
            self._handle(message)
        log.info(
            "connected to %s (session %s, heartbeat %g s, %d job(s) resumed)",
            url,
            welcome.session_id,
            welcome.heartbeat_s,
            len(welcome.resume),
        )
        self._connected(url, welcome.heartbeat_s)
        if self.draining:
            self._control.append(Drain(reason="agent stopping"))
        self.credentials.renewing = False  # a request lost with an earlier session is asked again
        self._renew_if_due()
        self.updater.on_connected()
        tasks = [
            asyncio.create_task(self._reader(ws, session, welcome.heartbeat_s * 2), name="reader"),
            asyncio.create_task(self._writer(ws, session), name="writer"),
            asyncio.create_task(self._heartbeat(welcome.heartbeat_s, url), name="heartbeat"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _renew_if_due(self) -> None:
        if self.connected:
            renew = self.credentials.renewal_due()
            if renew is not None:
                self._control.append(renew)
                self._wake()

    def _apply_resume(self, welcome: Welcome) -> None:
        verdicts = {(r.job_id, r.attempt): r for r in welcome.resume}
        for key in list(self.runner.attempts):
            acked = resume_from(verdicts.get(key))
            if acked is None:
                log.warning("job %s attempt %d: the control plane no longer wants it; dropping it", *key)
                self.runner.abandon(key)  # a running one frees its slot: Credit follows
            else:
                attempt = self.runner.attempts[key]
                attempt.confirmed.set()  # continued after a durable write: see the gateway
                attempt.stream.resume(acked)
        for key in self.lost:  # reported; the control plane has decided their fate
            self.budget.release(self.journal.remove_job(*key))
        self.lost.clear()
        self._wake()

    async def _reader(self, ws: ClientConnection, session: AgentSession, silence_s: float) -> None:
        while True:
            try:
                frame = await asyncio.wait_for(ws.recv(), silence_s)
            except TimeoutError:
                raise TimeoutError(f"no word from the control plane for {silence_s:g} s") from None
            for message in session.receive(frame):
                self._handle(message)

    def _handle(self, message: Any) -> None:
        if isinstance(message, Offer):
            refusal = offers.refusal(message, self.verifier, self.journal, self.runner.attempts)
            if refusal is not None:
                self._control.append(refusal)
                self._control.append(Credit(n=1))
            elif self.draining:
                self._control.append(
                    Reject(
                        job_id=message.job_id,
                        attempt=message.attempt,
                        error=ErrorInfo(code="agent_draining", message="the agent is stopping", retryable=True),
                    )
                )
            else:
                answer = self.runner.admit(message)
                self._control.append(answer)
                if isinstance(answer, Reject):  # the slot the offer took was never used
                    self._control.append(Credit(n=1))
            self._wake()
        elif isinstance(message, Ack):
            attempt = self.runner.attempts.get((message.job_id, message.attempt))
            if attempt is not None:
                attempt.stream.on_ack(message.seq)
            crash_point("agent.after_ack_received")  # tests: a running job's fate after a crash
        elif isinstance(message, CompleteAck):
            self.runner.forget((message.job_id, message.attempt))
        elif isinstance(message, Confirm):
            held = self.runner.attempts.get((message.job_id, message.attempt))
            if held is not None:
                held.confirmed.set()
        elif isinstance(message, Cancel):
            log.info("job %s attempt %d: cancel requested (%s)", message.job_id, message.attempt, message.reason)
            self.runner.cancel((message.job_id, message.attempt), "cancel")
        elif isinstance(message, Abandon):
            log.warning("job %s attempt %d abandoned: %s", message.job_id, message.attempt, message.reason)
            key = (message.job_id, message.attempt)
            if key in self.runner.attempts:
                self.runner.abandon(key)
        elif isinstance(message, Certificate):
            self.credentials.on_certificate(message)
        elif isinstance(message, UpdateOffer):
            self.updater.on_offer(message)
        elif isinstance(message, ReleaseChunk):
            self.updater.on_chunk(message)
        elif isinstance(message, Error):
            raise SessionEnded(f"{message.code}: {message.message}")

    async def _writer(self, ws: ClientConnection, session: AgentSession) -> None:
        """Take what is ready (``outbox.take_pass``) and hand it to ``_sender``. A pass's
        ``now`` lane goes at once; its ``gated`` lane (accepts, and whatever a run not safe
        to repeat says) once the journal's flush covering the pass is done, in the order the
        passes were taken. The writer does not wait for the flush, so the next pass commits
        while it runs and the flush after it starts at once, with no turn of the event loop
        between the two."""
        limits = self.limits
        max_bytes = min(limits.max_message_bytes, session.max_message_bytes)
        batch_bytes = max_bytes - FRAME_OVERHEAD
        yields = WRITER_YIELDS if self.config.agent.synchronous == "full" else 0
        outgoing: Outgoing = asyncio.Queue()
        sender = asyncio.create_task(self._sender(ws, outgoing, max_bytes), name="sender")
        try:
            await self._take_passes(session, outgoing, batch_bytes, yields, sender)
        finally:
            sender.cancel()

    async def _take_passes(
        self,
        session: AgentSession,
        outgoing: Outgoing,
        batch_bytes: int,
        yields: int,
        sender: asyncio.Task[None],
    ) -> None:
        # The flush the newest gated lane waits for; a gated lane of a pass that asks for no
        # flush of its own waits for the same one, so gated lanes leave in the order taken.
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        gate.set_result(None)
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if sender.done():  # it wakes the writer as it ends: a failed flush or socket ends the session
                sender.result()
                raise SessionEnded("the sender stopped")
            # With power-loss-safe commits, a turn of the loop first (WRITER_YIELDS): jobs
            # admitted by this wake-up share one flush of their acceptances.
            for _ in range(yields):
                await asyncio.sleep(0)
            busy = True
            while busy:
                ready = take_pass(
                    self._control, list(self.runner.attempts.values()), session, self.limits.batch_records, batch_bytes
                )
                busy = ready.busy
                if ready.flush:
                    gate = self.journal.durable_soon()  # persist, then acknowledge
                elif ready.sync:
                    self.journal.durable_soon().add_done_callback(_consumed)  # waited on by no one
                elif ready.commit:
                    self.journal.commit()
                if ready.now.parts:
                    outgoing.put_nowait(ready.now)
                if ready.gated.parts:
                    gate.add_done_callback(functools.partial(_release, outgoing, ready.gated))

    async def _sender(self, ws: ClientConnection, outgoing: Outgoing, max_bytes: int) -> None:
        """Send each lane in the order it was released, packed into as few frames as the
        size limit allows; a failed flush ends the session (nothing it covers is sent)."""
        try:
            while True:
                lane = await outgoing.get()
                if isinstance(lane, BaseException):
                    raise lane
                if lane.completes:
                    crash_point("agent.before_complete_sent")  # tests: a finished job survives
                for frame in pack(lane.parts, max_bytes):
                    await ws.send(frame)
        finally:
            self._wake()  # the writer sees that this ended, and why

    async def _heartbeat(self, interval_s: float, url: str) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self._progress_at = time.monotonic()
            self.notifier.status(self._state_line(url))
            self._renew_if_due()
            running = [JobRef(job_id=a.offer_job_id, attempt=a.attempt) for a in self.runner.attempts.values()]
            self._control.append(Heartbeat(running=running))
            self._wake()


def _release(outgoing: Outgoing, lane: Lane, flushed: asyncio.Future[None]) -> None:
    """A gated lane's flush is done: it may leave (or the flush failed: the sender stops)."""
    if flushed.cancelled():
        outgoing.put_nowait(asyncio.CancelledError())
    else:
        outgoing.put_nowait(flushed.exception() or lane)


def _consumed(flushed: asyncio.Future[None]) -> None:
    """A flush asked for and waited on by no one: its failure ends the session through the
    next flush that someone waits for (a failed flush fails every later one)."""
    if not flushed.cancelled():
        flushed.exception()
