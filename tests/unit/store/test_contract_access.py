"""The store contract, agents and access: enrolment grants, revocation, API tokens, audit."""

from __future__ import annotations

import asyncio

from store_contract import Reopen

from bridgehead.control.store.base import (
    CLI,
    TOKEN_ID_CHARS,
    Actor,
    AgentRow,
    EnrollmentGrant,
    EnrollmentRefused,
    Store,
)

TOKEN = "e" * 64


def grant(name: str = "a1", cluster: str = "c", token: str = TOKEN) -> EnrollmentGrant:
    return EnrollmentGrant(token, AgentRow(name, cluster, f"id-{name}", "key", 0.0), address="10.0.0.9")


def refusal(outcome: AgentRow | EnrollmentRefused) -> tuple[int, str]:
    assert isinstance(outcome, EnrollmentRefused), outcome
    return outcome.status, outcome.code


async def test_an_enrolment_spends_one_use_and_is_audited(store: Store) -> None:
    await store.add_enrollment_token(TOKEN, "c", expires_at=100.0, now=1.0)
    enrolled = await store.enroll_agent(grant(), 2.0)
    assert isinstance(enrolled, AgentRow)
    found = await store.get_agent("a1")
    assert found is not None and ("c", "id-a1", 2.0, None) == (
        found.cluster,
        found.agent_id,
        found.enrolled_at,
        found.revoked_at,
    )
    assert (401, "invalid_token") == refusal(await store.enroll_agent(grant("a2"), 3.0))  # used up
    (entry,) = await store.audit_log(0, 10)
    assert ("agent.enroll", "enrollment-token", "10.0.0.9", {"agent": "a1", "cluster": "c"}) == (
        entry.action,
        entry.actor,
        entry.address,
        entry.detail,
    )


async def test_a_refused_enrolment_spends_nothing(store: Store) -> None:
    await store.add_enrollment_token(TOKEN, "c", expires_at=100.0, now=1.0)
    assert (401, "invalid_token") == refusal(await store.enroll_agent(grant(token="f" * 64), 2.0))
    assert (403, "wrong_cluster") == refusal(await store.enroll_agent(grant(cluster="other"), 2.0))
    assert (401, "invalid_token") == refusal(await store.enroll_agent(grant(), 100.0))  # expired
    assert await store.get_agent("a1") is None
    assert [] == await store.audit_log(0, 10)
    assert isinstance(await store.enroll_agent(grant(), 2.0), AgentRow)


async def test_a_name_is_enrolled_again_only_once_revoked_or_replaced(store: Store) -> None:
    await store.add_enrollment_token(TOKEN, "c", expires_at=100.0, now=1.0, uses=3)
    await store.enroll_agent(grant(), 2.0)
    assert (409, "agent_exists") == refusal(await store.enroll_agent(grant(), 3.0))
    assert await store.revoke_agent("a1", CLI, 4.0)
    assert not await store.revoke_agent("a1", CLI, 4.5)  # revoked already
    assert not await store.revoke_agent("nobody", CLI, 4.5)
    assert ["a1"] == await store.revoked_agents(since=4.0)
    assert [] == await store.revoked_agents(since=4.1)
    assert isinstance(await store.enroll_agent(grant(), 5.0), AgentRow)
    found = await store.get_agent("a1")
    assert found is not None and (None, 5.0) == (found.revoked_at, found.enrolled_at)
    await store.add_enrollment_token("r" * 64, "c", expires_at=100.0, now=6.0, replace="a1")
    assert isinstance(await store.enroll_agent(grant(token="r" * 64), 7.0), AgentRow)
    actions = [e.action for e in await store.audit_log(0, 10)]
    assert ["agent.enroll", "agent.revoke", "agent.replace", "agent.replace"] == actions


