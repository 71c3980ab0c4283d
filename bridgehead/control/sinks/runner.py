"""``SinkRunner``: delivers each succeeded job's records to the ServiceNow instance its sink
names, batch by batch, from a durable cursor.

    a job with a sink succeeds (the dispatcher tells us; a scan every few seconds catches the
    rest, such as deliveries a restart cut short)
    its delivery starts: records of the final attempt only, cut into batches of the
    instance's batch_size (kept with the delivery, so a resumed delivery cuts the same ones)
    batches already finished are skipped; the others go out, up to max_in_flight at once for
    an import set, one at a time for a table (so two batches never race to insert one key)
    each finished batch is one commit: its counts, its rejected records, the cursor
    retries, backoff and 429 pauses are the client's; a refused credential or retries run
    out mark the delivery failed with the reason, until POST /api/v1/jobs/ID/sync/retry

Several control planes may share one database: a node claims a delivery with a lease before
driving it (``store.deliveries``), renews the leases of all it drives on one timer (not per
batch), and stops driving one whose lease it lost, or could not renew for a whole lease
(another node may have it by then): its batch commits are fenced by the lease anyway. Another
node's scan resumes a delivery whose lease lapsed (its node died) from the cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any

import msgspec

from bridgehead.control.config import ControlConfig
from bridgehead.control.metrics import Metrics
from bridgehead.control.sinks.allowlist import refusal
from bridgehead.control.sinks.auth import AuthFailed
from bridgehead.control.sinks.client import InstanceClient, InstanceUnavailable
from bridgehead.control.sinks.memberships import Memberships
from bridgehead.control.sinks.presets import PRESETS, preset_row
from bridgehead.control.sinks.spec import SinkSpec, parse_sink, to_row
from bridgehead.control.sinks.targets import (
    ImportSetTarget,
    InvalidTarget,
    Outcome,
    Planned,
    Row,
    TableTarget,
    TargetRefused,
)
from bridgehead.control.store.base import JobRow, Rejected, Store
from bridgehead.core.redact import REDACTOR

log = logging.getLogger("bridgehead.control.sinks")

_SCAN_S = 2.0
# A delivery's lease: how long after its node's last renewal another node may take it over
# (the longest a dead node's deliveries wait), and how often it is renewed (a third of it,
# so two renewals can fail before it lapses). Constants for now, not configuration: they
# bound failover, and nothing in a deployment calls for other values yet.
LEASE_S = 15.0
MAX_REJECTED_KEPT = 10_000  # rejected records kept per job, with the instance's message
_MAX_DELIVERIES = 8  # jobs delivering at once, all instances together
_decode = msgspec.json.Decoder()


class LeaseLost(Exception):
    """Another node took the delivery over: this one stops driving it, writing nothing more."""


class SinkRunner:
    def __init__(
        self,
        store: Store,
        config: ControlConfig,
        metrics: Metrics,
        node: str | None = None,
        lease_s: float = LEASE_S,
    ) -> None:
        """``node``: this control plane's name among those sharing the database (a random
        one if None: then a restart cannot resume its own deliveries before their leases lapse)."""
        self.store = store
        self.config = config
        self.metrics = metrics
        self.node = node or f"sinks-{secrets.token_hex(4)}"
        self.lease_s = lease_s
        self.clients: dict[str, InstanceClient] = {}
        self._active: dict[str, asyncio.Task[None]] = {}
        self._held: set[str] = set()  # the active ones this node has claimed (their leases renewed)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._renewing: asyncio.Task[None] | None = None

    def client(self, name: str) -> InstanceClient:
        if name not in self.clients:
            self.clients[name] = InstanceClient(name, self.config.servicenow[name], self.store, self.metrics)
        return self.clients[name]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="sink-runner")
        self._renewing = asyncio.create_task(self._renew_loop(), name="sink-leases")

    async def stop(self) -> None:
        driven = list(self._held)
        tasks = [t for t in (self._task, self._renewing, *self._active.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Hand the leases back: another node resumes these at once rather than a lease later.
        with contextlib.suppress(Exception):
            await self.store.renew_deliveries(self.node, driven, 0.0)
        for client in self.clients.values():
            await client.close()

    def job_finished(self, job_id: str, state: str) -> None:
        """The dispatcher's word that a job ended: deliver at once rather than at the next scan."""
        if state == "succeeded":
            self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                room = _MAX_DELIVERIES - len(self._active)
                if room > 0:
                    due = await self.store.deliveries_to_run(room + len(self._active), self.node, time.time())
                    for job_id in due:
                        if job_id not in self._active and len(self._active) < _MAX_DELIVERIES:
                            task = asyncio.create_task(self._deliver(job_id), name=f"sink-{job_id}")
                            self._active[job_id] = task
                            self.metrics.sink_delivering.set(len(self._active))
                            task.add_done_callback(functools.partial(self._ended, job_id))
            except Exception:
                log.exception("sink runner: scanning for deliveries failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _SCAN_S)
            self._wake.clear()

    def _ended(self, job_id: str, _task: object) -> None:
        self._active.pop(job_id, None)
        self._held.discard(job_id)
        self.metrics.sink_delivering.set(len(self._active))
        self._wake.set()  # room for the next one

    async def _renew_loop(self) -> None:
        """Every third of a lease, one write extends the leases of every delivery driven here;
        one whose lease was lost, or may have lapsed unrenewed, stops being driven."""
        renewed_at = time.monotonic()
        while True:
            await asyncio.sleep(self.lease_s / 3)  # two renewals may fail before a lease lapses
            driven = list(self._held)
            if not driven:
                renewed_at = time.monotonic()
                continue
            try:
                held = await self.store.renew_deliveries(self.node, driven, time.time() + self.lease_s)
            except Exception:
                log.exception("sink runner: renewing the deliveries' leases failed; trying again")
                if time.monotonic() - renewed_at < self.lease_s:
                    continue
                held = set()  # a whole lease unrenewed: another node may drive them by now
            else:
                renewed_at = time.monotonic()
            for job_id in driven:
                task = self._active.get(job_id)
                if job_id not in held and task is not None:
                    log.warning("job %s: this node no longer holds its delivery; it stops driving it", job_id)
                    task.cancel()

    async def _deliver(self, job_id: str) -> None:
        job = await self.store.get_job(job_id)
        if job is None or job.sink is None:
            return
        problem: str | None = None
        try:
            spec = parse_sink(job.sink)
            if spec.servicenow not in self.config.servicenow:
                raise TargetRefused(f"no [servicenow.{spec.servicenow}] in the control plane's configuration")
            # Checked at submit too; this catches a job stored before the configuration changed.
            problem = refusal(spec.servicenow, self.config.servicenow[spec.servicenow], spec)
        except (ValueError, TargetRefused) as exc:
            problem = str(exc)
        # Claimed before anything is written, a failure included (0: a batch size not fixed yet).
        batch_size = 0 if problem is not None else self.config.servicenow[spec.servicenow].batch_size
        now = time.time()
        delivery = await self.store.start_delivery(job_id, batch_size, now, self.node, now + self.lease_s)
        if delivery is None:
            return  # another node drives it, or it ended meanwhile
        self._held.add(job_id)
        if problem is not None:
            await self._fail(job, "invalid_sink", problem)
            return
        try:
            await Delivery(self, job, spec, delivery.batch_size).run()
        except AuthFailed as exc:
            await self._fail(job, "auth_failed", str(exc))
        except InstanceUnavailable as exc:
            await self._fail(job, "instance_unavailable", str(exc))
        except InvalidTarget as exc:
            await self._fail(job, "invalid_target", str(exc))
        except TargetRefused as exc:
            await self._fail(job, "refused", str(exc))
        except LeaseLost:
            log.warning("job %s: another node took its delivery over; this one stops", job_id)
        except asyncio.CancelledError:
            raise  # stopping, or the lease lost: the delivery stays "delivering", to be resumed
        except Exception as exc:
            log.exception("delivery of job %s failed", job_id)
            await self._fail(job, "internal", f"{type(exc).__name__}: {exc}")
        else:
            if not await self.store.end_delivery(job_id, "done", None, None, time.time(), self.node):
                log.warning("job %s: another node took its delivery over as it ended", job_id)
                return
            self.metrics.sink_deliveries.labels(spec.servicenow, "done").inc()
            counts = await self.store.delivery_counts(job_id)
            log.info("job %s: delivered to servicenow %s: %s", job_id, spec.servicenow, counts)

    async def _fail(self, job: JobRow, code: str, message: str) -> None:
        message = REDACTOR.redact(message)  # an instance may echo the credential it refused
        log.error("job %s: delivery failed (%s): %s", job.id, code, message)
        instance = job.sink.get("servicenow") if isinstance(job.sink, dict) else None
        if await self.store.end_delivery(job.id, "failed", code, message, time.time(), self.node):
            self.metrics.sink_deliveries.labels(str(instance or "?"), "failed").inc()


class Delivery:
    """One job's records into one target."""

    def __init__(self, runner: SinkRunner, job: JobRow, spec: SinkSpec, batch_size: int) -> None:
        self.runner = runner
        self.store = runner.store
        self.job = job
        self.spec = spec
        self.batch_size = batch_size
        client = runner.client(spec.servicenow)
        self.memberships: Memberships | None = None
        self.room_for_rejected = MAX_REJECTED_KEPT
        self.turns: Turns | None = None
        self.target: ImportSetTarget | TableTarget
        if spec.preset is not None:
            preset = PRESETS[spec.preset]
            self.target = TableTarget(client, preset.table, preset.coalesce, preset.on_delete)
            if preset.members:
                self.memberships = Memberships(client)
        elif spec.import_set is not None:
            self.target = ImportSetTarget(client, spec.import_set)
        else:
            self.target = TableTarget(client, spec.table or "", spec.coalesce, spec.on_delete)

    def mapped_fields(self) -> list[str]:
        """The target fields the sink names (passthrough ones are known only per record)."""
        if self.spec.preset is not None:
            preset = PRESETS[self.spec.preset]
            return [*preset.coalesce, *(target for target, _keys in preset.fields), "source", "active"]
        return [*self.spec.coalesce, *self.spec.map]

    async def run(self) -> None:
        # The target's definition first: a missing table or coalesce field fails here, before
        # any record is sent.
        await self.target.prepare(self.mapped_fields())
        self.room_for_rejected = MAX_REJECTED_KEPT - await self.store.rejected_count(self.job.id)
        done = await self.store.delivered_batches(self.job.id)
        firsts = [f for f in range(1, self.job.record_count + 1, self.batch_size) if f not in done]
        # Import sets take batches side by side: twice as many lanes as requests in flight, so
        # a batch is read, mapped and encoded while the others are on the wire, and waits at
        # the client's limit, ready the moment a request ends. A table's batches go one at a
        # time (its lookups and inserts must not race another batch holding the same key).
        parallel = self.runner.config.servicenow[self.spec.servicenow].max_in_flight
        # A table's batches do overlap in one way: a batch's commit runs while the next one is
        # sent (two lanes, sending strictly in turn, in order).
        lanes = 2 * parallel if isinstance(self.target, ImportSetTarget) else 2
        self.turns = None if isinstance(self.target, ImportSetTarget) else Turns(firsts)
        pending = iter(firsts)

        async def lane() -> None:
            for first in pending:
                await self._batch(first)

        await _all_or_none([lane() for _ in range(min(lanes, len(firsts)) or 1)])
        if isinstance(self.target, TableTarget) and self.target.fields.dropped:
            dropped = ", ".join(f"{name} ({n} rows)" for name, n in sorted(self.target.fields.dropped.items()))
            log.warning("job %s: fields %s lacks were not sent: %s", self.job.id, self.target.table, dropped)

    async def _batch(self, first: int) -> None:
        job = self.job
        last = min(first + self.batch_size - 1, job.record_count)
        outcomes: list[Outcome] = []
        rejected: list[Rejected] = []
        # Read, mapped and keyed ahead of the turn: the batch is ready the moment the one
        # before it is sent (none of this needs an answer from the instance).
        chunk = await self._read(first - 1, last)
        ready = self._plan(chunk)
        turn = self.turns.turn(first) if self.turns is not None else contextlib.nullcontext()
        async with turn:
            done = await self._send(chunk, ready, first - 1, last, outcomes, rejected)
        if not outcomes:
            return
        counts = _counts(outcomes)
        # The rejected records kept for GET .../sync/errors are bounded; the count never is.
        rejected = rejected[: max(0, self.room_for_rejected)]
        self.room_for_rejected -= len(rejected)
        if not await self.store.finish_batch(job.id, first, done, counts, rejected, time.time(), self.runner.node):
            raise LeaseLost(job.id)
        for outcome, n in counts.items():
            if n:
                self.runner.metrics.sink_records.labels(self.spec.servicenow, outcome).inc(n)

    async def _read(self, done: int, last: int) -> list[tuple[int, Any]]:
        """The records after ``done`` up to ``last``, at most max_request_bytes of them."""
        max_bytes = self.runner.config.servicenow[self.spec.servicenow].max_request_bytes
        rows = await self.store.records(self.job.id, self.job.attempt, done, last - done, max_bytes)
        return [(seq, _decode.decode(data)) for seq, data in rows]

    def _plan(self, records: list[tuple[int, Any]]) -> Planned:
        return self.target.plan([self._row(record) for _seq, record in records])

    async def _send(
        self,
        records: list[tuple[int, Any]],
        ready: Planned,
        done: int,
        last: int,
        outcomes: list[Outcome],
        rejected: list[Rejected],
    ) -> int:
        """``records`` (``ready``: planned), then the rest up to ``last``, to the target, in
        requests of at most max_request_bytes (a batch stays the unit kept as delivered); the
        last seq sent."""
        while records:
            sent = await self.target.send(ready)
            if self.memberships is not None:
                await self.memberships.sync([record for _seq, record in records], sent)
            outcomes += sent
            rejected += _rejected(records, sent)
            done = records[-1][0]
            records = await self._read(done, last) if done < last else []
            ready = self._plan(records)
        return done

    def _row(self, record: Any) -> Row:
        if not isinstance(record, dict):
            record = {"value": record}
        if self.spec.preset is not None:
            return preset_row(PRESETS[self.spec.preset], record)
        return Row(to_row(self.spec, record), delete=record.get("op") == "delete")


async def _all_or_none(lanes: list[Coroutine[Any, Any, None]]) -> None:
    """Run the lanes; the first to fail stops the others (no batch goes out after a failure)
    and its exception is raised."""
    tasks = [asyncio.ensure_future(lane) for lane in lanes]
    try:
        finished, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()  # a no-op on finished ones; the rest when we are cancelled ourselves
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    for task in finished:
        error = task.exception()
        if error is not None:
            raise error


class Turns:
    """Batches sent strictly one after the other, in order (a table's: a batch's lookups must
    see the rows the one before inserted), while finished ones commit alongside."""

    def __init__(self, firsts: Sequence[int]) -> None:
        self._order = {first: i for i, first in enumerate(firsts)}
        self._next = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def turn(self, first: int) -> AsyncIterator[None]:
        mine = self._order[first]
        async with self._changed:
            await self._changed.wait_for(lambda: self._next == mine)
        try:
            yield
        finally:
            async with self._changed:
                self._next = mine + 1
                self._changed.notify_all()


def _counts(outcomes: Sequence[Outcome]) -> dict[str, int]:
    counts = dict.fromkeys(("inserted", "updated", "ignored", "skipped", "errors"), 0)
    for outcome in outcomes:
        counts["errors" if outcome.status == "error" else outcome.status] += 1
    return counts


def _rejected(records: Sequence[tuple[int, Any]], outcomes: Sequence[Outcome]) -> list[Rejected]:
    return [
        Rejected(seq, outcome.status, outcome.message or "rejected", record if isinstance(record, dict) else {})
        for (seq, record), outcome in zip(records, outcomes, strict=True)
        if outcome.status == "error"
    ]
