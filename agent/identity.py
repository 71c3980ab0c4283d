"""The agent's identity: an Ed25519 key pair it made itself, and what enrolment returned.

Kept in ``data_dir`` as ``agent.key`` (PKCS#8 PEM) and ``identity.json``, both readable by
the agent's user only. The private key never leaves the machine: the control plane keeps
the public half and checks the agent's signature over a fresh nonce at every connection.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import BridgeheadError

KEY_FILE = "agent.key"
IDENTITY_FILE = "identity.json"


class NotEnrolled(BridgeheadError):
    exit_code = 2


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class Identity:
    agent: str
    cluster: str
    agent_id: str
    key: Ed25519PrivateKey

    def sign(self, nonce: str) -> str:
        return base64.b64encode(self.key.sign(nonce.encode())).decode()

    @property
    def public_key(self) -> str:
        return public_key_b64(self.key)


def public_key_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def save_identity(data_dir: Path, key: Ed25519PrivateKey, agent: str, cluster: str, agent_id: str) -> None:
    ensure_private_dir(data_dir)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_private(data_dir / KEY_FILE, pem)
    doc = {"agent": agent, "cluster": cluster, "agent_id": agent_id}
    _write_private(data_dir / IDENTITY_FILE, json.dumps(doc, indent=2).encode())


def load_identity(data_dir: Path) -> Identity:
    try:
        doc = json.loads((data_dir / IDENTITY_FILE).read_text())
        pem = (data_dir / KEY_FILE).read_bytes()
    except FileNotFoundError:
        raise NotEnrolled(
            f"{data_dir} holds no identity: run 'bridgehead-agent enroll --config ... --token ...' first"
        ) from None
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise NotEnrolled(f"{data_dir / KEY_FILE} is not an Ed25519 key")
    return Identity(agent=doc["agent"], cluster=doc["cluster"], agent_id=doc["agent_id"], key=key)
