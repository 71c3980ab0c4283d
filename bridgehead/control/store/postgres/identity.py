"""The shared identity's rows (migration 4, ``schema_identity``), read and written by a node
as it starts, in one transaction holding an advisory lock: two nodes starting at once on an
empty database publish one identity between them, and the second takes it
(``bridgehead.control.nodes.shared_identity`` decides what to do with the rows)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg

from bridgehead.control.store.postgres.writer import GroupCommit
from bridgehead.core.eventloop import run_apart

T = TypeVar("T")
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class StoredKey:
    """A job-signing key as the database holds it."""

    key_id: str
    public_json: bytes  # a SigningKey (bridgehead.protocol), JSON, as DIR/signing/KEYID.json
    sealed_private: bytes | None  # the PKCS#8 PEM, sealed; None when no secret was set
    current: bool


@dataclass(frozen=True)
class StoredIdentity:
    """The control plane's identity as the database holds it."""

    ca_pem: bytes
    ca_fingerprint: str
    sealed_ca_key: bytes | None  # the CA's PKCS#8 PEM, sealed; None when no secret was set
    kdf: str
    salt: bytes
    created_by: str  # the node that published it
    keys: tuple[StoredKey, ...]

    @property
    def current_key(self) -> str:
        return next((key.key_id for key in self.keys if key.current), "")


class IdentityDb:
    """The identity's rows, on one connection inside the locked transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def read(self) -> StoredIdentity | None:
        row = await self._conn.fetchrow(
            "SELECT ca_cert, ca_fingerprint, ca_key, kdf, salt, created_by FROM control_identity"
        )
        if row is None:
            return None
        keys = await self._conn.fetch(
            "SELECT key_id, public_key, private_key, current FROM control_signing_keys ORDER BY key_id"
        )
        return StoredIdentity(
            row["ca_cert"].encode(),
            row["ca_fingerprint"],
            row["ca_key"],
            row["kdf"],
            row["salt"],
            row["created_by"],
            tuple(StoredKey(k["key_id"], k["public_key"].encode(), k["private_key"], k["current"]) for k in keys),
        )

    async def insert(self, identity: StoredIdentity, now: float) -> None:
        await self._conn.execute(
            "INSERT INTO control_identity (ca_cert, ca_fingerprint, ca_key, kdf, salt, created_by, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            identity.ca_pem.decode(),
            identity.ca_fingerprint,
            identity.sealed_ca_key,
            identity.kdf,
            identity.salt,
            identity.created_by,
            now,
        )
        for key in identity.keys:
            await self.put_key(key, now)

    async def set_ca_key(self, sealed: bytes) -> None:
        await self._conn.execute("UPDATE control_identity SET ca_key = $1", sealed)

    async def put_key(self, key: StoredKey, now: float) -> None:
        """Add a key, or give a known one its sealed private half (a key's public half never
        changes: its id is a hash of it). The current flag is ``set_current``'s."""
        await self._conn.execute(
            "INSERT INTO control_signing_keys (key_id, public_key, private_key, current, added_at) "
            "VALUES ($1, $2, $3, false, $4) ON CONFLICT (key_id) DO UPDATE SET private_key = "
            "coalesce(control_signing_keys.private_key, excluded.private_key)",
            key.key_id,
            key.public_json.decode(),
            key.sealed_private,
            now,
        )
        if key.current:
            await self.set_current(key.key_id)

    async def set_current(self, key_id: str) -> None:
        await self._conn.execute(
            "UPDATE control_signing_keys SET current = false WHERE current AND key_id <> $1", key_id
        )
        await self._conn.execute("UPDATE control_signing_keys SET current = true WHERE key_id = $1", key_id)

    async def delete_key(self, key_id: str) -> None:
        await self._conn.execute("DELETE FROM control_signing_keys WHERE key_id = $1 AND NOT current", key_id)


class IdentityTables(GroupCommit):
    def with_identity(self, work: Callable[[IdentityDb], Awaitable[T]]) -> T:
        """Run ``work`` to its end, synchronously (the control plane builds its parts so): on
        a connection of its own, in one transaction holding the identity's advisory lock,
        on a loop of its own in a worker thread (the caller's thread may run a loop)."""
        from bridgehead.control.store.postgres.store import DatabaseUnreachable, display_url  # it imports us

        async def run() -> T:
            try:
                conn = await asyncpg.connect(
                    self._url, password=self._password, server_settings=self._settings(), timeout=CONNECT_TIMEOUT_S
                )
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                # As when the store opens: a start waits for a database that is away (recovery.py).
                raise DatabaseUnreachable(
                    f"{display_url(self._url)}: cannot connect to PostgreSQL for the control plane's identity: {exc}"
                ) from exc
            try:
                async with conn.transaction():
                    # Held to the commit: a node starting beside us waits, then reads what we wrote.
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.bridgehead_identity'))"
                    )
                    return await work(IdentityDb(conn))
            finally:
                await conn.close()

        return run_apart(run, "bridgehead-identity")
