"""The release signature as the agent checks it: ``bridgehead.protocol.release_signing``, with
its refusals as the update's own error (``UpdateRefused``), so a caller handles one kind."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridgehead.agent.update.errors import UpdateRefused
from bridgehead.protocol import release_signing
from bridgehead.protocol.release_signing import ReleaseSignatureError

DOMAIN = release_signing.DOMAIN


def release_message(version: str, sha256_hex: str) -> bytes:
    try:
        return release_signing.release_message(version, sha256_hex)
    except ReleaseSignatureError as exc:
        raise UpdateRefused(str(exc)) from None


def sign_release(key: Ed25519PrivateKey, version: str, sha256_hex: str) -> bytes:
    return key.sign(release_message(version, sha256_hex))


def verify_release(public_key: bytes, version: str, sha256_hex: str, signature: bytes) -> None:
    """Return if ``signature`` is the release key's over (version, hash); else UpdateRefused."""
    try:
        release_signing.verify_release(public_key, version, sha256_hex, signature)
    except ReleaseSignatureError as exc:
        raise UpdateRefused(str(exc)) from None
