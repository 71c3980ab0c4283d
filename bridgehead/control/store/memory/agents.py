"""The in-memory store's agents, API tokens and audit log (the contract: ``store.agents``,
``store.access``)."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

from bridgehead.control.store.access import TOKEN_ID_CHARS
from bridgehead.control.store.memory.state import ApiToken, EnrollmentToken, MemoryState, MemoryWrites, copied
from bridgehead.control.store.rows import (
    Actor,
    AgentRow,
    ApiTokenRow,
    AuditRow,
    EnrollmentGrant,
    EnrollmentRefused,
    json_size,
)


def audit_now(state: MemoryState, actor: Actor, action: str, detail: dict[str, Any], now: float) -> None:
    """Append to the audit log inside a write; the detail goes through JSON, as SQLite's does."""
    entry_id = state.audit[-1].id + 1 if state.audit else 1
    kept = json.loads(json.dumps(detail))
    state.audit.append(AuditRow(entry_id, now, actor.id, actor.name, actor.address, action, kept))


def _token_row(token: ApiToken) -> ApiTokenRow:
    return ApiTokenRow(
        token.token_hash[:TOKEN_ID_CHARS],
        token.name,
        token.role,
        token.created_at,
        token.expires_at,
        token.last_used_at,
        token.revoked_at,
    )


class AgentTables(MemoryWrites):
    def add_enrollment_token(
        self, token_hash: str, cluster: str, expires_at: float, now: float, uses: int = 1, replace: str | None = None
    ) -> Awaitable[None]:
        def op() -> None:
            if token_hash in self.state.enrollment_tokens:
                raise ValueError("enrolment token exists already")
            self.state.enrollment_tokens[token_hash] = EnrollmentToken(cluster, expires_at, now, uses, replace)

        return self._write(op)

    async def enroll_agent(self, grant: EnrollmentGrant, now: float) -> AgentRow | EnrollmentRefused:
        agent = grant.agent

        def op() -> AgentRow | EnrollmentRefused:
            token = self.state.enrollment_tokens.get(grant.token_hash)
            if token is None:
                return EnrollmentRefused(401, "invalid_token", "unknown enrolment token")
            if token.uses_left <= 0:
                return EnrollmentRefused(401, "invalid_token", "enrolment token used up; create a new one")
            if token.expires_at <= now:
                return EnrollmentRefused(401, "invalid_token", "enrolment token expired; create a new one")
            if token.cluster != agent.cluster:
                return EnrollmentRefused(
                    403, "wrong_cluster", f"this token enrols into cluster {token.cluster!r}, not {agent.cluster!r}"
                )
            existing = self.state.agents.get(agent.name)
            if existing is not None and existing.revoked_at is None and token.replace_name != agent.name:
                return EnrollmentRefused(
                    409,
                    "agent_exists",
                    f"agent {agent.name!r} is enrolled already (cluster {existing.cluster!r}): choose another name, "
                    f"or have an admin revoke it ('bridgehead-control agent revoke {agent.name}') or make a token "
                    f"with '--replace {agent.name}'",
                )
            token.uses_left, token.used_at, token.used_by = token.uses_left - 1, now, agent.name
            row = existing or AgentRow(agent.name, agent.cluster, agent.agent_id, agent.public_key, now)
            row.cluster, row.agent_id, row.public_key, row.enrolled_at = (
                agent.cluster,
                agent.agent_id,
                agent.public_key,
                now,
            )
            row.cert_expires_at, row.revoked_at = agent.cert_expires_at, None
            self.state.agents[agent.name] = row
            action = "agent.replace" if existing is not None else "agent.enroll"
            actor = Actor("enrollment-token", address=grant.address)
            audit_now(self.state, actor, action, {"agent": agent.name, "cluster": agent.cluster}, now)
            return agent

        return await self._write(op)

    def set_agent_certificate(self, name: str, expires_at: float) -> Awaitable[None]:
        def op() -> None:
            if name in self.state.agents:
                self.state.agents[name].cert_expires_at = expires_at

        return self._write(op)

    async def revoke_agent(self, name: str, actor: Actor, now: float) -> bool:
        def op() -> bool:
            agent = self.state.agents.get(name)
            if agent is None or agent.revoked_at is not None:
                return False
            agent.revoked_at = now
            audit_now(self.state, actor, "agent.revoke", {"agent": name}, now)
            return True

        return await self._write(op)

    async def revoked_agents(self, since: float) -> list[str]:
        return [a.name for a in self.state.agents.values() if a.revoked_at is not None and a.revoked_at >= since]

    async def get_agent(self, name: str) -> AgentRow | None:
        return copied(self.state.agents.get(name))

    async def list_agents(self, after: str = "", limit: int = -1) -> list[AgentRow]:
        names = sorted(n for n in self.state.agents if n > after)
        return [copied(self.state.agents[n]) for n in names[: limit if limit >= 0 else None]]

    def agent_seen(
        self, name: str, now: float, version: str, plugins: list[dict[str, Any]], connections: list[str]
    ) -> Awaitable[None]:
        plugins, connections = copied(plugins), list(connections)

        def op() -> None:
            agent = self.state.agents.get(name)
            if agent is not None:
                agent.last_seen, agent.version, agent.plugins, agent.connections = now, version, plugins, connections

        return self._write(op)


class AccessTables(MemoryWrites):
    def add_api_token(
        self, token_hash: str, role: str, name: str, now: float, expires_at: float | None = None
    ) -> Awaitable[None]:
        def op() -> None:
            if token_hash in self.state.api_tokens:
                raise ValueError("API token exists already")
            self.state.api_tokens[token_hash] = ApiToken(token_hash, role, name, now, expires_at)

        return self._write(op)

    async def api_token(self, token_hash: str) -> ApiTokenRow | None:
        token = self.state.api_tokens.get(token_hash)
        return _token_row(token) if token is not None else None

    async def api_tokens(self) -> list[ApiTokenRow]:
        return [_token_row(t) for t in sorted(self.state.api_tokens.values(), key=lambda t: t.created_at)]

    def _with_id(self, token_id: str) -> list[ApiToken]:
        return [t for t in self.state.api_tokens.values() if t.token_hash.startswith(token_id)]

    async def revoke_api_token(self, token_id: str, now: float) -> ApiTokenRow | None:
        if len(token_id) != TOKEN_ID_CHARS:
            return None

        def op() -> ApiTokenRow | None:
            tokens = [t for t in self._with_id(token_id) if t.revoked_at is None]
            for token in tokens:
                token.revoked_at = now
            return _token_row(tokens[0]) if tokens else None

        return await self._write(op)

    def api_token_used(self, token_id: str, now: float) -> Awaitable[None]:
        def op() -> None:
            for token in self._with_id(token_id):
                token.last_used_at = now

        return self._write(op)

    def audit(self, actor: Actor, action: str, detail: dict[str, Any], now: float) -> Awaitable[None]:
        return self._write(lambda: audit_now(self.state, actor, action, detail, now))

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
        out: list[AuditRow] = []
        size = 0
        for entry in self.state.audit:
            if entry.id <= after or (actor is not None and actor not in (entry.actor, entry.actor_name)):
                continue
            if (action is not None and entry.action != action) or (since is not None and entry.at < since):
                continue
            if until is not None and entry.at >= until:
                continue
            if 0 <= limit <= len(out):
                break
            out.append(copied(entry))
            size += json_size(entry.detail)
            if max_bytes is not None and size >= max_bytes:
                break
        return out
