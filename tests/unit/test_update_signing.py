"""Unit tests of a release's Ed25519 signature (bridgehead/agent/update/signing.py)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bridgehead.agent.update.errors import UpdateRefused
from bridgehead.agent.update.signing import release_message, sign_release, verify_release

SHA = hashlib.sha256(b"a release").hexdigest()


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_a_signed_release_verifies_against_its_key() -> None:
    """The signature of (version, hash) by the release key verifies with its raw public key."""
    key = Ed25519PrivateKey.generate()
    verify_release(raw(key), "2.0.0", SHA, sign_release(key, "2.0.0", SHA))


def test_the_message_is_domain_separated_and_names_version_and_hash() -> None:
    """The signed bytes start with a prefix of their own and hold the version and the hash."""
    assert b"bridgehead-release-v1\x002.0.0\x00" + SHA.encode() == release_message("2.0.0", SHA)


@pytest.mark.parametrize(
    ("version", "sha"),
    [("2.0.1", SHA), ("2.0.0", hashlib.sha256(b"another binary").hexdigest())],
    ids=["other-version", "other-hash"],
)
def test_a_signature_does_not_carry_over_to_another_version_or_hash(version: str, sha: str) -> None:
    """A signed binary cannot be replayed under another version, nor another binary under its version."""
    key = Ed25519PrivateKey.generate()
    with pytest.raises(UpdateRefused, match="does not match the pinned release key"):
        verify_release(raw(key), version, sha, sign_release(key, "2.0.0", SHA))


def test_a_tampered_signature_is_refused() -> None:
    """Flipping one bit of the signature makes it invalid."""
    key = Ed25519PrivateKey.generate()
    signature = bytearray(sign_release(key, "2.0.0", SHA))
    signature[10] ^= 0x01
    with pytest.raises(UpdateRefused, match="does not match"):
        verify_release(raw(key), "2.0.0", SHA, bytes(signature))


@pytest.mark.parametrize("signature", [b"", b"\x00" * 63, b"\x00" * 65], ids=["empty", "short", "long"])
def test_a_signature_of_the_wrong_length_is_refused(signature: bytes) -> None:
    """A malformed signature is a refusal, not a crash."""
    with pytest.raises(UpdateRefused):
        verify_release(raw(Ed25519PrivateKey.generate()), "2.0.0", SHA, signature)


def test_a_release_signed_by_another_key_is_refused() -> None:
    """Only the pinned key's signatures count."""
    pinned, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    with pytest.raises(UpdateRefused, match="does not match"):
        verify_release(raw(pinned), "2.0.0", SHA, sign_release(other, "2.0.0", SHA))


def test_a_pinned_key_that_is_not_32_bytes_is_refused_clearly() -> None:
    """A wrong key format says so."""
    with pytest.raises(UpdateRefused, match="not a raw 32-byte Ed25519 key"):
        verify_release(b"\x01" * 31, "2.0.0", SHA, b"\x00" * 64)


@pytest.mark.parametrize("version", ["", "../2.0", "2.0/x", "2.0\x00evil", ".hidden", "a" * 65])
def test_a_version_that_is_not_a_safe_name_cannot_be_signed(version: str) -> None:
    """Versions become path components: separators, NULs and dot-names are refused."""
    with pytest.raises(UpdateRefused, match="is not valid"):
        release_message(version, SHA)


@pytest.mark.parametrize("sha", ["", SHA.upper(), SHA[:-1], SHA + "0", "z" * 64])
def test_a_hash_that_is_not_lowercase_sha256_hex_is_refused(sha: str) -> None:
    """One spelling of the hash: the signed text is unambiguous."""
    with pytest.raises(UpdateRefused, match="not a SHA-256"):
        release_message("2.0.0", sha)
