"""Unit tests of job-offer signatures, the hello's signed bytes and key endorsements (bridgehead.protocol.signing)."""

from __future__ import annotations

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridgehead.protocol import Offer, SigningKey
from bridgehead.protocol.codec import decode_server_frame, encode
from bridgehead.protocol.signing import (
    OfferRefused,
    OfferSigner,
    OfferVerifier,
    b64,
    endorse,
    hello_bytes,
    key_id,
    raw_public,
)

NOW = 1_800_000_000.0
TTL = 300


def offer(**fields: object) -> Offer:
    base: dict[str, object] = {
        "job_id": "job-1",
        "attempt": 1,
        "plugin": "echo",
        "params": {"count": 2, "nested": {"b": [1, 2.5, "x"], "a": None}},
        "timeout_s": 30.0,
        "agent": "agent-1",
    }
    return Offer(**{**base, **fields})  # type: ignore[arg-type]


def published(key: Ed25519PrivateKey) -> SigningKey:
    return SigningKey(key_id(key.public_key()), b64(raw_public(key.public_key())))


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def verifier(key: Ed25519PrivateKey) -> OfferVerifier:
    return OfferVerifier({key_id(key.public_key()): key.public_key()}, "agent-1", max_skew_s=60)


def refusal(verifier: OfferVerifier, candidate: Offer, now: float = NOW) -> str:
    with pytest.raises(OfferRefused) as refused:
        verifier.check(candidate, now)
    return refused.value.code


def test_a_signed_offer_is_accepted(key: Ed25519PrivateKey, verifier: OfferVerifier) -> None:
    """An offer signed now by a pinned key, addressed to this agent, passes the check."""
    signed = OfferSigner(key, ttl_s=TTL).sign(offer(), NOW)

    verifier.check(signed, NOW)

    assert (int(NOW), int(NOW) + TTL, key_id(key.public_key())) == (signed.issued_at, signed.expires_at, signed.key_id)
    assert signed.signature


def test_a_signed_offer_survives_the_wire(key: Ed25519PrivateKey, verifier: OfferVerifier) -> None:
    """A signed offer encoded and decoded as a frame still verifies (an int timeout included)."""
    signed = OfferSigner(key).sign(offer(timeout_s=30), NOW)

    [decoded] = decode_server_frame(encode(signed), 1 << 20)

    assert isinstance(decoded, Offer)
    verifier.check(decoded, NOW)


def test_an_unsigned_offer_is_refused(verifier: OfferVerifier) -> None:
    """An offer without a signature is refused as unsigned."""
    assert "offer_unsigned" == refusal(verifier, offer())


def test_an_offer_signed_by_an_unknown_key_is_refused(verifier: OfferVerifier) -> None:
    """An offer signed by a key the agent never pinned is refused."""
    stranger = OfferSigner(Ed25519PrivateKey.generate()).sign(offer(), NOW)

    assert "offer_unknown_key" == refusal(verifier, stranger)


def test_an_offer_with_a_bad_signature_is_refused(key: Ed25519PrivateKey, verifier: OfferVerifier) -> None:
    """A pinned key id with a signature made by another key is refused as a bad signature."""
    signed = OfferSigner(key).sign(offer(), NOW)
    forged = OfferSigner(Ed25519PrivateKey.generate()).sign(offer(), NOW)

    assert "offer_bad_signature" == refusal(verifier, msgspec.structs.replace(signed, signature=forged.signature))
    assert "offer_bad_signature" == refusal(verifier, msgspec.structs.replace(signed, signature="not base64!"))


@pytest.mark.parametrize(
    "change",
    [
        {"params": {"count": 3, "nested": {"b": [1, 2.5, "x"], "a": None}}},
        {"params": {"count": 2, "nested": {"b": [1, 2.5, "y"], "a": None}}},
        {"attempt": 2},
        {"job_id": "job-2"},
        {"plugin": "sql"},
        {"timeout_s": 3000.0},
        {"expires_at": int(NOW) + 10 * TTL},
        # Unset, a run not safe to repeat would start before the attempt is durable.
        {"confirm_follows": True},
    ],
    ids=["params", "nested-params", "attempt", "job_id", "plugin", "timeout", "expiry", "confirm_follows"],
)
def test_a_tampered_offer_is_refused(
    key: Ed25519PrivateKey, verifier: OfferVerifier, change: dict[str, object]
) -> None:
    """Any signed field changed after signing breaks the signature."""
    signed = OfferSigner(key).sign(offer(), NOW)
    verifier.check(signed, NOW)  # premise: intact, it passes

    assert "offer_bad_signature" == refusal(verifier, msgspec.structs.replace(signed, **change))  # type: ignore[arg-type]


