"""Unit tests of the control plane's CA, server certificate and agent certificates (bridgehead.control.pki)."""

from __future__ import annotations

import base64
import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridgehead.control.pki import Authority, PkiError, agent_identity, fingerprint


def csr(key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey, name: str = "agent-1") -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    algorithm = None if isinstance(key, Ed25519PrivateKey) else hashes.SHA256()
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .sign(key, algorithm)
        .public_bytes(serialization.Encoding.PEM)
    )


def der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def raw_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def test_the_ca_is_made_once(tmp_path: Path) -> None:
    """A second Authority on the same data dir loads the CA the first one made, unchanged."""
    first = Authority(tmp_path)
    made = {p: p.read_bytes() for p in (first.dir / "ca.key", first.dir / "ca.pem")}

    second = Authority(tmp_path)

    assert first.ca_pem == second.ca_pem
    assert made == {p: p.read_bytes() for p in made}
    assert fingerprint(first.ca_pem) == fingerprint(second.ca_pem)
    assert first.ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert fingerprint(first.ca_pem) != fingerprint(Authority(tmp_path / "elsewhere").ca_pem)


def test_the_server_certificate_carries_the_names_and_is_remade_when_they_change(tmp_path: Path) -> None:
    """server_files names every requested host, keeps the file while the names hold, and remakes it when they change."""
    authority = Authority(tmp_path)

    cert_file, key_file = authority.server_files(["localhost", "127.0.0.1", "cp.example.com"])
    first = cert_file.read_bytes()
    again, _ = authority.server_files(["cp.example.com", "127.0.0.1", "localhost", "localhost"])
    kept = again.read_bytes()
    authority.server_files(["localhost", "127.0.0.1", "::1"])
    remade = cert_file.read_bytes()

    assert first == kept
    assert first != remade
    assert ["127.0.0.1", "::1", "localhost"] == sorted_names(remade)
    assert ["127.0.0.1", "cp.example.com", "localhost"] == sorted_names(first)
    leaf = x509.load_pem_x509_certificate(remade)
    assert authority.ca.subject == leaf.issuer
    leaf.verify_directly_issued_by(authority.ca)
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [ExtendedKeyUsageOID.SERVER_AUTH] == list(usage)
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert key.public_key() == leaf.public_key()


def sorted_names(pem: bytes) -> list[str]:
    san = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = [str(ipaddress.ip_address(ip)) for ip in san.get_values_for_type(x509.IPAddress)]
    return sorted(ips + san.get_values_for_type(x509.DNSName))


def test_issue_agent_names_the_agent_from_the_enrolment(tmp_path: Path) -> None:
    """An agent certificate holds the CSR's key and the enrolment's names (not the CSR's), and reads back."""
    authority = Authority(tmp_path)
    key = Ed25519PrivateKey.generate()

    pem, issued = authority.issue_agent(csr(key, "claimed-name"), "agent-1", "cluster-a", 3600)
    read = agent_identity(der(pem))

    assert ("agent-1", "cluster-a", raw_b64(key)) == (read.agent, read.cluster, read.public_key)
    assert issued == read
    cert = x509.load_pem_x509_certificate(pem)
    cert.verify_directly_issued_by(authority.ca)
    life = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(seconds=3590) < life <= datetime.timedelta(seconds=3600)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [ExtendedKeyUsageOID.CLIENT_AUTH] == list(usage)


def test_a_short_lived_agent_certificate_is_barely_backdated(tmp_path: Path) -> None:
    """A 60 s certificate is backdated by a small part of its life, so that a third of it left is not "already"."""
    pem, _ = Authority(tmp_path).issue_agent(csr(Ed25519PrivateKey.generate()), "agent-1", "default", 60)
    cert = x509.load_pem_x509_certificate(pem)
    now = datetime.datetime.now(datetime.UTC)

    renew_at = cert.not_valid_after_utc - (cert.not_valid_after_utc - cert.not_valid_before_utc) / 3

    assert renew_at - now > datetime.timedelta(seconds=30)


def test_issue_agent_refuses_a_csr_with_a_bad_signature(tmp_path: Path) -> None:
    """A CSR whose signature does not match its key (proof of possession fails) is refused."""
    good = x509.load_pem_x509_csr(csr(Ed25519PrivateKey.generate()))
    other = x509.load_pem_x509_csr(csr(Ed25519PrivateKey.generate()))
    # The request of one key with the signature of another: DER of (info, algorithm, signature).
    spliced = _rebuild_csr(good.tbs_certrequest_bytes, other.signature)
    assert not x509.load_der_x509_csr(spliced).is_signature_valid  # premise: a well-formed, badly signed CSR
    pem = (
        b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(spliced) + b"-----END CERTIFICATE REQUEST-----\n"
    )

    with pytest.raises(PkiError, match="signature"):
        Authority(tmp_path).issue_agent(pem, "agent-1", "default", 3600)


def _rebuild_csr(info: bytes, signature: bytes) -> bytes:
    """A CSR (DER) of ``info`` with the Ed25519 algorithm identifier and ``signature``."""

    def tlv(tag: int, body: bytes) -> bytes:
        n = len(body)
        length = (
            bytes([n])
            if n < 128
            else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
        )
        return bytes([tag]) + length + body

    ed25519_algorithm = tlv(0x30, tlv(0x06, bytes.fromhex("2b6570")))  # 1.3.101.112
    return tlv(0x30, info + ed25519_algorithm + tlv(0x03, b"\x00" + signature))


def test_issue_agent_refuses_a_key_that_is_not_ed25519(tmp_path: Path) -> None:
    """A valid CSR for an ECDSA key is refused: agents sign their hello with Ed25519."""
    ecdsa = csr(ec.generate_private_key(ec.SECP256R1()))
    assert x509.load_pem_x509_csr(ecdsa).is_signature_valid  # premise: the CSR itself is fine

    with pytest.raises(PkiError, match="Ed25519"):
        Authority(tmp_path).issue_agent(ecdsa, "agent-1", "default", 3600)


def test_issue_agent_refuses_what_is_not_a_csr(tmp_path: Path) -> None:
    """Text that is not a PEM certificate request is refused with a PkiError."""
    with pytest.raises(PkiError, match="not a PEM certificate request"):
        Authority(tmp_path).issue_agent(b"hello", "agent-1", "default", 3600)


def test_agent_identity_refuses_a_certificate_without_the_names(tmp_path: Path) -> None:
    """A certificate of our CA without the agent and cluster URIs (the server's, say) is not an agent's."""
    authority = Authority(tmp_path)
    server_pem = authority.server_files(["localhost"])[0].read_bytes()

    with pytest.raises(PkiError, match="not a Bridgehead agent certificate"):
        agent_identity(der(server_pem))
    with pytest.raises(PkiError, match="not a Bridgehead agent certificate"):
        agent_identity(der(authority.ca_pem))
