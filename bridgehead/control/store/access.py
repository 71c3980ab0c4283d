"""The access part of the store contract: API tokens (kept as hashes) and the audit log."""

from __future__ import annotations

import abc
from collections.abc import Awaitable
from typing import Any

from bridgehead.control.store.rows import Actor, ApiTokenRow, AuditRow

# A token's public id: the start of its hash (48 bits; the secret cannot be derived from it).
TOKEN_ID_CHARS = 12


class AccessStore(abc.ABC):
    @abc.abstractmethod
    def add_api_token(
        self, token_hash: str, role: str, name: str, now: float, expires_at: float | None = None
    ) -> Awaitable[object]:
        """Keep a new token by its hash (a hash already kept fails the write)."""

    @abc.abstractmethod
    async def api_token(self, token_hash: str) -> ApiTokenRow | None:
        """The token with this hash, revoked and expired ones included."""

    @abc.abstractmethod
    async def api_tokens(self) -> list[ApiTokenRow]:
        """Every token, oldest first."""

    @abc.abstractmethod
    async def revoke_api_token(self, token_id: str, now: float) -> ApiTokenRow | None:
        """Revoke the unrevoked token with this id (``TOKEN_ID_CHARS`` long); None if none."""

    @abc.abstractmethod
    def api_token_used(self, token_id: str, now: float) -> Awaitable[object]:
        """When the token was last used."""

    @abc.abstractmethod
    def external_changes(self) -> int:
        """A number that changes whenever another process commits to the store: what a cache
        of tokens checks on every request to notice a revocation by the CLI at once.

        Synchronous on purpose: it must be a cheap local read the backend keeps up to date,
        not a round trip per request (SQLite: ``PRAGMA data_version``, a read of shared
        memory; PostgreSQL: a counter bumped by a LISTEN/NOTIFY listener, so a change shows a
        moment, milliseconds, after the other process's write resolved). It never changes for
        this store's own writes; a backend without other writers may return a constant."""

    @abc.abstractmethod
    def audit(self, actor: Actor, action: str, detail: dict[str, Any], now: float) -> Awaitable[object]:
        """Append an entry; entries get increasing ids in the order of these calls."""

    @abc.abstractmethod
    async def audit_log(
        self,
        after: int,
        limit: int,
        actor: str | None = None,
        action: str | None = None,
        since: float | None = None,
        until: float | None = None,
        max_bytes: int | None = None,
    ) -> list[AuditRow]:
        """Audit entries past id ``after``, oldest first; ``actor`` matches its id or name;
        ``since`` inclusive, ``until`` exclusive; with ``max_bytes``, stop once their details
        (``json_size``) reach it (at least one entry)."""
