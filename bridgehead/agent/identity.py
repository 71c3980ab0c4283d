"""The agent's identity: an Ed25519 key pair it made itself, and what enrolment returned.

Kept in ``data_dir``, readable by the agent's user only (0600 files in a 0700 folder):

    agent.key          the private key (PKCS#8 PEM); it never leaves the machine
    agent.crt          the client certificate naming the agent and its cluster (renewed over
                       the session when a third of its life is left)
    control-ca.pem     the certificate the control plane is verified with: the one whose
                       SHA-256 the enrolment token pinned
    signing-keys.json  the job-signing keys the agent trusts (pinned at enrolment; successors
                       endorsed by a trusted key are added as the control plane publishes them)
    release-key        the release key (base64 of its raw 32-byte Ed25519 public half) pinned
                       at enrolment: a self-update installs only releases it signed. Empty when
                       the control plane had none (self-update is then refused)
    identity.json      name, cluster and id
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bridgehead.core.errors import BridgeheadError
from bridgehead.core.files import ensure_private_dir, write_private
from bridgehead.protocol import SigningKey
from bridgehead.protocol.signing import OfferRefused, hello_bytes, public_signing_key

KEY_FILE = "agent.key"
CERT_FILE = "agent.crt"
SERVER_CA_FILE = "control-ca.pem"
SIGNING_KEYS_FILE = "signing-keys.json"
IDENTITY_FILE = "identity.json"
RELEASE_KEY_FILE = "release-key"


class NotEnrolled(BridgeheadError):
    exit_code = 2


# ``cryptography.x509`` is imported where it is used: it costs an idle agent 1 MB of RSS
# (bench/idle_rss.py), and a running agent needs it only to renew its certificate.


def pem_sha256(pem: bytes) -> str:
    """SHA-256 (hex) of the DER of the first certificate in ``pem``: what a token pins."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass
class Identity:
    agent: str
    cluster: str
    agent_id: str
    key: Ed25519PrivateKey
    data_dir: Path | None = None
    certificate: bytes = b""  # PEM; empty for an identity enrolled before TLS
    server_ca: bytes = b""  # PEM
    signing_keys: list[SigningKey] = field(default_factory=list)
    release_key: bytes = b""  # raw 32-byte Ed25519 public key; b"": none pinned
    _window: tuple[float, float] | None = field(default=None, repr=False)

    def sign(self, nonce: str) -> str:
        """The bare nonce signed (plain-HTTP sessions of agents enrolled before 0.2)."""
        return base64.b64encode(self.key.sign(nonce.encode())).decode()

    def sign_hello(self, nonce: str, server_cert_sha256: str) -> str:
        signed = hello_bytes(nonce, self.agent, self.cluster, server_cert_sha256)
        return base64.b64encode(self.key.sign(signed)).decode()

    @property
    def public_key(self) -> str:
        return public_key_b64(self.key)

    def _dir(self) -> Path:
        if self.data_dir is None:
            raise NotEnrolled("this identity was not loaded from a data_dir")
        return self.data_dir

    @property
    def cert_file(self) -> Path:
        return self._dir() / CERT_FILE

    @property
    def key_file(self) -> Path:
        return self._dir() / KEY_FILE

    def cert_window(self) -> tuple[float, float]:
        """(not before, not after) of the client certificate, in unix seconds."""
        if self._window is None:
            from cryptography import x509

            cert = x509.load_pem_x509_certificate(self.certificate)
            self._window = (cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())
        return self._window

    def trusted_signing_keys(self) -> dict[str, Ed25519PublicKey]:
        keys: dict[str, Ed25519PublicKey] = {}
        for key in self.signing_keys:
            try:
                keys[key.key_id] = public_signing_key(key)
            except OfferRefused:
                continue
        return keys

    def save_certificate(self, pem: bytes) -> None:
        write_private(self._dir() / CERT_FILE, pem)
        self.certificate = pem
        self._window = None
        _write_doc(self._dir(), self.agent, self.cluster, self.agent_id, self.cert_window())

    def save_signing_keys(self, keys: list[SigningKey]) -> None:
        write_private(self._dir() / SIGNING_KEYS_FILE, msgspec.json.encode(keys))
        self.signing_keys = list(keys)


