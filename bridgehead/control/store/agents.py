"""The agents part of the store contract: enrolment, certificates, revocation, last contact.

Enrolment is the one place where a check and a write must be one transaction (two nodes
enrolling with one single-use token must not both succeed): ``enroll_agent`` promises that.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable
from typing import Any

from bridgehead.control.store.rows import Actor, AgentRow, EnrollmentGrant, EnrollmentRefused


class AgentStore(abc.ABC):
    @abc.abstractmethod
    def add_enrollment_token(
        self, token_hash: str, cluster: str, expires_at: float, now: float, uses: int = 1, replace: str | None = None
    ) -> Awaitable[object]:
        """Keep an enrolment token (its hash) for ``cluster``: ``uses`` enrolments until
        ``expires_at``; with ``replace``, it may enrol over the enrolled agent of that name."""

    @abc.abstractmethod
    async def enroll_agent(self, grant: EnrollmentGrant, now: float) -> AgentRow | EnrollmentRefused:
        """In one transaction: check the token (known, unexpired, uses left, its cluster, the
        name free or revoked or the token made to replace it), spend one use, register the
        agent (over a revoked or replaced one: not revoked any more) and audit it
        (``agent.enroll`` or ``agent.replace``). A refusal spends and writes nothing."""

    @abc.abstractmethod
    def set_agent_certificate(self, name: str, expires_at: float) -> Awaitable[object]:
        """When the newest certificate issued to the agent expires."""

    @abc.abstractmethod
    async def revoke_agent(self, name: str, actor: Actor, now: float) -> bool:
        """Refuse the agent from now on (its name may then be enrolled again), audited in the
        same commit; False if unknown or revoked already."""

    @abc.abstractmethod
    async def revoked_agents(self, since: float) -> list[str]:
        """Names revoked at or after ``since`` (a running server polls what the CLI wrote)."""

    @abc.abstractmethod
    async def get_agent(self, name: str) -> AgentRow | None: ...

    @abc.abstractmethod
    async def list_agents(self, after: str = "", limit: int = -1) -> list[AgentRow]:
        """By name, after ``after``; at most ``limit`` (-1: all)."""

    @abc.abstractmethod
    def agent_seen(
        self, name: str, now: float, version: str, plugins: list[dict[str, Any]], connections: list[str]
    ) -> Awaitable[object]:
        """What the agent reported when it connected, and when."""
