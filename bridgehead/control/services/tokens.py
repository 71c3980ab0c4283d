"""API tokens: who is calling (checked against the store, remembered briefly), creating,
listing and revoking tokens, and the audit log that records what each one changed."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from bridgehead.control.auth import API_TOKEN_PREFIX, new_token, role_allows, token_hash
from bridgehead.control.config import ControlConfig
from bridgehead.control.services.errors import Forbidden, NotFound, Unauthenticated
from bridgehead.control.services.requests import ApiTokenRequest
from bridgehead.control.services.views import token_view
from bridgehead.control.store.base import Store
from bridgehead.control.store.rows import Actor, json_size

# How long a token's role is remembered without asking the store; a revocation through the API
# clears the memory, one through the CLI (another process) is noticed by the store's
# ``external_changes`` on the next request, and an expiry by the ``expires_at`` kept here.
TOKEN_CACHE_S = 5.0
# A token's ``last_used_at`` is written at most this often (not a write per request).
LAST_USED_EVERY_S = 60.0
# Beyond this many tokens (or token ids) remembered, the memory starts again empty.
MAX_REMEMBERED = 10_000


@dataclasses.dataclass
class _CachedToken:
    actor: Actor
    expires_at: float | None  # the token's own expiry (epoch seconds)
    fresh_until: float  # monotonic
    changes: int  # the store's external_changes() when it was read


class TokenService:
    def __init__(self, config: ControlConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self._token_cache: dict[str, _CachedToken] = {}
        self._last_used: dict[str, float] = {}  # token id -> monotonic time last_used_at was written

    async def authorize(self, token: str, needed: str) -> Actor:
        """The token's holder (for the audit log), if its role allows ``needed``:
        ``Unauthenticated`` for an unknown, revoked or expired token, ``Forbidden`` for too
        low a role."""
        now = time.monotonic()
        wall = time.time()
        # A short cache keeps the hot path off the hash and the token table. Keyed by the token
        # itself: it lives in this process's memory only.
        changes = self.store.external_changes()
        cached = self._token_cache.get(token)
        if (
            cached is None
            or cached.fresh_until <= now
            or cached.changes != changes
            or (cached.expires_at is not None and cached.expires_at <= wall)
        ):
            row = await self.store.api_token(token_hash(token))
            if row is None:
                raise Unauthenticated("unknown API token")
            if row.revoked_at is not None:
                raise Unauthenticated(f"API token {row.id} was revoked", code="token_revoked")
            if row.expires_at is not None and row.expires_at <= wall:
                raise Unauthenticated(f"API token {row.id} has expired", code="token_expired")
            if len(self._token_cache) > MAX_REMEMBERED:
                self._token_cache.clear()
            cached = _CachedToken(Actor(row.id, row.name, row.role), row.expires_at, now + TOKEN_CACHE_S, changes)
            self._token_cache[token] = cached
        actor = cached.actor
        if self._last_used.get(actor.id, -LAST_USED_EVERY_S) + LAST_USED_EVERY_S <= now:
            if len(self._last_used) > MAX_REMEMBERED:
                self._last_used.clear()
            self._last_used[actor.id] = now
            self.store.api_token_used(actor.id, wall)  # joins this turn's commit; nothing waits
        if not role_allows(actor.role, needed):
            raise Forbidden(f"this token's role is {actor.role!r}; this call needs {needed!r} or higher")
        return actor

    async def list(self) -> dict[str, Any]:
        return {"tokens": [token_view(t) for t in await self.store.api_tokens()]}

    async def create(self, body: ApiTokenRequest, actor: Actor) -> dict[str, Any]:
        """A new token; its secret is in this answer only (the store keeps its hash)."""
        secret = new_token(API_TOKEN_PREFIX)
        now = time.time()
        expires_at = now + body.ttl_s if body.ttl_s is not None else None
        hashed = token_hash(secret)
        await self.store.add_api_token(hashed, body.role, body.name, now, expires_at)
        token = await self.store.api_token(hashed)
        assert token is not None  # noqa: S101 - just written in this process
        await self.store.audit(
            actor,
            "api_token.create",
            {"token": token.id, "role": body.role, "name": body.name, "ttl_s": body.ttl_s},
            now,
        )
        return {**token_view(token), "token": secret}

    async def revoke(self, token_id: str, actor: Actor) -> dict[str, Any]:
        now = time.time()
        token = await self.store.revoke_api_token(token_id, now)
        if token is None:
            raise NotFound(f"no unrevoked API token {token_id!r}", code="token_not_found")
        self._token_cache.clear()  # refused from the next request on, in this process too
        await self.store.audit(actor, "api_token.revoke", {"token": token.id, "name": token.name}, now)
        return token_view(token)

    async def audit_log(
        self,
        after: int,
        limit: int,
        actor: str | None,
        action: str | None,
        since: float | None,
        until: float | None,
    ) -> dict[str, Any]:
        """The audit log, oldest first: page with ``after`` (the ``next`` of the last page)."""
        max_bytes = self.config.server.max_page_bytes
        rows = await self.store.audit_log(after, limit, actor, action, since, until, max_bytes)
        entries = [dataclasses.asdict(r) for r in rows]
        more = len(rows) == limit or sum(json_size(r.detail) for r in rows) >= max_bytes
        return {"entries": entries, "next": rows[-1].id if rows and more else None}
