"""How ``serve`` speaks TLS: its certificate, the context, and the peer certificate handed to
the gateway.

uvicorn verifies client certificates but does not pass them to the application; the gateway
needs the agent's one (it *is* the agent's identity), so ``PeerCertWebSocketProtocol`` adds
it to the websocket scope as the ASGI TLS extension does (``scope["extensions"]["tls"]``),
with the DER bytes rather than PEM text, which is what the gateway parses.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from bridgehead.control.config import ControlConfig
from bridgehead.control.pki import Authority, PkiError, der_fingerprint, server_context
from bridgehead.core.errors import ConfigError


@dataclass(frozen=True)
class TlsSetup:
    context: ssl.SSLContext
    trust_anchor_pem: bytes  # what agents pin and verify the server with (``GET /api/v1/ca``)
    server_cert_sha256: str  # the channel binding agents sign in their hello


def prepare_tls(config: ControlConfig, authority: Authority, listen_host: str) -> TlsSetup:
    """The server's certificate (our own, or the configured one), as a ready context."""
    server = config.server
    if bool(server.tls_cert_file) != bool(server.tls_key_file):
        raise ConfigError("control.toml", "server.tls_cert_file", "give tls_cert_file and tls_key_file together")
    if server.tls_cert_file:
        cert_file, key_file = Path(server.tls_cert_file), Path(server.tls_key_file)
        try:
            chain = cert_file.read_bytes()
            anchor = Path(server.tls_ca_file).read_bytes() if server.tls_ca_file else chain
        except OSError as exc:
            raise ConfigError("control.toml", "server.tls_cert_file", f"cannot read: {exc}") from None
    else:
        names = ["localhost", "127.0.0.1", *server.tls_names]
        if listen_host not in ("0.0.0.0", "::", ""):  # noqa: S104 - a comparison, not a bind
            names.append(listen_host)
        cert_file, key_file = authority.server_files(names)
        chain, anchor = cert_file.read_bytes(), authority.ca_pem
    try:
        leaf = x509.load_pem_x509_certificate(chain)
        x509.load_pem_x509_certificate(anchor)
        context = server_context(cert_file, key_file, authority.ca_file)
    except (ValueError, PkiError) as exc:
        raise ConfigError("control.toml", "server.tls_cert_file", str(exc)) from None
    # Only the anchor's first certificate is pinned; a bundle's others are still trusted.
    return TlsSetup(context, anchor, der_fingerprint(leaf.public_bytes(serialization.Encoding.DER)))


class PeerCertWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websocket protocol, with the client certificate (and the transport, so that
    a peer that stops reading can be cut off) in the scope."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is None:  # the handshake was refused before a scope was made
            return
        ssl_object = self.transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        scope["extensions"]["tls"] = {"client_cert_der": der}
        # The gateway aborts the transport of an agent that does not read (gateway.drop).
        scope["extensions"]["bridgehead.transport"] = self.transport
