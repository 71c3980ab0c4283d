"""Unit tests of the attempt and retry policy (bridgehead.control.dispatch.attempts)."""

from __future__ import annotations

import pytest

from bridgehead.control.dispatch.attempts import Live, RetryPolicy, final_state, sync_name


def live(attempt: int = 1, max_attempts: int = 3, **fields: bool) -> Live:
    return Live(
        job_id="j",
        cluster="c1",
        plugin="echo",
        attempt=attempt,
        agent="a",
        max_attempts=max_attempts,
        timeout_s=60.0,
        started=0.0,
        started_at=0.0,
        **fields,
    )


POLICY = RetryPolicy()


def test_an_attempt_that_never_started_may_run_again() -> None:
    assert POLICY.may_retry(live(accepted=False))
    assert "retry" == POLICY.when_lost(live(accepted=False))


def test_a_started_attempt_runs_again_only_if_safe_to_repeat() -> None:
    """An accepted attempt of a plugin that is not safe to repeat may have had effects: it fails."""
    assert not POLICY.may_retry(live(accepted=True))
    assert "failed" == POLICY.when_lost(live(accepted=True))
    assert "the plugin is not safe to repeat" == POLICY.why_not(live(accepted=True))
    assert POLICY.may_retry(live(accepted=True, safe_to_repeat=True))


def test_no_retry_past_max_attempts() -> None:
    spent = live(attempt=3, max_attempts=3, safe_to_repeat=True)
    assert not POLICY.may_retry(spent)
    assert not POLICY.may_retry_refused(spent, retryable=True)
    assert "no attempts left" == POLICY.why_not(spent)


def test_a_cancel_request_stops_retries_and_wins_over_a_failure() -> None:
    cancelled = live(cancel_requested=True)
    assert not POLICY.may_retry(cancelled)
    assert not POLICY.may_retry_refused(cancelled, retryable=True)
    assert "cancelled" == POLICY.when_lost(cancelled)
    assert "cancelled" == final_state(cancelled, "failed")
    assert "succeeded" == final_state(cancelled, "succeeded")


def test_a_refusal_goes_elsewhere_only_if_retryable() -> None:
    """A refused offer never ran, so even an accepted-looking one may go again if retryable."""
    assert POLICY.may_retry_refused(live(accepted=True), retryable=True)
    assert not POLICY.may_retry_refused(live(), retryable=False)


@pytest.mark.parametrize(("attempt", "delay"), [(1, 0.5), (2, 1.0), (3, 2.0), (10, 30.0)])
def test_retry_delay_doubles_up_to_its_cap(attempt: int, delay: float) -> None:
    assert delay == POLICY.delay_s(attempt)


def test_a_sync_is_named_by_a_valid_sync_param_only() -> None:
    """Plugin-agnostic: ``params.sync`` names the sync; a name the offer could not carry names none."""
    assert "people" == sync_name({"mode": "sync", "sync": "people"})
    assert "people" == sync_name({"sync": "people"})
    assert sync_name({"sync": True}) is None
    assert sync_name({"sync": ""}) is None
    assert sync_name({"sync": "x" * 129}) is None
    assert sync_name({"count": 1}) is None
