"""Which store the control planes of the integration tests run on.

``BRIDGEHEAD_TEST_STORE=postgresql`` runs every ``ControlPlane`` the harness starts on a fresh
PostgreSQL database of its own (on the server of ``postgres.POSTGRES_URL``), unless its test
configured a ``[store]`` itself; unset (or ``sqlite``), they keep the embedded default.
``scripts/test`` runs the integration suite's core a second time that way.

A database is made with its ``ControlPlane`` (so that a token the test makes before the first
start already lands in it) and dropped when that object is collected, or at the latest when
the test process exits: never at ``stop()``, since tests stop a control plane and start it
again on the same data, which on PostgreSQL is the same database.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import weakref

import asyncpg

STORE_ENV = "BRIDGEHEAD_TEST_STORE"
STORES = ("sqlite", "postgresql")


def chosen() -> str:
    """The store the environment asks for (``sqlite`` when it asks for none)."""
    store = os.environ.get(STORE_ENV, "").strip().lower() or "sqlite"
    if store not in STORES:
        raise ValueError(f"{STORE_ENV}={store!r}: one of {', '.join(STORES)}")
    return store


def on_postgresql() -> bool:
    return chosen() == "postgresql"


def configures_store(extra_config: str) -> bool:
    """Whether a test's config already says where its store is."""
    return any(line.strip() == "[store]" for line in extra_config.splitlines())


def _server_url() -> str:
    # Imported here: the harness, which imports this module, also runs without pytest (the
    # demo, the benches), and ``postgres`` imports it.
    from bridgehead_testing.postgres import POSTGRES_URL

    return POSTGRES_URL


def _admin(sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(_server_url(), timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    # In a thread of its own: async tests build control planes on their running loop.
    failure: list[BaseException] = []

    def in_thread() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=in_thread, name="test-database")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _drop(name: str) -> None:
    # FORCE: a control plane a failed test left running must not keep its database alive.
    try:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    except (OSError, asyncpg.PostgresError, TimeoutError, RuntimeError):
        pass  # at exit, or the server is gone: nothing more to do for a test database


class TestDatabase:
    """A database made now on the tests' PostgreSQL server, dropped with ``owner``."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, owner: object) -> None:
        self.name = f"bh_cp_{secrets.token_hex(6)}"
        _admin(f"CREATE DATABASE {self.name}")
        self.url = _server_url().rsplit("/", 1)[0] + "/" + self.name
        # When the owner is collected, or at exit (weakref.finalize runs then too).
        self._finalizer = weakref.finalize(owner, _drop, self.name)

    def store_config(self) -> str:
        """The ``[store]`` table that puts a control plane on this database."""
        return f'\n[store]\nbackend = "postgresql"\ndatabase = "{self.url}"\n'

    def drop(self) -> None:
        self._finalizer()


def store_for(owner: object, extra_config: str) -> tuple[str, TestDatabase | None]:
    """``extra_config`` with the store the environment asks for (and its database, if one was
    made for it)."""
    if not on_postgresql() or configures_store(extra_config):
        return extra_config, None
    database = TestDatabase(owner)
    return extra_config + database.store_config(), database
