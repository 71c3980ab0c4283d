"""``PostgresStore``: the whole store contract over PostgreSQL.

Built synchronously, like the control plane's other parts: the constructor connects once (in a
worker thread with its own event loop, so it works whether or not a loop runs here), migrates
the schema (``schema.migrate``; a newer one is refused before anything else happens) and
reserves the first block of queue positions. The connections that serve then open on first
use, on the caller's loop (``writer.GroupCommit``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from bridgehead.control.store.base import Store
from bridgehead.control.store.postgres.access import AccessTables
from bridgehead.control.store.postgres.agents import AgentTables
from bridgehead.control.store.postgres.jobs import JobTables
from bridgehead.control.store.postgres.records import RecordTables
from bridgehead.control.store.postgres.releases import ReleaseTables
from bridgehead.control.store.postgres.schedules import ScheduleTables
from bridgehead.control.store.postgres.schema import QUEUE_BLOCK, migrate
from bridgehead.control.store.postgres.sinks import SinkTables
from bridgehead.control.store.postgres.syncs import SyncTables
from bridgehead.core.errors import BridgeheadError

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
    JobTables, RecordTables, SyncTables, AgentTables, AccessTables, ScheduleTables, SinkTables, ReleaseTables, Store
):
    def __init__(self, url: str, password: str | None = None, schema: str = "public") -> None:
        """``url``: ``postgresql://user@host:port/database``; ``password`` apart (read from a
        secret by the caller); ``schema``: where the tables are (one per test, say)."""
        super().__init__(url, password, schema)
        self.url = display_url(url)
        first_block = _in_thread(self._prepare())
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


def _in_thread(work: Coroutine[Any, Any, int]) -> int:
    """Run the coroutine ``work`` to its end on a loop of its own in a worker thread: the caller
    may be a running loop's thread (an async test, a CLI command), which must not be re-entered."""
    outcome: list[int] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(asyncio.run(work))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="bridgehead-store-open")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
