"""``bridgehead.control.recovery`` in pieces: its backoff, which failures it waits out, and the
exits it keeps where it does not recover (the outage itself: tests/integration/test_pg_outage.py)."""

from __future__ import annotations

import random
import subprocess
import sys

import asyncpg
import pytest
from bridgehead_testing.harness import free_port
from bridgehead_testing.postgres import POSTGRES_URL

from bridgehead.control import recovery
from bridgehead.control.config import StoreSection
from bridgehead.control.store.postgres.store import DatabaseUnreachable


def test_backoff_doubles_up_to_its_cap_each_delay_from_the_upper_half() -> None:
    backoff = recovery.Backoff(0.5, 5.0, random.Random(7))
    ceilings = [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    for ceiling in ceilings:
        assert ceiling / 2 <= backoff.next() <= ceiling


def unreachable_from(cause: BaseException) -> bool:
    try:
        raise DatabaseUnreachable("postgresql://x@h/db: cannot connect") from cause
    except DatabaseUnreachable as exc:
        return recovery.unreachable(exc)


def test_a_database_away_is_waited_for_and_a_wrong_configuration_is_not() -> None:
    assert unreachable_from(ConnectionRefusedError(111, "refused"))
    assert unreachable_from(TimeoutError())
    assert unreachable_from(asyncpg.CannotConnectNowError("the database system is starting up"))
    assert recovery.unreachable(asyncpg.ConnectionDoesNotExistError("lost during migration"))
    assert not unreachable_from(asyncpg.InvalidPasswordError("password authentication failed"))
    assert not unreachable_from(asyncpg.InvalidCatalogNameError('database "nope" does not exist'))
    assert not recovery.unreachable(ValueError("a newer schema"))


def test_sqlite_opens_once_whatever_happens() -> None:
    calls: list[int] = []

    def open_store() -> int:
        calls.append(1)
        raise DatabaseUnreachable("not PostgreSQL's to wait for")

    with pytest.raises(DatabaseUnreachable):
        recovery.open_waiting(open_store, StoreSection(), None)
    assert 1 == len(calls)


def away() -> StoreSection:
    """A PostgreSQL store on a loopback port where nothing listens."""
    return StoreSection(backend="postgresql", database=f"postgresql://root@127.0.0.1:{free_port()}/db")


def test_wait_zero_gives_up_at_once_and_a_bounded_wait_gives_up_in_time() -> None:
    def open_store() -> int:
        raise DatabaseUnreachable("away")

    with pytest.raises(DatabaseUnreachable):
        recovery.open_waiting(open_store, away(), 0)
    with pytest.raises(recovery.DatabaseWaitOver, match="--database-wait 1"):
        recovery.open_waiting(open_store, away(), 1.0)


def test_the_probe_says_why_and_passes_on_a_live_primary() -> None:
    assert "ConnectionRefusedError" in recovery.probe(away())
    assert "" == recovery.probe(StoreSection(backend="postgresql", database=POSTGRES_URL))


def test_a_stop_request_ends_the_wait() -> None:
    assert not recovery.wait_for_database(away(), None, "testing", stopping=lambda: True)


def test_unarmed_a_fail_stop_still_exits_70() -> None:
    """SQLite (serve never arms it) or a dispatcher outside serve: exit 70, as always."""
    code = "from bridgehead.control.recovery import restart_or_exit; restart_or_exit()"
    assert 70 == subprocess.run([sys.executable, "-c", code], timeout=30).returncode
