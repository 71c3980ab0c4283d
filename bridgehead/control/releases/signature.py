"""The release signature as the control plane checks it (uploads) and as the CLI makes it
(``release sign``, offline): the very scheme agents verify, ``bridgehead.protocol.release_signing``.

The control plane refuses a release whose signature the agents would refuse, so a tampered
binary or signature fails at upload with a clear answer rather than on every agent later.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridgehead.core.errors import BridgeheadError
from bridgehead.protocol.release_signing import ReleaseSignatureError, sign_release, verify_release

MAX_SIGNATURE_CHARS = 256  # UpdateOffer.signature's bound (an Ed25519 signature is 88 characters)


class BadSignature(BridgeheadError):
    """The signature is not the release key's over this version and hash."""

    code = "bad_signature"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def decode_signature(signature_b64: str) -> bytes:
    """The raw signature in ``signature_b64``; ``BadSignature`` if it is not base64 of 64 bytes."""
    try:
        raw = base64.b64decode(signature_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(signature_b64) > MAX_SIGNATURE_CHARS or len(raw) != 64:
        raise BadSignature(
            "the signature is not base64 of a 64-byte Ed25519 signature "
            "(as 'bridgehead-control release sign' prints it)"
        )
    return raw


def verify(public_key: bytes, version: str, sha256: str, signature_b64: str) -> None:
    """Return if ``signature_b64`` is the release key's over (``version``, ``sha256``), as an
    agent that pinned ``public_key`` would accept it; else ``BadSignature`` saying so."""
    raw = decode_signature(signature_b64)
    try:
        verify_release(public_key, version, sha256, raw)
    except ReleaseSignatureError:
        raise BadSignature(
            f"release {version}: the signature does not match the configured release key "
            f"([releases] public_key) and this binary: a tampered binary or signature, another version, "
            "or another key"
        ) from None


def sign(key: Ed25519PrivateKey, version: str, sha256: str) -> str:
    """The release key's signature over (``version``, ``sha256``), base64."""
    return base64.b64encode(sign_release(key, version, sha256)).decode()
