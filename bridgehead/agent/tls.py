"""How the agent reaches its control plane: TLS contexts and the HTTP CONNECT proxy.

The agent trusts exactly one certificate for the control plane, the one its enrolment token
pinned (``control-ca.pem``), never the system's CA store: a certificate from any public CA
for the same name is refused. It presents its own client certificate (mutual TLS).
"""

from __future__ import annotations

import ssl
import urllib.parse
import urllib.request

from bridgehead.agent.config import AgentConfig, resolve_credential
from bridgehead.agent.identity import Identity
from bridgehead.core.errors import ConfigError


def client_context(server_ca: bytes, identity: Identity | None = None) -> ssl.SSLContext:
    """TLS 1.2+, the server verified against ``server_ca`` only (host name included)."""
    context = ssl.create_default_context(cadata=server_ca.decode())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if identity is not None:
        context.load_cert_chain(identity.cert_file, identity.key_file)
    return context


def proxy_for(config: AgentConfig, url: str) -> str | None:
    """The proxy URL (with its credentials) to reach ``url`` through, or None for direct.

    ``[control] proxy`` wins over the environment; ``NO_PROXY`` (``no_proxy``) applies to
    both, as curl and the MID Server's ``mid.proxy.*`` do.
    """
    host = urllib.parse.urlsplit(url).hostname or ""
    if urllib.request.proxy_bypass(host):
        return None
    control = config.control
    env = urllib.request.getproxies()
    scheme = urllib.parse.urlsplit(url).scheme
    proxy = control.proxy or env.get({"ws": "http", "wss": "https"}.get(scheme, scheme)) or env.get("all")
    if not proxy:
        return None
    if control.proxy_credential:
        section = config.credentials.get(control.proxy_credential)
        if section is None:
            raise ConfigError(config.path, "control.proxy_credential", f"no [credentials.{control.proxy_credential}]")
        credential = resolve_credential(section, control.proxy_credential)
        parts = urllib.parse.urlsplit(proxy)
        user = urllib.parse.quote(credential.username or "", safe="")
        password = urllib.parse.quote(credential.password or "", safe="")
        proxy = urllib.parse.urlunsplit(
            (parts.scheme, f"{user}:{password}@{parts.hostname}:{parts.port or 3128}", "", "", "")
        )
    return proxy