def decode_release_key(text: str) -> bytes:
    """The raw release key in ``text`` (base64 of 32 bytes, or empty for none); ValueError otherwise."""
    if not text.strip():
        return b""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the release key is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"the release key is {len(raw)} bytes, not the 32 of an Ed25519 public key")
    return raw


def public_key_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def make_csr(key: Ed25519PrivateKey, agent: str) -> bytes:
    """A certificate request for ``key``; the control plane names the certificate itself."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, agent[:64])])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, None)
    return csr.public_bytes(serialization.Encoding.PEM)


def cert_public_key(pem: bytes) -> str:
    """The raw Ed25519 public key (base64) a certificate is for; ValueError otherwise."""
    from cryptography import x509

    key = x509.load_pem_x509_certificate(pem).public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 certificate")
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def cert_expiry(pem: bytes) -> datetime.datetime:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def save_identity(
    data_dir: Path,
    key: Ed25519PrivateKey,
    agent: str,
    cluster: str,
    agent_id: str,
    certificate: bytes = b"",
    server_ca: bytes = b"",
    signing_keys: list[SigningKey] | None = None,
    release_key: bytes = b"",
) -> None:
    ensure_private_dir(data_dir)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private(data_dir / KEY_FILE, pem)
    write_private(data_dir / CERT_FILE, certificate)
    write_private(data_dir / SERVER_CA_FILE, server_ca)
    write_private(data_dir / SIGNING_KEYS_FILE, msgspec.json.encode(signing_keys or []))
    # Written even when empty: a re-enrolment against a control plane without a key unpins the old one.
    write_private(data_dir / RELEASE_KEY_FILE, (base64.b64encode(release_key).decode() + "\n").encode())
    # Last: an identity.json names a complete identity (a crash before it leaves none).
    window = None
    if certificate:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(certificate)
        window = (cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())
    _write_doc(data_dir, agent, cluster, agent_id, window)


def _write_doc(data_dir: Path, agent: str, cluster: str, agent_id: str, window: tuple[float, float] | None) -> None:
    # The certificate's window is kept here too, so that the renewal check of a running agent
    # need not parse the certificate (and load cryptography.x509) until it renews.
    doc: dict[str, object] = {"agent": agent, "cluster": cluster, "agent_id": agent_id}
    if window is not None:
        doc["certificate_window"] = list(window)
    write_private(data_dir / IDENTITY_FILE, json.dumps(doc, indent=2).encode())


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


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
    raw_keys = _read(data_dir / SIGNING_KEYS_FILE)
    try:
        signing_keys = msgspec.json.decode(raw_keys, type=list[SigningKey]) if raw_keys else []
    except msgspec.DecodeError:
        raise NotEnrolled(f"{data_dir / SIGNING_KEYS_FILE} is damaged: enrol the agent again") from None
    try:
        release_key = decode_release_key(_read(data_dir / RELEASE_KEY_FILE).decode("ascii", "replace"))
    except ValueError as exc:
        raise NotEnrolled(f"{data_dir / RELEASE_KEY_FILE} is damaged ({exc}): enrol the agent again") from None
    return Identity(
        agent=doc["agent"],
        cluster=doc["cluster"],
        agent_id=doc["agent_id"],
        key=key,
        data_dir=data_dir,
        certificate=_read(data_dir / CERT_FILE),
        server_ca=_read(data_dir / SERVER_CA_FILE),
        signing_keys=signing_keys,
        release_key=release_key,
        _window=tuple(doc["certificate_window"]) if "certificate_window" in doc else None,
    )
