"""The deliveries part of the store contract: each succeeded job's delivery into its sink.

A delivery is *queued* (``pending``) in the commit that ends its job as succeeded (see
``JobStore.finish_job``; ``queue_delivery`` is the same operation on its own), *started*
(``delivering``, its batch size fixed for good), and *ended* (``done`` or ``failed``; a
failed one may be retried, back to ``pending``).

Its cursor is the set of finished batches, each written in one commit with its counts and
rejected records. After a restart, delivery resumes with the batches not in it; a batch that
was in flight is sent again, which the sink's coalesce keys make harmless. Counts are sums
over finished batches, so a batch finished twice is counted once.

One node drives a delivery at a time (several control planes may share a PostgreSQL
database): starting a delivery *claims* it for a node with a lease, which that node renews
while it drives it; every batch and the end are written only while the node still holds it
(a node that lost it commits nothing). A lease that lapsed (its node died, or stalled) lets
any node claim the delivery and resume it from the cursor. Leases are compared with the
``now`` their callers pass (wall clocks of nodes on one database are assumed to agree to well
within a lease). With one control plane (SQLite, memory) the node is always the same.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Sequence

from bridgehead.control.store.rows import Delivery, Rejected


class DeliveryStore(abc.ABC):
    @abc.abstractmethod
    def queue_delivery(self, job_id: str, attempt: int, now: float) -> Awaitable[bool]:
        """Queue the delivery of job ``job_id`` if it succeeded as ``attempt`` and has a sink;
        True if this queued it, False if there was nothing to queue or it was queued already
        (an existing delivery is never reset)."""

    @abc.abstractmethod
    async def deliveries_to_run(self, limit: int, node: str, now: float) -> list[str]:
        """Job ids of the deliveries ``node`` may drive: pending, or ``delivering`` but cut
        short (held by ``node`` itself, as after its restart, or by a lease that lapsed before
        ``now``), in the order they were queued; at most ``limit``."""

    @abc.abstractmethod
    async def start_delivery(
        self, job_id: str, batch_size: int, now: float, node: str, until: float
    ) -> Delivery | None:
        """Claim the delivery for ``node`` with a lease to ``until`` and start it; None if it
        is not to run (unknown, ended) or another node holds a lease running past ``now``.
        Its batch size is fixed the first time a non-zero one is given, for good (a resumed
        delivery cuts the same batches, whatever the configuration says by then)."""

    @abc.abstractmethod
    async def renew_deliveries(self, node: str, job_ids: Sequence[str], until: float) -> set[str]:
        """Extend ``node``'s leases on ``job_ids`` to ``until``: those it still holds (being
        delivered). An ``until`` in the past hands them back: any node may claim them at once."""

    @abc.abstractmethod
    async def delivery(self, job_id: str) -> Delivery | None: ...

    @abc.abstractmethod
    async def delivered_batches(self, job_id: str) -> set[int]:
        """The first seqs of the batches finished (the cursor)."""

    @abc.abstractmethod
    def finish_batch(
        self,
        job_id: str,
        first_seq: int,
        last_seq: int,
        counts: dict[str, int],
        rejected: Sequence[Rejected],
        now: float,
        node: str,
    ) -> Awaitable[bool]:
        """One batch's outcome, counts (``COUNTS``) and rejected records in one commit: the
        cursor moves. Finishing a batch again replaces its outcome. Only while ``node`` holds
        the delivery (its claim, lapsed or not, was not taken over): False, and nothing
        written, once it does not."""

    @abc.abstractmethod
    def end_delivery(
        self, job_id: str, state: str, error_code: str | None, error_message: str | None, now: float, node: str
    ) -> Awaitable[bool]:
        """Set the delivery's state (``done`` and ``failed`` also set ``finished_at``) and
        release it, if ``node`` holds it (as ``finish_batch``); False, and nothing written, if not."""

    @abc.abstractmethod
    def retry_delivery(self, job_id: str, now: float) -> Awaitable[object]:
        """A failed delivery back to ``pending`` (any node may claim it), its error cleared;
        others are left alone."""

    @abc.abstractmethod
    async def delivery_counts(self, job_id: str) -> dict[str, int]:
        """Sums over the finished batches: each of ``COUNTS`` and ``delivered`` (records)."""

    @abc.abstractmethod
    async def rejected_count(self, job_id: str) -> int: ...

    @abc.abstractmethod
    async def rejected(self, job_id: str, after: int, limit: int) -> list[Rejected]:
        """Rejected records past seq ``after``, by seq; at most ``limit``."""

    @abc.abstractmethod
    async def delivery_finished(self, job_id: str) -> bool:
        """Whether the job's run is over, delivery included: ended, and if it succeeded with a
        sink, its delivery ``done`` or ``failed``. True for an unknown job (for schedules: a
        run whose job is gone does not hold the next one back)."""

    # --- the sinks' OAuth refresh tokens ---------------------------------------------------

    @abc.abstractmethod
    async def refresh_token(self, instance: str) -> tuple[str, str] | None:
        """``(token, origin)`` of the newest refresh token kept for ``instance``."""

    @abc.abstractmethod
    def keep_refresh_token(self, instance: str, token: str, origin: str, now: float) -> Awaitable[object]:
        """Keep ``instance``'s newest refresh token the moment it rotates; ``origin`` is a hash
        of the configured token it descends from."""