async def test_agents_page_by_name_and_keep_what_they_report(store: Store) -> None:
    await store.add_enrollment_token(TOKEN, "c", expires_at=100.0, now=1.0, uses=3)
    for name in ("b", "c", "a"):
        await store.enroll_agent(grant(name), 2.0)
    await store.agent_seen("b", 3.0, "1.2", [{"name": "sql"}], ["db"])
    await store.set_agent_certificate("b", 50.0)
    assert ["a", "b", "c"] == [a.name for a in await store.list_agents()]
    (b,) = await store.list_agents(after="a", limit=1)
    assert (3.0, "1.2", [{"name": "sql"}], ["db"], 50.0) == (
        b.last_seen,
        b.version,
        b.plugins,
        b.connections,
        b.cert_expires_at,
    )


async def test_api_tokens_are_found_by_hash_and_revoked_by_id(store: Store) -> None:
    first, second = "1" * 64, "2" * 64
    await store.add_api_token(first, "admin", "ops", 1.0, expires_at=50.0)
    await store.add_api_token(second, "read", "dash", 2.0)
    token = await store.api_token(first)
    assert token is not None
    assert (first[:TOKEN_ID_CHARS], "ops", "admin", 50.0, None) == (
        token.id,
        token.name,
        token.role,
        token.expires_at,
        token.revoked_at,
    )
    assert await store.api_token("3" * 64) is None
    assert ["ops", "dash"] == [t.name for t in await store.api_tokens()]
    await store.api_token_used(token.id, 3.0)
    revoked = await store.revoke_api_token(token.id, 4.0)
    assert revoked is not None and 4.0 == revoked.revoked_at
    assert await store.revoke_api_token(token.id, 5.0) is None  # revoked already
    assert await store.revoke_api_token(first[:6], 5.0) is None  # not an id
    again = await store.api_token(first)
    assert again is not None and (3.0, 4.0) == (again.last_used_at, again.revoked_at)  # still found: revoked


async def test_external_changes_are_another_process_commits(store: Store, reopen: Reopen) -> None:
    seen = store.external_changes()
    await store.audit(CLI, "own", {}, 1.0)
    assert seen == store.external_changes()
    cli = reopen()  # the CLI, writing to the same store meanwhile
    await cli.add_api_token("9" * 64, "read", "x", 2.0)
    # PostgreSQL's notification reaches the listener a moment after the commit (SQLite reads
    # shared memory: at once); a second is far more than it takes, and never passes a miss.
    for _ in range(200):
        if seen != store.external_changes():
            break
        await asyncio.sleep(0.005)
    assert seen != store.external_changes()
    await store.audit(CLI, "own again", {}, 3.0)
    after = store.external_changes()
    await asyncio.sleep(0.05)  # our own commit's notification, had it counted, would be in by now
    assert after == store.external_changes()


async def test_the_audit_log_is_in_call_order_and_filters(store: Store) -> None:
    alice = Actor("t1", name="alice", role="admin", address="10.0.0.1")
    pending = [
        store.audit(alice, "job.submit", {"job": "1"}, 1.0),
        store.audit(CLI, "token.create", {"name": "x" * 100}, 2.0),
        store.audit(alice, "job.cancel", {"job": "1"}, 3.0),
    ]
    for write in pending:
        await write
    log = await store.audit_log(0, 10)
    assert ["job.submit", "token.create", "job.cancel"] == [e.action for e in log]
    assert log[0].id < log[1].id < log[2].id
    assert ("t1", "alice", "10.0.0.1", 1.0) == (log[0].actor, log[0].actor_name, log[0].address, log[0].at)
    assert ["job.cancel"] == [e.action for e in await store.audit_log(log[1].id, 10)]
    assert ["job.submit", "job.cancel"] == [e.action for e in await store.audit_log(0, 10, actor="alice")]
    assert ["job.submit", "job.cancel"] == [e.action for e in await store.audit_log(0, 10, actor="t1")]
    assert ["token.create"] == [e.action for e in await store.audit_log(0, 10, action="token.create")]
    assert ["token.create"] == [e.action for e in await store.audit_log(0, 10, since=2.0, until=3.0)]
    assert ["job.submit"] == [e.action for e in await store.audit_log(0, 1)]
    assert ["job.submit", "token.create"] == [e.action for e in await store.audit_log(0, 10, max_bytes=20)]
