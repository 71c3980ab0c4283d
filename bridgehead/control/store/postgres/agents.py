"""The PostgreSQL store's agents: enrolment (checked against its token in one transaction, the
token's row locked, so two nodes cannot both spend its last use), certificates, revocation and
what each agent last reported."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

import asyncpg

from bridgehead.control.store.postgres.access import audit_now
from bridgehead.control.store.postgres.writer import GroupCommit
from bridgehead.control.store.rows import Actor, AgentRow, EnrollmentGrant, EnrollmentRefused
from bridgehead.control.store.sql_rows import agent_row

_AGENT = (
    "name, cluster, agent_id, public_key, enrolled_at, last_seen, version, plugins, connections, cert_expires_at, "
    "revoked_at"
)


class AgentTables(GroupCommit):
    node_id: str

    async def enroll_agent(self, grant: EnrollmentGrant, now: float) -> AgentRow | EnrollmentRefused:
        agent = grant.agent

        async def op(db: asyncpg.Connection) -> AgentRow | EnrollmentRefused:
            row = await db.fetchrow(
                "SELECT cluster, expires_at, uses_left, replace_name FROM enrollment_tokens WHERE token_hash=$1 "
                "FOR UPDATE",
                grant.token_hash,
            )
            if row is None:
                return EnrollmentRefused(401, "invalid_token", "unknown enrolment token")
            cluster, expires_at, uses_left, replace_name = row
            if uses_left <= 0:
                return EnrollmentRefused(401, "invalid_token", "enrolment token used up; create a new one")
            if expires_at <= now:
                return EnrollmentRefused(401, "invalid_token", "enrolment token expired; create a new one")
            if cluster != agent.cluster:
                return EnrollmentRefused(
                    403, "wrong_cluster", f"this token enrols into cluster {cluster!r}, not {agent.cluster!r}"
                )
            existing = await db.fetchrow("SELECT cluster, revoked_at FROM agents WHERE name=$1 FOR UPDATE", agent.name)
            if existing is not None and existing[1] is None and replace_name != agent.name:
                return EnrollmentRefused(
                    409,
                    "agent_exists",
                    f"agent {agent.name!r} is enrolled already (cluster {existing[0]!r}): choose another name, or "
                    f"have an admin revoke it ('bridgehead-control agent revoke {agent.name}') or make a token "
                    f"with '--replace {agent.name}'",
                )
            await db.execute(
                "UPDATE enrollment_tokens SET uses_left=uses_left-1, used_at=$1, used_by=$2 WHERE token_hash=$3",
                now,
                agent.name,
                grant.token_hash,
            )
            await db.execute(
                "INSERT INTO agents (name, cluster, agent_id, public_key, enrolled_at, cert_expires_at) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET cluster=excluded.cluster, "
                "agent_id=excluded.agent_id, public_key=excluded.public_key, enrolled_at=excluded.enrolled_at, "
                "cert_expires_at=excluded.cert_expires_at, revoked_at=NULL",
                agent.name,
                agent.cluster,
                agent.agent_id,
                agent.public_key,
                now,
                agent.cert_expires_at,
            )
            action = "agent.replace" if existing is not None else "agent.enroll"
            actor = Actor("enrollment-token", address=grant.address)
            await audit_now(db, actor, action, {"agent": agent.name, "cluster": agent.cluster}, now)
            return agent

        return await self._write(op)

    def set_agent_certificate(self, name: str, expires_at: float) -> Awaitable[Any]:
        async def op(db: asyncpg.Connection) -> None:
            await db.execute("UPDATE agents SET cert_expires_at=$1 WHERE name=$2", expires_at, name)

        return self._write(op)

    async def revoke_agent(self, name: str, actor: Actor, now: float) -> bool:
        async def op(db: asyncpg.Connection) -> bool:
            revoked = await db.fetchval(
                "UPDATE agents SET revoked_at=$1 WHERE name=$2 AND revoked_at IS NULL RETURNING 1", now, name
            )
            if revoked:
                await audit_now(db, actor, "agent.revoke", {"agent": name}, now)
            return bool(revoked)

        return await self._write(op)

    async def revoked_agents(self, since: float) -> list[str]:
        rows = await (await self._reads()).fetch("SELECT name FROM agents WHERE revoked_at >= $1", since)
        return [str(r[0]) for r in rows]

    async def get_agent(self, name: str) -> AgentRow | None:
        row = await (await self._reads()).fetchrow(
            f"SELECT {_AGENT} FROM agents WHERE name=$1",  # noqa: S608 - fixed column list
            name,
        )
        return agent_row(row) if row else None

    async def list_agents(self, after: str = "", limit: int = -1) -> list[AgentRow]:
        rows = await (await self._reads()).fetch(
            f"SELECT {_AGENT} FROM agents WHERE name > $1 ORDER BY name LIMIT $2",  # noqa: S608 - fixed column list
            after,
            None if limit < 0 else limit,
        )
        return [agent_row(r) for r in rows]

    def agent_seen(
        self, name: str, now: float, version: str, plugins: list[dict[str, Any]], connections: list[str]
    ) -> Awaitable[Any]:
        async def op(db: asyncpg.Connection) -> None:
            await db.execute(
                "UPDATE agents SET last_seen=$1, version=$2, plugins=$3, connections=$4, node=$6 WHERE name=$5",
                now,
                version,
                json.dumps(plugins),
                json.dumps(connections),
                name,
                self.node_id,  # its session is on this node now
            )

        return self._write(op)

    def add_enrollment_token(
        self, token_hash: str, cluster: str, expires_at: float, now: float, uses: int = 1, replace: str | None = None
    ) -> Awaitable[Any]:
        async def op(db: asyncpg.Connection) -> None:
            await db.execute(
                "INSERT INTO enrollment_tokens (token_hash, cluster, expires_at, created_at, uses_left, replace_name) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                token_hash,
                cluster,
                expires_at,
                now,
                uses,
                replace,
            )

        return self._write(op)