def test_an_expired_offer_is_refused(key: Ed25519PrivateKey, verifier: OfferVerifier) -> None:
    """An offer checked after its expiry plus the allowed skew is refused; within the skew it passes."""
    signed = OfferSigner(key, ttl_s=TTL).sign(offer(), NOW)

    verifier.check(signed, signed.expires_at + 59)
    assert "offer_expired" == refusal(verifier, signed, signed.expires_at + 61)
    assert "offer_expired" == refusal(verifier, signed, NOW + 86_400)


def test_an_offer_from_the_future_is_refused(key: Ed25519PrivateKey, verifier: OfferVerifier) -> None:
    """An offer issued beyond the allowed skew in the agent's future is not yet valid."""
    signed = OfferSigner(key).sign(offer(), NOW)

    verifier.check(signed, NOW - 59)
    assert "offer_not_yet_valid" == refusal(verifier, signed, NOW - 61)


def test_a_misaddressed_offer_is_refused(key: Ed25519PrivateKey, verifier: OfferVerifier) -> None:
    """A correctly signed offer for another agent is refused by this one."""
    signed = OfferSigner(key).sign(offer(agent="agent-2"), NOW)

    assert "offer_misaddressed" == refusal(verifier, signed)
    OfferVerifier(verifier.keys, "agent-2").check(signed, NOW)


def test_learn_pins_a_key_endorsed_by_a_trusted_key(key: Ed25519PrivateKey, verifier: OfferVerifier) -> None:
    """A successor endorsed by a pinned key (and its own successor, in any order) is pinned and then verifies offers."""
    second, third = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    endorsed_second = endorse(published(second), key)
    endorsed_third = endorse(published(third), second)
    later = OfferSigner(third).sign(offer(), NOW)
    assert "offer_unknown_key" == refusal(verifier, later)  # premise: not trusted yet

    learned = verifier.learn([endorsed_third, published(key), endorsed_second])

    assert [endorsed_second, endorsed_third] == learned
    verifier.check(later, NOW)
    assert [] == verifier.learn([endorsed_second, endorsed_third])


def test_learn_ignores_a_key_endorsed_by_an_unknown_key(verifier: OfferVerifier) -> None:
    """A key vouched for by a key the agent does not trust is not pinned."""
    outsider, newcomer = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    before = dict(verifier.keys)

    assert [] == verifier.learn([endorse(published(newcomer), outsider), published(outsider)])
    assert before == verifier.keys
    assert "offer_unknown_key" == refusal(verifier, OfferSigner(newcomer).sign(offer(), NOW))


def test_learn_ignores_a_forged_endorsement(key: Ed25519PrivateKey, verifier: OfferVerifier) -> None:
    """An endorsement that claims a trusted key but was signed by another is not pinned."""
    intruder, impostor = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    signed_by_intruder = endorse(published(impostor), intruder)
    claims_trusted = msgspec.structs.replace(signed_by_intruder, endorsed_by=key_id(key.public_key()))
    genuine = endorse(published(impostor), key)
    swapped_key = msgspec.structs.replace(genuine, public_key=published(intruder).public_key)
    before = dict(verifier.keys)

    assert [] == verifier.learn([claims_trusted, swapped_key])
    assert before == verifier.keys
    assert [genuine] == verifier.learn([genuine])  # premise: the genuine endorsement is accepted


def test_hello_bytes_bind_every_field() -> None:
    """The hello's signed bytes differ when the channel binding (or any other field) differs."""
    base = hello_bytes("nonce-0123456789abcdef", "agent-1", "default", "a" * 64)

    assert base == hello_bytes("nonce-0123456789abcdef", "agent-1", "default", "a" * 64)
    assert base != hello_bytes("nonce-0123456789abcdef", "agent-1", "default", "b" * 64)
    assert base != hello_bytes("nonce-0123456789abcdef", "agent-1", "default", "")
    assert base != hello_bytes("nonce-0123456789abcdeF", "agent-1", "default", "a" * 64)
    assert base != hello_bytes("nonce-0123456789abcdef", "agent-2", "default", "a" * 64)
    assert base != hello_bytes("nonce-0123456789abcdef", "agent-1", "other", "a" * 64)
