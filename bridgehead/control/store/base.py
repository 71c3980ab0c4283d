"""The store contract: everything the control plane keeps durably, as abstract classes.

The dispatcher holds the hot state (queues, leases, credit) in memory and writes every
transition here *before* it acknowledges it to anyone (persist, then ack). ``Store`` is the
whole surface, in six parts::

    Store
    ├── JobStore        jobs and attempts, records, sync states       (store.jobs)
    ├── AgentStore      enrolment tokens and agents                   (store.agents)
    ├── AccessStore     API tokens and the audit log                  (store.access)
    ├── ScheduleStore   recurring schedules                           (store.schedules)
    ├── DeliveryStore   sink deliveries and the sinks' refresh tokens (store.deliveries)
    └── ReleaseStore    agent releases, wanted versions, update reports (store.releases)

The rows they take and return are plain dataclasses (``store.rows``), re-exported here.

Backends: ``SqliteStore`` (``store.sqlite``, embedded, one process owns the file),
``PostgresStore`` (``store.postgres``, asyncpg: one write connection with the same group
commit, a read pool, a LISTEN connection; several nodes share one database: ``store.nodes``) and
``MemoryStore`` (``store.memory``, for tests, shipped like httpx's MockTransport).
``tests/unit/store`` runs one contract suite against each. Callers hold a ``Store``, never a
backend type. The real backends number their schema versions and migrate on open, refusing a
newer schema (``store.versions.SchemaTooNew``).

What every backend promises
---------------------------
*Writes.* A method returning an ``Awaitable`` *issues* its write when called, not when
awaited: its place in the order is fixed by the call. A store applies its writes in the order
issued, each atomically (between stores, such as several nodes on one PostgreSQL database,
their transactions order them). The awaitable resolves once the write is *durable* (it survives a crash of
the process, and a restart reads it back; SQLite ``synchronous=FULL`` and PostgreSQL
``synchronous_commit=on`` also survive power loss) and so is every write issued before it.
That lets the gateway keep reading an agent's frames while earlier writes commit, and send
each acknowledgement only once its write is durable, without reordering anything.

A write is *acknowledged* only when its awaitable has resolved. One that raised did not
happen. Apart from the refusals a method documents (an idempotency key in use, a refused
enrolment, a schedule name taken), a failing write means the store is failing: it may take
the writes issued in the same commit with it (SQLite commits one loop turn's writes
together; PostgreSQL may batch too), and the dispatcher stops rather than guess
(fail-stop). A write issued but not yet resolved when the process dies may or may not be
there after the restart.

Writing ``async def`` methods (``create_job``, ``enroll_agent``, ``revoke_agent``, ...) are
the same, but issue their write when first awaited and return what the write decided.

*Reads.* Every read is ``async`` (a PostgreSQL round trip) and sees at least every write
acknowledged before it was called; whether it sees writes issued but not yet acknowledged is
unspecified. Lists are in the order each method names, so pages are stable.
``external_changes`` is the one synchronous read: see ``AccessStore``.

*Ordering, idempotency keys, fencing, ending a job:* see ``JobStore``. *Enrolment as one
transaction:* see ``AgentStore``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from bridgehead.control.store.access import TOKEN_ID_CHARS, AccessStore
from bridgehead.control.store.agents import AgentStore
from bridgehead.control.store.deliveries import DeliveryStore
from bridgehead.control.store.jobs import JobStore
from bridgehead.control.store.releases import ReleaseStore
from bridgehead.control.store.rows import (
    CLI,
    COUNTS,
    JOB_STATES,
    TERMINAL_STATES,
    Actor,
    AgentRow,
    ApiTokenRow,
    AuditRow,
    Delivery,
    EnrollmentGrant,
    EnrollmentRefused,
    JobRow,
    Rejected,
    ReleaseConflict,
    ReleaseRow,
    ScheduleRow,
    SyncSummary,
    UpdateRow,
    json_size,
)
from bridgehead.control.store.schedules import ScheduleStore

__all__ = [
    "CLI",
    "COUNTS",
    "JOB_STATES",
    "TERMINAL_STATES",
    "TOKEN_ID_CHARS",
    "AccessStore",
    "Actor",
    "AgentRow",
    "AgentStore",
    "ApiTokenRow",
    "AuditRow",
    "Delivery",
    "DeliveryStore",
    "EnrollmentGrant",
    "EnrollmentRefused",
    "JobRow",
    "JobStore",
    "Rejected",
    "ReleaseConflict",
    "ReleaseRow",
    "ReleaseStore",
    "ScheduleRow",
    "ScheduleStore",
    "Store",
    "SyncSummary",
    "UpdateRow",
    "json_size",
]


class Store(JobStore, AgentStore, AccessStore, ScheduleStore, DeliveryStore, ReleaseStore, abc.ABC):
    """The whole contract. ``close`` flushes what is issued and releases the backend; the
    store is not used after it."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    # A commit that survives a crash of the process can come well before the flush that makes
    # it survive a power loss (SQLite's group commit waits for an fdatasync). A caller whose
    # next step needs only the former (an offer that the agent holds until told the attempt
    # is durable) acts at the commit and keeps the flush off its path. Backends whose commit
    # is the flush (PostgreSQL's synchronous_commit) keep these defaults.

    @property
    def commits_before_durable(self) -> bool:
        """Whether ``when_committed`` can tell a commit apart from durability."""
        return False

    def when_committed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the event loop, once) right after the commit that holds every
        write issued so far, before that commit is durable; never if the commit fails (its
        writes fail, and their callers stop the process). Only where
        ``commits_before_durable``; elsewhere a write's own resolution is the moment to act."""
        raise NotImplementedError("this store commits and flushes as one step")
