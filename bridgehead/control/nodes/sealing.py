"""Private keys sealed for the database: AES-256-GCM under a key derived from the admin's
secret (``[store] identity_secret_env`` / ``identity_secret_file``).

    sealed = nonce (12 bytes) || ciphertext || tag (16 bytes)

The key is scrypt(secret, salt) with the identity's own random salt (kept beside it, so two
deployments with one secret still get different keys, and a guess at a secret must be tried
per identity). The associated data names the table and column, and the signing key's id for
a signing key: a sealed value moved to another column or row does not open.
"""

from __future__ import annotations

import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

# Stored with the identity, so that a later release can derive with other costs and still
# open what this one sealed. 2**15 x 8: 32 MiB and about 0.1 s, once per node start.
KDF = "scrypt:n=32768,r=8,p=1"
_KDF = re.compile(r"^scrypt:n=(\d+),r=(\d+),p=(\d+)$")
SALT_BYTES = 16
NONCE_BYTES = 12
CONTEXT = b"bridgehead.identity.v1:"


class SealBroken(Exception):
    """A sealed value that does not open: the wrong secret, or a value altered or moved."""


def new_salt() -> bytes:
    return os.urandom(SALT_BYTES)


def derive_key(secret: bytes, salt: bytes, kdf: str = KDF) -> bytes:
    """The AES-256 key for ``secret`` under ``salt`` with the named KDF."""
    found = _KDF.match(kdf)
    if found is None:
        raise SealBroken(f"unknown key derivation {kdf!r} (made by a newer Bridgehead?)")
    n, r, p = (int(value) for value in found.groups())
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(secret)


class Sealer:
    """Seals and opens values with one derived key (derive once: scrypt is slow on purpose)."""

    def __init__(self, secret: bytes, salt: bytes, kdf: str = KDF) -> None:
        self._aead = AESGCM(derive_key(secret, salt, kdf))

    def seal(self, plain: bytes, where: str) -> bytes:
        """``plain`` encrypted and authenticated, bound to ``where`` (say ``table.column``)."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plain, CONTEXT + where.encode())

    def open(self, sealed: bytes, where: str) -> bytes:
        """What ``seal`` sealed for the same ``where``; SealBroken otherwise."""
        if len(sealed) < NONCE_BYTES + 16:
            raise SealBroken(f"{where}: the sealed value is truncated")
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], CONTEXT + where.encode())
        except InvalidTag:
            raise SealBroken(f"{where}: does not open with this secret") from None
