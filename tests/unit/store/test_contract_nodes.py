"""The ``NodeStore`` contract (``store.nodes``), on PostgreSQL, with two stores on one schema as
two nodes: claims never hand one attempt to two nodes, every write about an attempt is fenced
by the node holding it, adoption and take-over move attempts, and each node hears the
other's signals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from bridgehead_testing.postgres import POSTGRES_URL, postgres_admin
from store_contract import empty_schema, give_back, job

from bridgehead.control.store.postgres import PostgresStore
from bridgehead.control.store.postgres.nodes import CLAIM
from bridgehead.control.store.rows import Actor

Nodes = tuple[PostgresStore, PostgresStore]


@pytest.fixture
async def nodes() -> AsyncIterator[Nodes]:
    admin = await postgres_admin()
    schema = await empty_schema(admin)
    first = PostgresStore(POSTGRES_URL, schema=schema, node_id="n1")
    second = PostgresStore(POSTGRES_URL, schema=schema, node_id="n2")
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()
        try:
            await give_back(admin, schema)
        finally:
            await admin.close()


async def queue(store: PostgresStore, count: int, cluster: str = "c", plugin: str = "sql") -> list[str]:
    ids = [f"{cluster}-{plugin}-{i}" for i in range(count)]
    for job_id in ids:
        row = job(job_id, cluster=cluster)
        row.plugin = plugin
        await store.insert_job(row)
    return ids


async def test_claims_take_the_oldest_first_and_never_one_job_twice(nodes: Nodes) -> None:
    n1, n2 = nodes
    ids = await queue(n1, 40)
    first = await n1.claim_jobs("c", {"sql"}, "a1", 3, 100.0)
    assert [j.id for j in first] == ids[:3]
    assert {(j.state, j.attempt, j.agent) for j in first} == {("running", 1, "a1")}
    # Both nodes claiming at once, in small bites: together they take every job exactly once.
    bites = await asyncio.gather(
        *(node.claim_jobs("c", {"sql"}, agent, 4, 100.0) for _ in range(10) for node, agent in ((n1, "a1"), (n2, "a2")))
    )
    taken = [j.id for bite in bites for j in bite]
    assert sorted(taken) == sorted(ids[3:])
    assert await n2.claim_jobs("c", {"sql"}, "a2", 4, 100.0) == []


async def test_claims_keep_to_the_cluster_the_plugins_and_the_backoff(nodes: Nodes) -> None:
    n1, _n2 = nodes
    await queue(n1, 1, cluster="other")
    [ldap] = await queue(n1, 1, plugin="ldap")
    assert await n1.claim_jobs("c", {"sql"}, "a1", 5, 100.0) == []
    [claimed] = await n1.claim_jobs("c", {"sql", "ldap"}, "a1", 5, 100.0)
    assert claimed.id == ldap
    # A retry waits out its backoff: nobody claims it before not_before.
    await n1.requeue_job(ldap, "boom", "failed", not_before=200.0)
    assert await n1.claim_jobs("c", {"ldap"}, "a1", 5, 150.0) == []
    [again] = await n1.claim_jobs("c", {"ldap"}, "a1", 5, 200.0)
    assert (again.id, again.attempt) == (ldap, 2)


async def test_a_node_not_holding_an_attempt_changes_nothing_of_it(nodes: Nodes) -> None:
    n1, n2 = nodes
    [job_id] = await queue(n1, 1)
    await n1.claim_jobs("c", {"sql"}, "a1", 1, 100.0)
    assert await n2.append_records(job_id, 1, 1, [b'{"stale":1}']) is False
    assert await n2.finish_job(job_id, 1, "succeeded", None, None, 1, 101.0) is False
    await n2.mark_accepted(job_id, 1, True)
    await n2.requeue_job(job_id, "lost", "requeued by a node that does not hold it")
    held = await n1.get_job(job_id)
    assert held is not None
    assert (held.state, held.acked_seq, held.accepted) == ("running", 0, False)
    assert await n1.records(job_id, 1, 0, 10) == []
    # The holder's writes take effect.
    assert await n1.append_records(job_id, 1, 1, [b'{"n":1}']) is True
    assert await n1.finish_job(job_id, 1, "succeeded", None, None, 1, 102.0) is True
    assert [r for _seq, r in await n2.records(job_id, 1, 0, 10)] == [b'{"n":1}']


async def test_an_agent_that_moves_takes_its_attempts_with_it(nodes: Nodes) -> None:
    n1, n2 = nodes
    heard: list[list[str]] = []
    n1.on_signal(heard.append)
    await n1.listening()
    ids = await queue(n1, 2)
    await n1.claim_jobs("c", {"sql"}, "a1", 2, 100.0)
    await n1.append_records(ids[0], 1, 1, [b"1", b"2"])
    moved = await n2.adopt_agent_attempts("a1")
    assert sorted(j.id for j in moved) == ids
    assert {j.acked_seq for j in moved if j.id == ids[0]} == {2}  # where the agent resumes
    assert await n1.append_records(ids[0], 1, 3, [b"3"]) is False  # the old node is fenced out
    assert await n2.append_records(ids[0], 1, 3, [b"3"]) is True
    await asyncio.wait_for(_until(lambda: ["a:a1"] in heard), 5)


async def test_a_dead_nodes_attempts_are_taken_over_once(nodes: Nodes) -> None:
    n1, n2 = nodes
    ids = await queue(n1, 3)
    await n1.heartbeat("https://n1", "1.0", 50.0, 2)
    await n2.heartbeat("https://n2", "1.0", 50.0, 0)
    await n1.claim_jobs("c", {"sql"}, "a1", 3, 100.0)
    listed = {n.id: n for n in await n2.list_nodes()}
    assert (listed["n1"].running, listed["n1"].agents, listed["n1"].stopped_at) == (3, 2, None)
    taken, again = await asyncio.gather(n2.take_over_node("n1"), n2.take_over_node("n1"))
    assert sorted(j.id for j in taken + again) == ids  # each once
    listed = {n.id: n for n in await n2.list_nodes()}
    assert listed["n1"].stopped_at is not None and listed["n1"].running == 0
    assert listed["n2"].running == 3
    assert await n1.finish_job(ids[0], 1, "succeeded", None, None, 0, 101.0) is False


async def test_a_queued_job_is_ended_by_any_node_unless_a_claim_came_first(nodes: Nodes) -> None:
    n1, n2 = nodes
    first, second = await queue(n1, 2)
    assert await n2.finish_job(first, 0, "cancelled", "cancelled", "before it ran", 0, 100.0) is True
    assert await n1.claim_jobs("c", {"sql"}, "a1", 5, 100.0) != []  # takes the second only
    assert await n2.finish_job(second, 0, "cancelled", "cancelled", "too late", 0, 100.0) is False
    row = await n1.get_job(second)
    assert row is not None and (row.state, row.attempt) == ("running", 1)


async def test_each_node_hears_what_the_other_queues_and_ends(nodes: Nodes) -> None:
    n1, n2 = nodes
    heard: list[str] = []
    n2.on_signal(heard.extend)
    await n2.listening()
    [job_id] = await queue(n1, 1, cluster="east")
    await n1.claim_jobs("east", {"sql"}, "a1", 1, 100.0)
    await n1.finish_job(job_id, 1, "succeeded", None, None, 0, 101.0)
    await n1.request_cancel(job_id)
    await asyncio.wait_for(_until(lambda: {"q:east", f"f:{job_id}", f"c:{job_id}"} <= set(heard)), 5)


async def _until(predicate: object) -> None:
    assert callable(predicate)
    while not predicate():
        await asyncio.sleep(0.01)


async def test_only_changes_others_may_cache_count_as_external_changes(nodes: Nodes) -> None:
    """A busy node's hot path (claims, records, heartbeats, audit lines) makes no other node
    re-read its caches; a token made (or revoked) on it does."""
    n1, n2 = nodes
    await n2.listening()
    [job_id] = await queue(n1, 1)
    await asyncio.sleep(0.2)
    before = n2.external_changes()
    await n1.claim_jobs("c", {"sql"}, "a1", 1, 100.0)
    await n1.append_records(job_id, 1, 1, [b"1"])
    await n1.heartbeat("https://n1", "1.0", 50.0, 1)
    await n1.audit(Actor(id="cli"), "job.submit", {"id": job_id}, 100.0)
    await asyncio.sleep(0.3)
    assert n2.external_changes() == before
    await n1.add_api_token("h" * 64, "viewer", "ci", 100.0, None)
    await asyncio.wait_for(_until(lambda: n2.external_changes() > before), 5)


async def test_a_claim_neither_waits_for_nor_takes_what_another_nodes_open_claim_holds(nodes: Nodes) -> None:
    """Node 1's claim is still in its transaction (uncommitted) when node 2 claims: node 2
    skips the rows it holds, at once, and the two never share a job."""
    n1, n2 = nodes
    ids = await queue(n1, 6)
    held = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": n1._schema})  # noqa: SLF001
    try:
        async with held.transaction():
            rows = await held.fetch(CLAIM, "c", ["sql"], "a1", "n1", 100.0, 3)
            first = sorted(row[0] for row in rows)
            second = await asyncio.wait_for(n2.claim_jobs("c", {"sql"}, "a2", 3, 100.0), 5)
            assert sorted(j.id for j in second) == sorted(set(ids) - set(first))
    finally:
        await held.close()
