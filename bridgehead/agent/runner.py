"""Running job attempts: admission (validate, journal, accept), execution, cancel and timeout.

Admission happens before anything runs: the plugin must exist, the params must fit its
schema, the profile must exist, belong to that plugin and allow what is asked. A refused
offer touches nothing and is answered with ``reject``. An admitted one is written to the
journal before ``accept`` is sent (persist, then ack).

Cancel and timeout both arrive at the plugin as ``asyncio.CancelledError`` at its current
``await``; ``JobContext.run_blocking`` turns that into a call that stops the source too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridgehead.agent.config import AgentConfig, resolve_credential
from bridgehead.agent.journal import Journal
from bridgehead.agent.plugin_loader import AnyPlugin, parse_params
from bridgehead.agent.stream import OutboundStream, SpoolBudget, StreamClosed
from bridgehead.core.errors import ConfigError, JobError, UnknownConnection, UnknownPlugin
from bridgehead.core.redact import REDACTOR
from bridgehead.protocol import Accept, ErrorInfo, Offer, Reject, SyncState
from bridgehead.protocol.messages import JobStatus
from bridgehead.sdk import Credential, JobContext, NoProfile, Profile

log = logging.getLogger("bridgehead.agent.runner")

Key = tuple[str, int]


@dataclass
class Attempt:
    offer_job_id: str
    attempt: int
    plugin: str
    stream: OutboundStream
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None  # "cancel" | "abandon" | "shutdown"
    # Set once the control plane has the attempt durably: at once for most offers, on
    # ``Confirm`` (or a welcome that continues it) for one sent with ``confirm_follows``.
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = field(default_factory=time.monotonic)
    # As the plugin said at admission. False for an attempt of unknown kind (one found in
    # the journal at start): its frames then keep behind any accept still to leave.
    safe_to_repeat: bool = False

    @property
    def key(self) -> Key:
        return (self.offer_job_id, self.attempt)


def error_info(exc: JobError) -> ErrorInfo:
    return make_error(exc.code, exc.message, exc.retryable)


def make_error(code: str, message: str, retryable: bool = False) -> ErrorInfo:
    """An ``ErrorInfo`` that always fits the protocol: a plugin's code or message of any
    length or shape must not make its completion unsendable."""
    safe_code = re.sub(r"[^A-Za-z0-9_.:-]", "_", code)[:64] or "job_error"
    return ErrorInfo(code=safe_code, message=REDACTOR.redact(message)[:8000], retryable=retryable)


class Runner:
    def __init__(
        self,
        config: AgentConfig,
        plugins: dict[str, AnyPlugin],
        profiles: dict[str, Profile],
        journal: Journal,
        budget: SpoolBudget,
        wake: Callable[[], None],
        on_slot_freed: Callable[[Attempt], None],
    ) -> None:
        self.config = config
        self.plugins = plugins
        self.profiles = profiles
        self.journal = journal
        self.budget = budget
        self.wake = wake
        self.on_slot_freed = on_slot_freed
        self.attempts: dict[Key, Attempt] = {}

    @property
    def running(self) -> int:
        """Attempts whose plugin is still working (finished ones may still await acks)."""
        return sum(1 for a in self.attempts.values() if a.task is not None and not a.task.done())

    def new_stream(self, job_id: str, attempt: int, next_seq: int = 1) -> OutboundStream:
        limits = self.config.limits
        return OutboundStream(
            job_id,
            attempt,
            self.journal,
            self.budget,
            window_records=limits.window_records,
            window_bytes=limits.window_bytes,
            wake=self.wake,
            next_seq=next_seq,
        )

    def admit(self, offer: Offer) -> Accept | Reject:
        key = (offer.job_id, offer.attempt)
        if key in self.attempts:  # a re-sent offer after a reconnect: already ours
            return Accept(job_id=offer.job_id, attempt=offer.attempt)
        try:
            plugin, params, profile, credential = self._prepare(offer)
            safe = bool(plugin.is_safe_to_repeat_on(profile, params))
        except JobError as exc:
            log.warning("job %s attempt %d refused: %s: %s", offer.job_id, offer.attempt, exc.code, exc.message)
            return Reject(job_id=offer.job_id, attempt=offer.attempt, error=error_info(exc))
        except Exception as exc:  # noqa: BLE001 - a plugin's check_policy bug refuses its job, nothing more
            log.exception(
                "job %s attempt %d: plugin %s failed while admitting it", offer.job_id, offer.attempt, offer.plugin
            )
            error = make_error("plugin_crashed", f"{type(exc).__name__}: {exc}")
            return Reject(job_id=offer.job_id, attempt=offer.attempt, error=error)
        self.journal.add_job(offer.job_id, offer.attempt, offer.plugin, time.time(), safe)
        stream = self.new_stream(offer.job_id, offer.attempt)
        attempt = Attempt(offer.job_id, offer.attempt, offer.plugin, stream, safe_to_repeat=safe)
        if not offer.confirm_follows:
            attempt.confirmed.set()
        self.attempts[key] = attempt
        attempt.task = asyncio.create_task(
            self._run(attempt, plugin, params, profile, credential, offer.timeout_s, offer.sync_state, not safe),
            name=f"job {offer.job_id}#{offer.attempt}",
        )
        # Whether it ends, fails, is cancelled or abandoned, its slot frees when the task ends.
        attempt.task.add_done_callback(lambda _task: self.on_slot_freed(attempt))
        return Accept(job_id=offer.job_id, attempt=offer.attempt, safe_to_repeat=safe)

    def _prepare(self, offer: Offer) -> tuple[AnyPlugin, Any, Profile, Credential | None]:
        plugin = self.plugins.get(offer.plugin)
        if plugin is None:
            available = ", ".join(sorted(self.plugins)) or "none"
            raise UnknownPlugin(f"this agent has no plugin {offer.plugin!r} (it has: {available})")
        params = parse_params(plugin, offer.params)
        connection = getattr(params, "connection", None)
        profile: Profile
        credential: Credential | None = None
        if connection is None:
            if plugin.profile_type is not NoProfile:
                raise UnknownConnection(f"plugin {plugin.name!r} needs a 'connection' param")
            profile = NoProfile(plugin=plugin.name)
        else:
            profile, credential = self.connection(plugin.name, connection)
        plugin.check_policy(profile, params)
        return plugin, params, profile, credential

    def connection(self, plugin: str, name: str) -> tuple[Profile, Credential | None]:
        """Profile ``name`` of ``plugin``, with its credential resolved now (a rotated secret
        is picked up at each job)."""
        found = self.profiles.get(name)
        if found is None:
            raise UnknownConnection(f"no connection profile {name!r} on agent {self.config.agent.name!r}")
        if found.plugin != plugin:
            raise UnknownConnection(f"connection profile {name!r} is for plugin {found.plugin!r}, not {plugin!r}")
        credential: Credential | None = None
        if found.credential is not None:
            try:
                credential = resolve_credential(self.config.credentials[found.credential], found.credential)
            except ConfigError as exc:
                raise JobError(
                    f"credential {found.credential!r}: {exc.key}: {exc.problem}", code="credential_unavailable"
                ) from None
        return found, credential

    async def _run(
        self,
        attempt: Attempt,
        plugin: AnyPlugin,
        params: Any,
        profile: Profile,
        credential: Credential | None,
        timeout_s: float,
        previous_sync_state: SyncState | None = None,
        journaled_first: bool = False,
    ) -> None:
        """Run the attempt to its end. ``journaled_first`` (a run not safe to repeat): only once
        its acceptance is durable in the journal, so that a crash or power loss before then
        leaves a run that never started, not one the agent forgot and the control plane
        offers again; and only once the attempt is durable on the control plane (``confirmed``),
        so that a power loss there cannot forget an attempt that ran and offer the job again.
        A job safe to repeat starts at once (a lost journal reruns it, harmlessly)."""
        job_log = logging.LoggerAdapter(log, {"job_id": attempt.offer_job_id, "attempt": attempt.attempt})
        ctx: JobContext[Any] = JobContext(
            job_id=attempt.offer_job_id,
            attempt=attempt.attempt,
            profile=profile,
            credential=credential,
            sink=attempt.stream,
            deadline=time.monotonic() + timeout_s,
            max_record_bytes=self.config.limits.max_record_bytes,
            logger=job_log,
            connections=functools.partial(self.connection, plugin.name),
            previous_sync_state=previous_sync_state,
        )
        status: JobStatus = "succeeded"
        error: ErrorInfo | None = None
        try:
            if journaled_first:
                await self.journal.make_durable()
                await attempt.confirmed.wait()
            async with asyncio.timeout(timeout_s):
                await plugin.run(ctx, params)
        except TimeoutError:
            status, error = (
                "failed",
                ErrorInfo(code="timeout", message=f"the job ran past its timeout of {timeout_s:g} s", retryable=True),
            )
        except asyncio.CancelledError:
            reason = attempt.cancel_reason or "shutdown"
            if reason == "abandon":
                raise
            if reason == "cancel":
                status, error = "cancelled", ErrorInfo(code="cancelled", message="cancelled on request")
            else:
                status, error = (
                    "failed",
                    ErrorInfo(code="agent_shutdown", message="the agent stopped before the job ended", retryable=True),
                )
        except StreamClosed:
            return
        except JobError as exc:
            status, error = "failed", error_info(exc)
        except Exception as exc:  # noqa: BLE001 - a plugin bug fails its job, never the agent
            job_log.exception("plugin %s crashed", plugin.name)
            status, error = "failed", make_error("plugin_crashed", f"{type(exc).__name__}: {exc}")
        if attempt.stream.closed:
            return
        # A sync job's state for its next run counts only if the job succeeded.
        attempt.stream.finish(status, error, ctx.sync_state if status == "succeeded" else None)
        elapsed = time.monotonic() - attempt.started
        # Quick successes are routine (thousands a second); long or failed jobs are worth a line.
        level = logging.INFO if error is not None or elapsed >= 1.0 else logging.DEBUG
        job_log.log(
            level,
            "job %s attempt %d %s in %.3f s, %d records%s",
            attempt.offer_job_id,
            attempt.attempt,
            status,
            elapsed,
            attempt.stream.record_count,
            f" ({error.code}: {error.message})" if error else "",
        )

    def cancel(self, key: Key, reason: str) -> None:
        attempt = self.attempts.get(key)
        if attempt is None or attempt.task is None or attempt.task.done():
            return
        attempt.cancel_reason = reason
        attempt.task.cancel()

    def abandon(self, key: Key) -> None:
        """Stop the attempt and forget it: the control plane has fenced it off."""
        attempt = self.attempts.pop(key, None)
        if attempt is not None:
            attempt.cancel_reason = "abandon"
            attempt.stream.close()
            if attempt.task is not None and not attempt.task.done():
                attempt.task.cancel()
        self.budget.release(self.journal.remove_job(*key))
        self.budget.notify()

    def forget(self, key: Key) -> None:
        """The control plane has the attempt's completion: drop it from memory and journal."""
        attempt = self.attempts.pop(key, None)
        if attempt is not None:
            attempt.stream.close()
        self.budget.release(self.journal.remove_job(*key))

    async def stop_all(self, reason: str) -> None:
        tasks = []
        for attempt in self.attempts.values():
            if attempt.task is not None and not attempt.task.done():
                attempt.cancel_reason = reason
                attempt.task.cancel()
                tasks.append(attempt.task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
