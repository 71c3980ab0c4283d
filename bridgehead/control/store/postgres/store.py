"""``PostgresStore``: the whole store contract over PostgreSQL.

Built synchronously, like the control plane's other parts: the constructor connects once (in a
worker thread with its own event loop, so it works whether or not a loop runs here), migrates
the schema (``schema.migrate``; a newer one is refused before anything else happens) and
reserves the first block of queue positions. The connections that serve then open on first
use, on the caller's loop (``writer.GroupCommit``).
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

import asyncpg

from bridgehead.control.store.base import Store
from bridgehead.control.store.postgres.access import AccessTables
from bridgehead.control.store.postgres.agents import AgentTables
from bridgehead.control.store.postgres.identity import IdentityTables
from bridgehead.control.store.postgres.jobs import JobTables
from bridgehead.control.store.postgres.nodes import NodeTables
from bridgehead.control.store.postgres.records import RecordTables
from bridgehead.control.store.postgres.releases import ReleaseTables
from bridgehead.control.store.postgres.schedules import ScheduleTables
from bridgehead.control.store.postgres.schema import QUEUE_BLOCK, migrate
from bridgehead.control.store.postgres.sinks import SinkTables
from bridgehead.control.store.postgres.syncs import SyncTables
from bridgehead.core.errors import BridgeheadError
from bridgehead.core.eventloop import run_apart

CONNECT_TIMEOUT_S = 10.0


class DatabaseUnreachable(BridgeheadError):
    """The store's PostgreSQL cannot be reached at start: a one-line reason, not a traceback."""


def display_url(url: str) -> str:
    """The URL as errors and logs show it: never a password (config refuses one in it anyway)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = (f"{parts.username}@" if parts.username else "") + host + (f":{parts.port}" if parts.port else "")
    return f"{parts.scheme}://{netloc}{parts.path}"


class PostgresStore(
    JobTables,
    RecordTables,
    SyncTables,
    AgentTables,
    AccessTables,
    ScheduleTables,
    SinkTables,
    ReleaseTables,
    NodeTables,
    IdentityTables,
    Store,
):
    def __init__(
        self, url: str, password: str | None = None, schema: str = "public", node_id: str | None = None
    ) -> None:
        """``url``: ``postgresql://user@host:port/database``; ``password`` apart (read from a
        secret by the caller); ``schema``: where the tables are (one per test, say);
        ``node_id``: this node's name among those sharing the database (a random one if None)."""
        super().__init__(url, password, schema)
        self.node_id = node_id or f"store-{secrets.token_hex(4)}"
        self.url = display_url(url)
        first_block = run_apart(self._prepare, "bridgehead-store-open")
        self._seq_next, self._seq_end = first_block, first_block + QUEUE_BLOCK

    async def _prepare(self) -> int:
        """Migrate, then reserve a block of queue positions: past every one stored, even one a
        node counted past its block's end (``JobTables._queue_seq``)."""
        try:
            conn = await asyncpg.connect(
                self._url, password=self._password, server_settings=self._settings(), timeout=CONNECT_TIMEOUT_S
            )
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise DatabaseUnreachable(f"{self.url}: cannot connect to PostgreSQL: {exc}") from exc
        try:
            await migrate(conn, self.url)
            block = int(await conn.fetchval("SELECT nextval('job_queue_blocks')"))
            highest = int(await conn.fetchval("SELECT coalesce(max(queue_seq), 0) FROM jobs"))
            return max(block, highest + 1)
        finally:
            await conn.close()
