"""The signature of an agent release: Ed25519 over a domain-separated message naming the
version and the SHA-256 of the binary. Shared by the agent (which verifies it against the key
pinned at enrolment), the control plane (which refuses at upload what agents would refuse) and
the release manager's CLI (which signs, offline).

Signing the version with the hash means a signed binary cannot be replayed under another
version (a downgrade dressed as an upgrade), and the prefix means no other signature this
project makes (job offers, say) can ever be mistaken for a release's.
"""

from __future__ import annotations

import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

DOMAIN = b"bridgehead-release-v1\0"
# A version names a directory on the agent: no separators, no "..", no dot first, bounded.
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ReleaseSignatureError(ValueError):
    """The terms or the signature of a release are not acceptable; the message says which."""


def is_release_version(version: object) -> bool:
    return isinstance(version, str) and bool(_VERSION.fullmatch(version)) and ".." not in version


def check_release_version(version: str) -> str:
    if not is_release_version(version):
        raise ReleaseSignatureError(
            f"release version {version!r} is not valid: 1-64 letters, digits, '.', '+', '_', '-', "
            "starting with a letter or digit"
        )
    return version


def release_message(version: str, sha256_hex: str) -> bytes:
    """The bytes a release key signs: ``bridgehead-release-v1\\0<version>\\0<sha256 hex>``."""
    if not isinstance(sha256_hex, str) or not _SHA256_HEX.fullmatch(sha256_hex):
        raise ReleaseSignatureError(f"release hash {sha256_hex!r} is not a SHA-256 in lowercase hex")
    return DOMAIN + check_release_version(version).encode() + b"\0" + sha256_hex.encode()


def sign_release(key: Ed25519PrivateKey, version: str, sha256_hex: str) -> bytes:
    return key.sign(release_message(version, sha256_hex))


def verify_release(public_key: bytes, version: str, sha256_hex: str, signature: bytes) -> None:
    """Return if ``signature`` is the release key's over (version, hash); else raise."""
    message = release_message(version, sha256_hex)
    try:
        key = Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise ReleaseSignatureError(
            f"the pinned release key is not a raw 32-byte Ed25519 key ({len(public_key)} bytes)"
        ) from None
    try:
        key.verify(signature, message)
    except InvalidSignature:
        raise ReleaseSignatureError(
            f"release {version}: the signature does not match the pinned release key "
            "(tampered signature, hash or version, or signed by another key)"
        ) from None
