"""The private PostgreSQL server of the outage tests (``bridgehead_testing.pg_server``) itself:
it starts, answers, stops, starts again on the same port with its data, and survives a kill."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest
from bridgehead_testing.pg_server import PgServer


@pytest.fixture
def server() -> Iterator[PgServer]:
    with PgServer() as pg:
        yield pg


def query(url: str, sql: str) -> object:
    """The first value of the last of ``sql``'s statements (separated by '; ')."""

    async def run() -> object:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            *before, last = sql.split("; ")
            for statement in before:
                await conn.execute(statement)
            return await conn.fetchval(last)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_stop_and_start_keep_the_port_and_the_data(server: PgServer) -> None:
    """A row written before a fast shutdown is there after the restart, on the same URL."""
    server.start()
    url = server.url()
    query(url, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
    server.stop()
    assert not server.running
    with pytest.raises(OSError):  # down means down: nothing listens on its port
        query(url, "SELECT 1")
    server.start()
    assert (url, 42) == (server.url(), query(url, "SELECT n FROM kept"))


def test_kill9_takes_every_backend_and_the_next_start_recovers(server: PgServer) -> None:
    """SIGKILL of the whole server, then a start: crash recovery keeps what was committed."""
    server.start()
    query(server.url(), "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
    server.kill9()
    server.start()
    assert 7 == query(server.url(), "SELECT n FROM kept")


def test_cleanup_removes_everything() -> None:
    pg = PgServer().start()
    root = pg.root
    pg.cleanup()
    assert not root.exists() and not pg.running


def test_a_standby_follows_its_primary_and_takes_writes_once_promoted(server: PgServer) -> None:
    """The replica answers read-only with the primary's data; promoted, it takes writes."""
    server.start()
    query(server.url(), "CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)")
    with PgServer(replica_of=server) as standby:
        standby.start()
        assert (True, 1) == (
            query(standby.url(), "SELECT pg_is_in_recovery()"),
            query(standby.url(), "SELECT n FROM kept"),
        )
        server.kill9()
        standby.stop()
        standby.move_to(server.port)  # the primary's address, as a failover moves it
        standby.start()
        standby.promote()
        assert False is query(server.url(), "SELECT pg_is_in_recovery()")
        assert 2 == query(server.url(), "INSERT INTO kept VALUES (2); SELECT count(*) FROM kept")
