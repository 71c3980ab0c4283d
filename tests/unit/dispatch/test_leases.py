"""Unit tests of lease bookkeeping (bridgehead.control.dispatch.leases), on a clock passed in."""

from __future__ import annotations

from bridgehead.control.dispatch.attempts import Live
from bridgehead.control.dispatch.leases import TIMEOUT_GRACE_S, Leases
from bridgehead.control.dispatch.links import AgentLink

LEASES = Leases(heartbeat_s=5.0, restart_grace_s=60.0)


def link(last_seen: float, closed: bool = False) -> AgentLink:
    def nothing(*_args: object) -> None: ...

    return AgentLink(
        name="a",
        cluster="c1",
        session_id="s",
        plugins={"echo"},
        credit=0,
        send=nothing,
        close=nothing,
        encode=lambda _m: b"",
        send_encoded=nothing,
        last_seen=last_seen,
        closed=closed,
    )


def live(started: float = 0.0, lease_expires: float = 10.0, timeout_s: float = 60.0) -> Live:
    return Live(
        job_id="j",
        cluster="c1",
        plugin="echo",
        attempt=1,
        agent="a",
        max_attempts=3,
        timeout_s=timeout_s,
        started=started,
        started_at=0.0,
        lease_expires=lease_expires,
    )


def test_a_lease_is_two_heartbeats_and_a_restart_grace_at_least_one_lease() -> None:
    assert 10.0 == LEASES.lease_s
    assert 60.0 == LEASES.grace_after_restart_s
    assert 10.0 == Leases(heartbeat_s=5.0, restart_grace_s=1.0).grace_after_restart_s


def test_an_agent_is_silent_after_one_lease_without_a_frame() -> None:
    assert not LEASES.silent(link(last_seen=100.0), now=110.0)
    assert LEASES.silent(link(last_seen=100.0), now=110.1)


def test_a_live_session_renews_the_lease() -> None:
    """While the holder is heard from, the lease moves with its last frame and holds."""
    attempt = live(started=90.0, lease_expires=10.0)
    assert LEASES.check(attempt, link(last_seen=95.0), now=100.0) is None
    assert 105.0 == attempt.lease_expires


def test_a_lease_lapses_without_a_live_holder() -> None:
    """A closed session (or none) renews nothing: past its expiry the attempt is lost."""
    attempt = live(lease_expires=10.0)
    assert LEASES.check(attempt, link(last_seen=95.0, closed=True), now=10.5) == "lost"
    assert LEASES.check(live(lease_expires=10.0), None, now=9.0) is None
    assert LEASES.check(live(lease_expires=10.0), None, now=10.5) == "lost"


def test_a_timeout_allows_its_grace_before_the_control_plane_steps_in() -> None:
    holder = link(last_seen=1000.0)
    assert LEASES.check(live(timeout_s=60.0), holder, now=60.0 + TIMEOUT_GRACE_S) is None
    assert LEASES.check(live(timeout_s=60.0), holder, now=60.1 + TIMEOUT_GRACE_S) == "timed_out"
