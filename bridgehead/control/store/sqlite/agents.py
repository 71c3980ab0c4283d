"""The SQLite store's agents: enrolment (checked against its token in one transaction),
certificates, revocation and what each agent last reported."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

from bridgehead.control.store.rows import Actor, AgentRow, EnrollmentGrant, EnrollmentRefused
from bridgehead.control.store.sql_rows import agent_row
from bridgehead.control.store.sqlite.access import audit_now
from bridgehead.control.store.sqlite.writer import GroupCommit


class AgentTables(GroupCommit):
    async def enroll_agent(self, grant: EnrollmentGrant, now: float) -> AgentRow | EnrollmentRefused:
        agent = grant.agent

        def op() -> AgentRow | EnrollmentRefused:
            row = self.db.execute(
                "SELECT cluster, expires_at, uses_left, replace_name FROM enrollment_tokens WHERE token_hash=?",
                (grant.token_hash,),
            ).fetchone()
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
            existing = self.db.execute("SELECT cluster, revoked_at FROM agents WHERE name=?", (agent.name,)).fetchone()
            if existing is not None and existing[1] is None and replace_name != agent.name:
                return EnrollmentRefused(
                    409,
                    "agent_exists",
                    f"agent {agent.name!r} is enrolled already (cluster {existing[0]!r}): choose another name, or "
                    f"have an admin revoke it ('bridgehead-control agent revoke {agent.name}') or make a token "
                    f"with '--replace {agent.name}'",
                )
            self.db.execute(
                "UPDATE enrollment_tokens SET uses_left=uses_left-1, used_at=?, used_by=? WHERE token_hash=?",
                (now, agent.name, grant.token_hash),
            )
            self.db.execute(
                "INSERT INTO agents (name, cluster, agent_id, public_key, enrolled_at, cert_expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET cluster=excluded.cluster, "
                "agent_id=excluded.agent_id, public_key=excluded.public_key, enrolled_at=excluded.enrolled_at, "
                "cert_expires_at=excluded.cert_expires_at, revoked_at=NULL",
                (agent.name, agent.cluster, agent.agent_id, agent.public_key, now, agent.cert_expires_at),
            )
            action = "agent.replace" if existing is not None else "agent.enroll"
            actor = Actor("enrollment-token", address=grant.address)
            audit_now(self.db, actor, action, {"agent": agent.name, "cluster": agent.cluster}, now)
            return agent

        return await self._write(op, isolated=True)

    def set_agent_certificate(self, name: str, expires_at: float) -> Awaitable[Any]:
        return self._write(
            lambda: self.db.execute("UPDATE agents SET cert_expires_at=? WHERE name=?", (expires_at, name))
        )

    async def revoke_agent(self, name: str, actor: Actor, now: float) -> bool:
        def op() -> bool:
            cursor = self.db.execute("UPDATE agents SET revoked_at=? WHERE name=? AND revoked_at IS NULL", (now, name))
            if cursor.rowcount:
                audit_now(self.db, actor, "agent.revoke", {"agent": name}, now)
            return cursor.rowcount == 1

        return await self._write(op)

    async def revoked_agents(self, since: float) -> list[str]:
        rows = self.db.execute("SELECT name FROM agents WHERE revoked_at >= ?", (since,)).fetchall()
        return [str(r[0]) for r in rows]

    async def get_agent(self, name: str) -> AgentRow | None:
        row = self.db.execute("SELECT * FROM agents WHERE name=?", (name,)).fetchone()
        return agent_row(row) if row else None

    async def list_agents(self, after: str = "", limit: int = -1) -> list[AgentRow]:
        rows = self.db.execute("SELECT * FROM agents WHERE name > ? ORDER BY name LIMIT ?", (after, limit))
        return [agent_row(r) for r in rows.fetchall()]

    def agent_seen(
        self, name: str, now: float, version: str, plugins: list[dict[str, Any]], connections: list[str]
    ) -> Awaitable[Any]:
        return self._write(
            lambda: self.db.execute(
                "UPDATE agents SET last_seen=?, version=?, plugins=?, connections=? WHERE name=?",
                (now, version, json.dumps(plugins), json.dumps(connections), name),
            )
        )

    def add_enrollment_token(
        self, token_hash: str, cluster: str, expires_at: float, now: float, uses: int = 1, replace: str | None = None
    ) -> Awaitable[Any]:
        return self._write(
            lambda: self.db.execute(
                "INSERT INTO enrollment_tokens (token_hash, cluster, expires_at, created_at, uses_left, replace_name) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (token_hash, cluster, expires_at, now, uses, replace),
            )
        )
