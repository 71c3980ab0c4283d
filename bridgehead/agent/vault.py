"""The agent's local vault: named secrets, encrypted at rest in ``data_dir``.

    data_dir/vault.key    32 random bytes, the AES-256-GCM key; mode 0600, made by the first ``set``
    data_dir/vault.json   {"version": 1, "secrets": {NAME: {"set_at", "nonce", "ciphertext"}}}

Each entry is sealed with its own random 96-bit nonce and its name as associated data, so an
entry copied under another name does not open. Both files are written atomically (a
temporary file, fsync, rename), so a crash leaves the old vault or the new one. Listing
needs no key; reading a value does. ``cryptography``'s AEAD is imported on the first read or
write only: an idle agent whose config names no vault secret never loads it.

A ``[credentials.NAME]`` table refers to an entry with ``password_secret``, ``token_secret``
or ``passphrase_secret`` (bridgehead/agent/config.py). ``bridgehead-agent secret set|list|delete``
manage it (bridgehead/agent/cli.py).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from bridgehead.core.errors import BridgeheadError
from bridgehead.core.files import write_atomically

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VAULT_FILE = "vault.json"
KEY_FILE = "vault.key"
LOCK_FILE = "vault.lock"
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_KEY_BYTES = 32
_NONCE_BYTES = 12


class VaultError(BridgeheadError):
    """The vault cannot be used as asked (missing entry, missing or unsafe key, damaged file)."""

    exit_code = 2


class Entry(msgspec.Struct, forbid_unknown_fields=True):
    set_at: float
    nonce: str
    ciphertext: str


class VaultFile(msgspec.Struct, forbid_unknown_fields=True):
    version: int = 1
    secrets: dict[str, Entry] = {}


class Vault:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / VAULT_FILE
        self.key_path = data_dir / KEY_FILE

    def entries(self) -> dict[str, float]:
        """Each entry's name and when it was set (a Unix time); never a value."""
        return {name: entry.set_at for name, entry in sorted(self._load().secrets.items())}

    def get(self, name: str) -> str:
        entry = self._load().secrets.get(name)
        if entry is None:
            raise VaultError(
                f"no secret {name!r} in the vault {self.path}; add it with `bridgehead-agent secret set {name}`"
            )
        from cryptography.exceptions import InvalidTag  # lazily: see the module docstring

        try:
            plain = _aead(self._key(create=False)).decrypt(
                base64.b64decode(entry.nonce), base64.b64decode(entry.ciphertext), name.encode()
            )
        except (InvalidTag, ValueError):
            raise VaultError(
                f"secret {name!r} in {self.path} does not open with {self.key_path} (wrong key, or the entry was "
                "altered or copied from another name); set it again"
            ) from None
        return plain.decode()

    def set(self, name: str, value: str) -> None:
        check_name(name)
        if not value:
            raise VaultError(f"secret {name!r}: the value is empty")
        with self._locked():
            key = self._key(create=True)
            doc = self._load()
            nonce = os.urandom(_NONCE_BYTES)
            sealed = _aead(key).encrypt(nonce, value.encode(), name.encode())
            doc.secrets[name] = Entry(
                set_at=time.time(),
                nonce=base64.b64encode(nonce).decode("ascii"),
                ciphertext=base64.b64encode(sealed).decode("ascii"),
            )
            self._save(doc)

    def delete(self, name: str) -> None:
        with self._locked():
            doc = self._load()
            if doc.secrets.pop(name, None) is None:
                raise VaultError(f"no secret {name!r} in the vault {self.path}")
            self._save(doc)

    def _load(self) -> VaultFile:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return VaultFile()
        except OSError as exc:
            raise VaultError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            return msgspec.json.decode(data, type=VaultFile)
        except msgspec.DecodeError as exc:
            raise VaultError(f"{self.path} is damaged ({exc}); restore it from a backup") from None

    def _save(self, doc: VaultFile) -> None:
        write_atomically(self.path, msgspec.json.format(msgspec.json.encode(doc)) + b"\n")

    def _key(self, *, create: bool) -> bytes:
        try:
            if sys.platform != "win32":
                mode = self.key_path.stat().st_mode & 0o777
                if mode & 0o077:
                    raise VaultError(
                        f"{self.key_path} is readable by others (mode {mode:04o}); chmod 600 it, and consider "
                        "every secret in the vault disclosed"
                    )
            key = self.key_path.read_bytes()
        except FileNotFoundError:
            if not create:
                raise VaultError(
                    f"{self.key_path} is missing: the vault cannot be opened; restore the key from a backup, "
                    "or set every secret again"
                ) from None
            key = os.urandom(_KEY_BYTES)
            write_atomically(self.key_path, key)
        except OSError as exc:
            raise VaultError(f"cannot read {self.key_path}: {exc.strerror}") from None
        if len(key) != _KEY_BYTES:
            raise VaultError(f"{self.key_path} is not a vault key ({len(key)} bytes, not {_KEY_BYTES})")
        return key

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (two ``secret set`` at once must not lose one of them)."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if sys.platform == "win32":
            yield
            return
        import fcntl

        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise VaultError(f"secret name {name!r}: use 1-128 of letters, digits, '_', '.', '-'")


def _aead(key: bytes) -> AESGCM:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # lazily: see the module docstring

    return AESGCM(key)
