"""The control plane's job-signing keys (Ed25519), kept in ``DIR/signing``.

    DIR/signing/KEYID.key          a private key (PKCS#8 PEM, 0600)
    DIR/signing/KEYID.json         its public half, and the endorsement by the key it replaced
    DIR/signing/current            the id of the key that signs new offers

``rotate`` makes a new key endorsed by the current one and makes it current. Every session's
welcome carries the whole chain, so an agent learns the new key before the first offer signed
with it; old keys stay published (agents that were offline during a rotation follow the chain)
until an admin retires them (docs/security.md, "Rotating keys").
"""

from __future__ import annotations

from pathlib import Path

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridgehead.control.pki import PkiError
from bridgehead.core.files import ensure_private_dir, write_private
from bridgehead.protocol import SigningKey
from bridgehead.protocol.signing import b64, endorse, key_id, raw_public


class SigningKeys:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "signing"
        ensure_private_dir(self.dir)
        if not (self.dir / "current").exists():
            key = Ed25519PrivateKey.generate()
            self._save(key, SigningKey(key_id(key.public_key()), b64(raw_public(key.public_key()))))
            # Two processes starting at once: the first ``current`` wins, the other key is unused.
            write_private(self.dir / "current", key_id(key.public_key()).encode(), exclusive=True)
        self.reload()

    def _save(self, key: Ed25519PrivateKey, public: SigningKey) -> None:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_private(self.dir / f"{public.key_id}.key", pem)
        write_private(self.dir / f"{public.key_id}.json", msgspec.json.encode(public))

    def reload(self) -> None:
        self.current_id = (self.dir / "current").read_text().strip()
        published = [msgspec.json.decode(p.read_bytes(), type=SigningKey) for p in sorted(self.dir.glob("*.json"))]
        # The current key first, then its chain: easy to read in a welcome frame.
        self.published = sorted(published, key=lambda k: k.key_id != self.current_id)
        key = serialization.load_pem_private_key((self.dir / f"{self.current_id}.key").read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise PkiError(f"{self.dir / self.current_id}.key is not an Ed25519 key")
        self.current = key

    def public(self, key: str) -> SigningKey:
        for published in self.published:
            if published.key_id == key:
                return published
        raise PkiError(f"no signing key {key!r} in {self.dir}")

    def rotate(self) -> SigningKey:
        """A new current key, endorsed by the one it replaces."""
        key = Ed25519PrivateKey.generate()
        public = endorse(SigningKey(key_id(key.public_key()), b64(raw_public(key.public_key()))), self.current)
        self._save(key, public)
        write_private(self.dir / "current", public.key_id.encode())
        self.reload()
        return public

    def retire(self, key: str) -> None:
        """Stop publishing a replaced key (agents that already followed the chain keep it
        pinned; an agent that never saw its successor must then be enrolled again)."""
        if key == self.current_id:
            raise PkiError(f"{key} is the current signing key: rotate first")
        self.public(key)
        (self.dir / f"{key}.json").unlink()
        (self.dir / f"{key}.key").unlink(missing_ok=True)
        self.reload()
