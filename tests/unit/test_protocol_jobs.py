"""Unit tests of the job-level protocol (bridgehead.protocol.jobs) and the offer's sync state."""

from __future__ import annotations

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from bridgehead.protocol import Complete, HeldJob, Offer, Records, ResumeJob, SyncState
from bridgehead.protocol.codec import decode_server_frame, encode
from bridgehead.protocol.jobs import (
    HeldBy,
    RecordGap,
    check_completion,
    completion_ready,
    fresh_records,
    is_current,
    next_acked,
    resume_from,
    resume_verdict,
)
from bridgehead.protocol.signing import OfferRefused, OfferSigner, OfferVerifier, key_id, offer_bytes

NOW = 1_800_000_000.0


def records(seq: int, n: int) -> Records:
    return Records(job_id="j", attempt=1, seq=seq, records=[msgspec.Raw(b'{"n":%d}' % i) for i in range(seq, seq + n)])


def test_records_past_the_acked_seq_are_fresh() -> None:
    """A batch starting right after the acked seq is fresh in full."""
    assert [b'{"n":4}', b'{"n":5}'] == [bytes(r) for r in fresh_records("j", 1, 3, records(4, 2))]


def test_a_resent_batch_keeps_only_its_new_tail() -> None:
    """After a reconnect the agent re-sends from an older seq; only the records past the ack count."""
    assert [b'{"n":6}'] == [bytes(r) for r in fresh_records("j", 1, 5, records(3, 4))]
    assert [] == fresh_records("j", 1, 9, records(3, 4))


def test_a_batch_that_skips_ahead_is_a_gap() -> None:
    """Records starting past acked + 1 mean a frame was lost: the session must close."""
    with pytest.raises(RecordGap) as caught:
        fresh_records("j", 1, 3, records(5, 1))
    assert "record_gap" == caught.value.code


@given(st.integers(0, 50), st.integers(1, 50), st.integers(1, 20))
def test_fresh_records_continue_exactly_after_the_ack(acked: int, seq: int, n: int) -> None:
    """Whatever batch arrives, the records kept are numbered acked+1, acked+2, ... or it is a gap."""
    try:
        fresh = fresh_records("j", 1, acked, records(seq, n))
    except RecordGap:
        assert seq > acked + 1
        return
    assert [b'{"n":%d}' % i for i in range(acked + 1, seq + n)] == [bytes(r) for r in fresh]


def test_a_completion_must_follow_all_its_records() -> None:
    """A completion counting more (or fewer) records than were received is a gap."""
    check_completion("j", 1, 3, Complete(job_id="j", attempt=1, status="succeeded", record_count=3))
    with pytest.raises(RecordGap):
        check_completion("j", 1, 2, Complete(job_id="j", attempt=1, status="succeeded", record_count=3))


def test_only_the_current_attempt_of_its_own_agent_is_current() -> None:
    """Fencing: another attempt, another agent or no running attempt at all is not current."""
    holder = HeldBy(attempt=2, agent="a")
    assert is_current(holder, "a", 2)
    assert not is_current(holder, "a", 1)
    assert not is_current(holder, "b", 2)
    assert not is_current(None, "a", 2)


def test_resume_continues_only_the_current_unlost_attempt() -> None:
    """The welcome continues the current attempt from its acked seq and abandons anything else."""
    holder = HeldBy(attempt=2, agent="a")
    running = HeldJob(job_id="j", attempt=2, state="running", next_seq=9)
    assert ResumeJob(job_id="j", attempt=2, action="continue", acked_seq=5) == resume_verdict(holder, "a", running, 5)
    assert "abandon" == resume_verdict(holder, "b", running, 5).action
    assert "abandon" == resume_verdict(HeldBy(3, "a"), "a", running, 5).action
    lost = HeldJob(job_id="j", attempt=2, state="lost")
    assert "abandon" == resume_verdict(holder, "a", lost, 5).action


def test_the_agent_resumes_from_a_continue_and_drops_the_rest() -> None:
    assert 4 == resume_from(ResumeJob(job_id="j", attempt=1, action="continue", acked_seq=4))
    assert resume_from(ResumeJob(job_id="j", attempt=1, action="abandon")) is None
    assert resume_from(None) is None


@given(st.integers(0, 100), st.integers(-5, 200), st.integers(0, 100))
def test_acks_never_go_back_nor_past_what_was_produced(acked: int, seq: int, produced: int) -> None:
    """The agent's acked seq only grows, and never beyond its own record count."""
    produced = max(produced, acked)
    moved = next_acked(acked, seq, produced)
    if moved is None:
        assert seq <= acked
    else:
        assert acked <= moved <= produced
        assert moved == min(seq, produced)


def test_a_completion_waits_for_its_records_to_be_sent() -> None:
    assert not completion_ready(sent=2, record_count=3)
    assert completion_ready(sent=3, record_count=3)


def _signed(state: SyncState | None) -> tuple[Offer, OfferVerifier]:
    key = Ed25519PrivateKey.generate()
    offer = Offer(job_id="j", attempt=1, plugin="ldap", params={"sync": "people"}, timeout_s=30.0, agent="a")
    offer = msgspec.structs.replace(offer, sync_state=state)
    signed = OfferSigner(key).sign(offer, NOW)
    return signed, OfferVerifier({key_id(key.public_key()): key.public_key()}, "a")


def test_the_offer_signature_covers_its_sync_state() -> None:
    """A sync state changed in flight (an older watermark, say) fails the signature."""
    state = SyncState(name="people", version=3, watermark="w3", ids=b"\x01" * 16)
    signed, verifier = _signed(state)
    [received] = decode_server_frame(encode(signed), 1 << 20)
    assert isinstance(received, Offer) and state == received.sync_state
    verifier.check(received, NOW)
    forged = msgspec.structs.replace(received, sync_state=msgspec.structs.replace(state, watermark="w0"))
    with pytest.raises(OfferRefused) as caught:
        verifier.check(forged, NOW)
    assert "offer_bad_signature" == caught.value.code
    with pytest.raises(OfferRefused):
        verifier.check(msgspec.structs.replace(received, sync_state=None), NOW)


def test_an_offer_without_sync_state_signs_as_before_the_field() -> None:
    """Agents that predate ``offer.sync_state`` still verify every other offer."""
    signed, _ = _signed(None)
    legacy = msgspec.json.Encoder(order="sorted").encode(
        [
            "bridgehead.offer.v1",
            signed.job_id,
            signed.attempt,
            signed.plugin,
            signed.params,
            signed.timeout_s,
            signed.agent,
            signed.issued_at,
            signed.expires_at,
            signed.key_id,
        ]
    )
    assert legacy == offer_bytes(signed)
