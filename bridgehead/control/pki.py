"""The control plane's own PKI: a CA, its server certificate, agent certificates, and the
job-signing keys. Everything lives in the data dir, made on first use, readable by its owner
only.

    DIR/tls/ca.key, ca.pem          the CA (ECDSA P-256, 10 years): signs the server and agent certs
    DIR/tls/server.key, server.pem  the HTTPS certificate (1 year, renewed 30 days before expiry or
                                    when the names it must carry change)
    DIR/signing/KEYID.key           Ed25519 keys that sign job offers; DIR/signing/current names
                                    the one in use (``bridgehead-control signing-key rotate``)

ECDSA P-256 for the CA and server (every TLS client knows it, ``curl`` included); agents keep
the Ed25519 key they make at enrolment, which OpenSSL accepts in client certificates over TLS
1.2 and 1.3. Agent certificates name the agent and its cluster in URI SANs
(``urn:bridgehead:agent:NAME``, ``urn:bridgehead:cluster:NAME``): a common name may hold only
64 characters, agent names 128.

Creation races (the CLI and a starting server, both first) are settled by ``os.link``: the
first file to land wins and the loser reads it back.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridgehead.core.files import ensure_private_dir, write_private

AGENT_URI = "urn:bridgehead:agent:"
CLUSTER_URI = "urn:bridgehead:cluster:"
CA_LIFETIME = datetime.timedelta(days=3650)
SERVER_LIFETIME = datetime.timedelta(days=365)
SERVER_RENEW_BEFORE = datetime.timedelta(days=30)
# TLS 1.2 suites with forward secrecy and AEAD only (1.3 suites are all of that kind).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class PkiError(Exception):
    """A certificate or key that cannot be used, with the reason for an admin."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 (hex) of the DER of the first certificate in ``cert_pem``: what tokens pin."""
    return hashlib.sha256(x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)).hexdigest()


def der_fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _private_pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_or_make_key(path: Path) -> ec.EllipticCurvePrivateKey:
    if not path.exists():
        write_private(path, _private_pem(ec.generate_private_key(ec.SECP256R1())), exclusive=True)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path} is not an ECDSA key")
    return key


@dataclass(frozen=True)
class AgentCert:
    """What a verified agent certificate says."""

    agent: str
    cluster: str
    public_key: str  # raw public key, base64 (as enrolment stored it)
    not_after: float


def agent_identity(der: bytes) -> AgentCert:
    """Read the agent name, cluster and key from a certificate the TLS layer verified."""
    cert = x509.load_der_x509_certificate(der)
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        )
    except x509.ExtensionNotFound:
        uris = []
    agents = [u.removeprefix(AGENT_URI) for u in uris if u.startswith(AGENT_URI)]
    clusters = [u.removeprefix(CLUSTER_URI) for u in uris if u.startswith(CLUSTER_URI)]
    if len(agents) != 1 or len(clusters) != 1:
        raise PkiError("the client certificate is not a Bridgehead agent certificate (no agent and cluster names)")
    return AgentCert(agents[0], clusters[0], public_key_b64(cert.public_key()), cert.not_valid_after_utc.timestamp())


def public_key_b64(key: object) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        raw = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    else:
        raise PkiError(f"unsupported key type {type(key).__name__}: agents use Ed25519 or ECDSA P-256")
    return base64.b64encode(raw).decode()


