"""Unit tests of fencing (bridgehead.control.dispatch.fencing): which attempt may change a job."""

from __future__ import annotations

from bridgehead.control.dispatch.attempts import Live
from bridgehead.control.dispatch.fencing import answer_stale_completion, current, sync_state_to_keep
from bridgehead.control.store.base import JobRow
from bridgehead.protocol import SyncState


def live(attempt: int = 2, agent: str = "a", sync: str | None = None) -> Live:
    return Live(
        job_id="j",
        cluster="c1",
        plugin="ldap",
        attempt=attempt,
        agent=agent,
        max_attempts=3,
        timeout_s=60.0,
        started=0.0,
        started_at=0.0,
        sync=sync,
    )


def test_only_the_current_attempt_from_its_agent_is_current() -> None:
    running = {"j": live()}
    assert running["j"] is current(running, "a", "j", 2)
    assert current(running, "a", "j", 1) is None  # a stale attempt, requeued since
    assert current(running, "b", "j", 2) is None  # another agent's frame
    assert current(running, "a", "other", 2) is None  # no such running job


def test_a_resent_completion_of_a_stored_end_is_acknowledged_again() -> None:
    ended = JobRow(id="j", plugin="echo", params={}, cluster="c1", state="succeeded", attempt=2, agent="a")
    assert "complete_ack" == answer_stale_completion(ended, "a", 2)
    assert "abandon" == answer_stale_completion(ended, "a", 1)
    assert "abandon" == answer_stale_completion(ended, "b", 2)
    assert "abandon" == answer_stale_completion(None, "a", 2)
    running = JobRow(id="j", plugin="echo", params={}, cluster="c1", state="running", attempt=2, agent="a")
    assert "abandon" == answer_stale_completion(running, "a", 2)


def test_only_a_succeeded_run_of_the_sync_it_was_given_leaves_state() -> None:
    given = live(sync="people")
    state = SyncState(name="people", version=1)
    assert state == sync_state_to_keep(given, "succeeded", state)
    assert sync_state_to_keep(given, "failed", state) is None
    assert sync_state_to_keep(given, "succeeded", SyncState(name="admins")) is None
    assert sync_state_to_keep(live(sync=None), "succeeded", state) is None
