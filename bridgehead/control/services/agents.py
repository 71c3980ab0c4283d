"""Agents: enrolment (a one-time token and a CSR for an identity), enrolment tokens, the
list of enrolled agents with their live state, and revoking one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from bridgehead.control.auth import ENROLLMENT_TOKEN_PREFIX, new_enrollment_token, token_hash
from bridgehead.control.config import ControlConfig
from bridgehead.control.pki import Authority, PkiError, fingerprint
from bridgehead.control.services.errors import Conflict, Forbidden, Invalid, NotFound, ServiceError, Unauthenticated
from bridgehead.control.services.ports import JobDispatcher
from bridgehead.control.services.requests import EnrollmentTokenRequest, EnrollRequest
from bridgehead.control.services.views import agent_view
from bridgehead.control.signing_keys import SigningKeys
from bridgehead.control.store.base import Store
from bridgehead.control.store.nodes import NodeStore
from bridgehead.control.store.rows import Actor, AgentRow, EnrollmentGrant, EnrollmentRefused

# The store says why it refused an enrolment with the status it would answer; its class here.
_REFUSALS: dict[int, type[ServiceError]] = {401: Unauthenticated, 403: Forbidden, 409: Conflict}


class AgentService:
    def __init__(
        self,
        config: ControlConfig,
        store: Store,
        dispatcher: JobDispatcher,
        authority: Authority,
        signing_keys: SigningKeys,
        trust_anchor: Callable[[], bytes],
        new_id: Callable[[], str],
    ) -> None:
        self.config = config
        self.store = store
        self.dispatcher = dispatcher
        self.authority = authority
        self.signing_keys = signing_keys
        self.trust_anchor = trust_anchor  # what agents pin and verify this server with
        self.new_id = new_id

    async def list(self, after: str, limit: int) -> list[dict[str, Any]]:
        """Enrolled agents by name; a full page may have more (ask with after=<last name>)."""
        agents = await self.store.list_agents(after, limit)
        # Several nodes: an agent whose session is on another live node is connected too.
        elsewhere: dict[str, str] = {}
        if isinstance(self.store, NodeStore):
            elsewhere = await self.store.agents_elsewhere(self.config.server.node_dead_after_s)
        return [agent_view(a, self.dispatcher.links.get(a.name), elsewhere.get(a.name)) for a in agents]

    async def revoke(self, name: str, actor: Actor) -> dict[str, Any]:
        """Refuse an agent from now on and end its session at once (it may be enrolled again)."""
        if not await self.store.revoke_agent(name, actor, time.time()):
            raise NotFound(f"no enrolled, unrevoked agent {name!r}", code="agent_not_found")
        self.dispatcher.disconnect(name, "the agent's identity was revoked")
        return {"name": name, "revoked": True}

    async def enroll(self, body: EnrollRequest, address: str) -> dict[str, Any]:
        """Trade a one-time enrolment token and a CSR for the agent's certificate."""
        secret = body.token.split(".", 1)[0]  # the pin part, if sent, is the agent's business
        if not secret.startswith(ENROLLMENT_TOKEN_PREFIX):
            raise Unauthenticated("not an enrolment token (they start with 'bhe_')", code="invalid_token")
        try:
            certificate, issued = self.authority.issue_agent(
                body.csr.encode(), body.agent, body.cluster, self.config.server.agent_cert_ttl_s
            )
        except PkiError as exc:
            raise Invalid(f"csr: {exc}", code="invalid_csr") from None
        agent = AgentRow(
            name=body.agent,
            cluster=body.cluster,
            agent_id=self.new_id(),
            public_key=issued.public_key,
            enrolled_at=time.time(),
            cert_expires_at=issued.not_after,
        )
        grant = EnrollmentGrant(token_hash(secret), agent, address=address)
        outcome = await self.store.enroll_agent(grant, time.time())
        if isinstance(outcome, EnrollmentRefused):
            raise _REFUSALS.get(outcome.status, Invalid)(outcome.message, code=outcome.code)
        # A replaced identity's session (if any) must not outlive its key.
        self.dispatcher.disconnect(body.agent, "the agent was enrolled again with a new key")
        return {
            "agent": agent.name,
            "cluster": agent.cluster,
            "agent_id": agent.agent_id,
            "certificate": certificate.decode(),
            "certificate_expires_at": issued.not_after,
            "server_ca": self.trust_anchor().decode(),
            "signing_keys": [msgspec.to_builtins(k) for k in self.signing_keys.published],
            # The release key's public half (base64; "" when self-update is off), pinned by the
            # agent: releases it installs later must be signed by it, whoever delivers them.
            "release_key": self.config.releases.public_key,
        }

    async def create_enrollment_token(self, body: EnrollmentTokenRequest, actor: Actor) -> dict[str, Any]:
        """A token that enrols agents into ``body.cluster``, pinned to this server's CA."""
        token, secret = new_enrollment_token(fingerprint(self.trust_anchor()))
        now = time.time()
        await self.store.add_enrollment_token(
            token_hash(secret), body.cluster, now + body.ttl_s, now, body.uses, body.replace
        )
        detail = {"cluster": body.cluster, "ttl_s": body.ttl_s, "uses": body.uses, "replace": body.replace}
        await self.store.audit(actor, "enrollment_token.create", detail, now)
        return {"token": token, "cluster": body.cluster, "expires_at": now + body.ttl_s}
