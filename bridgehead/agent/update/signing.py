"""The signature of a release: Ed25519 over a domain-separated message naming the version and
the SHA-256 of the binary.

Signing the version with the hash means a signed binary cannot be replayed under another
version (a downgrade dressed as an upgrade), and the prefix means no other signature this
project makes (job offers, say) can ever be mistaken for a release's.
"""

from __future__ import annotations

import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bridgehead.agent.update.errors import UpdateRefused
from bridgehead.agent.update.layout import check_version

DOMAIN = b"bridgehead-release-v1\0"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _check_sha256(sha256_hex: str) -> str:
    if not isinstance(sha256_hex, str) or not _SHA256_HEX.fullmatch(sha256_hex):
        raise UpdateRefused(f"release hash {sha256_hex!r} is not a SHA-256 in lowercase hex")
    return sha256_hex


def release_message(version: str, sha256_hex: str) -> bytes:
    """The bytes a release key signs: ``bridgehead-release-v1\\0<version>\\0<sha256 hex>``."""
    return DOMAIN + check_version(version).encode() + b"\0" + _check_sha256(sha256_hex).encode()


def sign_release(key: Ed25519PrivateKey, version: str, sha256_hex: str) -> bytes:
    return key.sign(release_message(version, sha256_hex))


def verify_release(public_key: bytes, version: str, sha256_hex: str, signature: bytes) -> None:
    """Return if ``signature`` is the release key's over (version, hash); else UpdateRefused."""
    message = release_message(version, sha256_hex)
    try:
        key = Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise UpdateRefused(
            f"the pinned release key is not a raw 32-byte Ed25519 key ({len(public_key)} bytes)"
        ) from None
    try:
        key.verify(signature, message)
    except InvalidSignature:
        raise UpdateRefused(
            f"release {version}: the signature does not match the pinned release key "
            "(tampered signature, hash or version, or signed by another key)"
        ) from None