class Authority:
    """The CA of one control plane (its data dir), and the certificates it issues."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "tls"
        ensure_private_dir(data_dir)
        ensure_private_dir(self.dir)
        self.key = _load_or_make_key(self.dir / "ca.key")
        ca_file = self.dir / "ca.pem"
        if not ca_file.exists():
            write_private(ca_file, pem(self._self_signed()), exclusive=True)
        self.ca_pem = ca_file.read_bytes()
        self.ca = x509.load_pem_x509_certificate(self.ca_pem)
        if self.ca.public_key() != self.key.public_key():
            raise PkiError(f"{ca_file} does not belong to {self.dir / 'ca.key'}")

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def anchor_file(self) -> Path:
        """What agents pin, as the running server last said (``serve`` writes it: the CA, or
        the configured certificate's issuer); the token commands read it."""
        return self.dir / "anchor.pem"

    def trust_anchor(self) -> bytes:
        return self.anchor_file.read_bytes() if self.anchor_file.exists() else self.ca_pem

    def _self_signed(self) -> x509.Certificate:
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bridgehead"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"Bridgehead control plane CA {os.urandom(4).hex()}"),
            ]
        )
        now = _now()
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def _issue(
        self, subject: str, public_key: object, sans: list[x509.GeneralName], usage: x509.ObjectIdentifier, life: float
    ) -> x509.Certificate:
        now = _now()
        not_after = min(now + datetime.timedelta(seconds=life), self.ca.not_valid_after_utc)
        # Backdated for clock skew, by at most a tenth of the life: agents renew when a third of
        # [not before, not after] is left, which 5 minutes back on a short life would make "always".
        backdate = min(datetime.timedelta(minutes=5), datetime.timedelta(seconds=life) / 10)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject[:64])]))
            .issuer_name(self.ca.subject)
            .public_key(public_key)  # type: ignore[arg-type]  # checked by the callers
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - backdate)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    # --- the server's certificate ----------------------------------------------------------

    def server_files(self, names: list[str]) -> tuple[Path, Path]:
        """The HTTPS certificate and key, made (or remade) to carry every one of ``names``."""
        key = _load_or_make_key(self.dir / "server.key")
        cert_file = self.dir / "server.pem"
        wanted = sorted(set(names))
        if cert_file.exists():
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
            fresh = cert.not_valid_after_utc - _now() > SERVER_RENEW_BEFORE
            if fresh and _cert_names(cert) == wanted and cert.public_key() == key.public_key():
                return cert_file, self.dir / "server.key"
        sans: list[x509.GeneralName] = []
        for name in wanted:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        cert = self._issue(
            wanted[0], key.public_key(), sans, ExtendedKeyUsageOID.SERVER_AUTH, SERVER_LIFETIME.total_seconds()
        )
        write_private(cert_file, pem(cert) + self.ca_pem)
        return cert_file, self.dir / "server.key"

    # --- agents ----------------------------------------------------------------------------

    def issue_agent(self, csr_pem: bytes, agent: str, cluster: str, lifetime_s: float) -> tuple[bytes, AgentCert]:
        """An agent certificate for the key in ``csr_pem`` (whose signature proves the agent
        holds it); the names come from the enrolment, never from the CSR's subject."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise PkiError(f"the CSR is not a PEM certificate request: {exc}") from None
        if not csr.is_signature_valid:
            raise PkiError("the CSR's signature does not match its key")
        public_key = csr.public_key()
        if not isinstance(public_key, ed25519.Ed25519PublicKey):
            # The same key signs the agent's hello, which the gateway checks as Ed25519.
            raise PkiError(f"agent keys are Ed25519; this CSR holds a {type(public_key).__name__}")
        raw = public_key_b64(public_key)
        sans: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(AGENT_URI + agent),
            x509.UniformResourceIdentifier(CLUSTER_URI + cluster),
        ]
        cert = self._issue(agent, public_key, sans, ExtendedKeyUsageOID.CLIENT_AUTH, lifetime_s)
        return pem(cert), AgentCert(agent, cluster, raw, cert.not_valid_after_utc.timestamp())


def _cert_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] + san.get_values_for_type(x509.DNSName)
    return sorted(names)


def server_context(cert_file: Path, key_file: Path, client_ca: Path) -> ssl.SSLContext:
    """HTTPS for the API and the gateway: TLS 1.2+, forward-secret AEAD suites, and a client
    certificate asked for (not required: API callers use tokens) and checked against our CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise PkiError(f"cannot load the TLS certificate {cert_file} with key {key_file}: {exc}") from None
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cafile=str(client_ca))
    return context
