"""Unit tests of the fair queues (bridgehead.control.dispatch.queues): who gets which job."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridgehead.control.dispatch.queues import FairQueues
from bridgehead.control.store.base import JobRow


@dataclass
class Agent:
    name: str
    plugins: set[str] = field(default_factory=lambda: {"echo", "sql"})
    credit: int = 100


def job(job_id: str, seq: int, plugin: str = "echo", cluster: str = "c1") -> JobRow:
    return JobRow(id=job_id, plugin=plugin, params={}, cluster=cluster, queue_seq=seq)


def drain(queues: FairQueues, cluster: str, agents: list[Agent]) -> list[tuple[str, str]]:
    """Hand out everything, spending one credit per job as the dispatcher does."""
    handed = []
    for agent, row in queues.assign(cluster, lambda: [a for a in agents if a.credit > 0]):
        agent.credit -= 1
        handed.append((agent.name, row.id))
    return handed


def test_oldest_job_first_across_plugins() -> None:
    """An agent with both plugins gets the cluster's jobs in submission order, whatever their plugin."""
    queues = FairQueues()
    for row in (job("a", 1, "sql"), job("b", 2), job("c", 3, "sql"), job("d", 4)):
        queues.add(row)
    assert ["a", "b", "c", "d"] == [j for _, j in drain(queues, "c1", [Agent("x")])]
    assert 0 == len(queues)


def test_agents_take_one_job_each_in_turn() -> None:
    """Two agents with credit share a burst one by one rather than the first taking all."""
    queues = FairQueues()
    for i in range(4):
        queues.add(job(f"j{i}", i))
    handed = drain(queues, "c1", [Agent("x"), Agent("y")])
    assert ["j0", "j1", "j2", "j3"] == [j for _, j in handed]
    assert 2 == sum(1 for name, _ in handed if name == "x")
    assert 2 == sum(1 for name, _ in handed if name == "y")


def test_the_first_turn_moves_along_between_rounds() -> None:
    """Who goes first rotates, so the first agent in the list is not always favoured."""
    queues = FairQueues()
    agents = [Agent("x"), Agent("y")]
    queues.add(job("j1", 1))
    first = drain(queues, "c1", agents)
    queues.add(job("j2", 2))
    second = drain(queues, "c1", agents)
    assert first[0][0] != second[0][0]


def test_an_agent_gets_only_plugins_it_has_and_credit_limits_it() -> None:
    """A job waits for an agent with its plugin; an agent out of credit takes nothing more."""
    queues = FairQueues()
    queues.add(job("s", 1, "sql"))
    queues.add(job("e1", 2))
    queues.add(job("e2", 3))
    echo_only = Agent("x", plugins={"echo"}, credit=1)
    assert [("x", "e1")] == drain(queues, "c1", [echo_only])
    assert {"s", "e2"} == set(queues.queued)


def test_clusters_do_not_share_jobs() -> None:
    queues = FairQueues()
    queues.add(job("other", 1, cluster="c2"))
    assert [] == drain(queues, "c1", [Agent("x")])
    assert [("x", "other")] == drain(queues, "c2", [Agent("x")])


def test_a_retry_keeps_its_place_in_line() -> None:
    """A job requeued after newer ones were queued goes back to where it was, not to the end."""
    queues = FairQueues()
    queues.add(job("new1", 5))
    queues.add(job("new2", 6))
    queues.add(job("retried", 2))
    assert ["retried", "new1", "new2"] == [j for _, j in drain(queues, "c1", [Agent("x")])]


def test_remove_takes_a_job_out_once() -> None:
    queues = FairQueues()
    row = job("a", 1)
    queues.add(row)
    assert "a" in queues
    assert queues.remove(row)
    assert not queues.remove(row)
    assert [] == drain(queues, "c1", [Agent("x")])
