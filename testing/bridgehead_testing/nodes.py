"""Several control-plane nodes on one PostgreSQL database, for the tests: a fresh database per
test, and the store section that puts a node on it with the shared identity's secret."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bridgehead_testing.harness import ControlPlane
from bridgehead_testing.postgres import POSTGRES_URL, postgres_admin

# The environment variable the nodes read the identity secret from (the test sets it).
IDENTITY_SECRET_ENV = "BH_TEST_IDENTITY_SECRET"  # noqa: S105 - a variable's name


def _admin(sql: str) -> None:
    async def run() -> None:
        conn = await postgres_admin()
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def fresh_database(prefix: str = "bh_nodes") -> Iterator[str]:
    """A database of its own on the test server, dropped afterwards; its URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    _admin(f"CREATE DATABASE {name}")
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def node_store(database: str) -> str:
    """The ``[store]`` section of a node on ``database``, sharing the identity sealed with the
    secret in ``IDENTITY_SECRET_ENV``."""
    return f'[store]\nbackend = "postgresql"\ndatabase = "{database}"\nidentity_secret_env = "{IDENTITY_SECRET_ENV}"\n'


def copy_identity(source: ControlPlane, target: ControlPlane) -> None:
    """Give ``target``'s data dir ``source``'s identity: its CA and signing keys, the files an
    admin copies to a new node (docs/operations.md, "One identity for several nodes")."""
    for part in ("tls/ca.key", "tls/ca.pem", "signing"):
        origin, copy = source.data_dir / part, target.data_dir / part
        copy.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if origin.is_dir():
            shutil.copytree(origin, copy)
        else:
            shutil.copy2(origin, copy)


@contextmanager
def running_nodes(
    workdir: Path, database: str, hosts: list[str], heartbeat_s: float = 1.0
) -> Iterator[list[ControlPlane]]:
    """One node per address in ``hosts`` on ``database``, each with a data dir of its own;
    the first starts alone, the others with its identity. Stopped afterwards."""
    nodes: list[ControlPlane] = []
    for i, host in enumerate(hosts):
        (workdir / f"node{i + 1}").mkdir()
        node = ControlPlane(workdir / f"node{i + 1}", heartbeat_s=heartbeat_s, extra_config=node_store(database))
        nodes.append(node.listen_on(host))
    try:
        nodes[0].start()
        for node in nodes[1:]:
            copy_identity(nodes[0], node)
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop()
