"""Enrolment: trade a one-time token for an identity, once, before the first ``run``.

The token is ``bhe_<secret>.<sha256>``: the secret the control plane checks, and the SHA-256
of the certificate the agent must trust it with. The agent

1. fetches that certificate (``GET /api/v1/ca``; unverified, since it trusts nothing yet) and
   refuses to go on unless its SHA-256 is the pinned one: an impostor cannot make a
   certificate with that hash;
2. makes its key pair (it never leaves ``data_dir``) and sends a CSR with the token's secret,
   over TLS verified against the pinned certificate;
3. keeps the client certificate, the pinned certificate, the job-signing keys and the release
   key (if the control plane has one: self-update installs only releases it signed) it got back.

Plain ``urllib`` keeps this one request free of the HTTP client the rest plugin imports lazily.
"""

from __future__ import annotations

import json
import re
import ssl
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

import msgspec

from bridgehead.agent.config import AgentConfig
from bridgehead.agent.identity import decode_release_key, make_csr, new_key, pem_sha256, save_identity
from bridgehead.agent.tls import client_context, proxy_for
from bridgehead.core.errors import EnrollmentError
from bridgehead.protocol import SigningKey

ENROLL_PATH = "/api/v1/enroll"
CA_PATH = "/api/v1/ca"
TOKEN_FORMAT = re.compile(r"^(bhe_[A-Za-z0-9_-]{16,200})\.([0-9a-f]{64})$")
MAX_ANSWER_BYTES = 1024 * 1024


def http_base(url: str) -> str:
    """The control plane's HTTP origin for a configured URL (ws/wss become http/https)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def split_token(token: str) -> tuple[str, str]:
    """``(secret, pinned sha256)`` of an enrolment token, or a clear error."""
    match = TOKEN_FORMAT.match(token.strip())
    if match is None:
        raise EnrollmentError(
            "not an enrolment token: expected 'bhe_<secret>.<sha256>' as printed by "
            "'bridgehead-control enrollment-token create'"
        )
    return match.group(1), match.group(2)


def _opener(config: AgentConfig, url: str, context: ssl.SSLContext | None) -> urllib.request.OpenerDirector:
    proxy = proxy_for(config, url)
    proxies = {"http": proxy, "https": proxy} if proxy else {}
    return urllib.request.build_opener(
        urllib.request.ProxyHandler(proxies), urllib.request.HTTPSHandler(context=context)
    )


def _fetch_anchor(config: AgentConfig, base: str, timeout_s: float) -> bytes:
    # Unverified on purpose: the pin, not the TLS handshake, decides whether it is trusted.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with _opener(config, base, context).open(base + CA_PATH, timeout=timeout_s) as response:
        return bytes(response.read(MAX_ANSWER_BYTES))


def enroll(config: AgentConfig, token: str, timeout_s: float = 15.0) -> str:
    """Enrol with the first control URL that answers; return the agent id."""
    secret, pin = split_token(token)
    key = new_key()
    body = json.dumps(
        {
            "token": secret,
            "agent": config.agent.name,
            "cluster": config.agent.cluster,
            "csr": make_csr(key, config.agent.name).decode(),
        }
    ).encode()
    last_error = "no control URL configured"
    for url in config.control.all_urls:
        base = http_base(url)
        try:
            anchor = _fetch_anchor(config, base, timeout_s)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last_error = f"{base}{CA_PATH}: {getattr(exc, 'reason', exc)}"
            continue
        try:
            seen = pem_sha256(anchor)
        except ValueError:
            raise EnrollmentError(f"{base}{CA_PATH} did not answer with a certificate: not a control plane") from None
        if seen != pin:
            raise EnrollmentError(
                f"{base} presents certificate sha256 {seen[:16]}..., but the token pins {pin[:16]}...: this is not "
                "the control plane that made the token (or its certificate changed); nothing was sent"
            )
        endpoint = base + ENROLL_PATH
        context = client_context(anchor) if base.startswith("https:") else None
        request = urllib.request.Request(  # noqa: S310 - scheme checked by config validation
            endpoint, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with _opener(config, base, context).open(request, timeout=timeout_s) as response:
                answer = json.loads(response.read(MAX_ANSWER_BYTES))
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read(MAX_ANSWER_BYTES)).get("error", {}).get("message", "")
            except ValueError:
                detail = ""
            # A refusal is final: the token is wrong, used or expired; trying elsewhere won't help.
            raise EnrollmentError(f"{endpoint} refused enrolment ({exc.code}): {detail or exc.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last_error = f"{endpoint}: {getattr(exc, 'reason', exc)}"
            continue
        try:
            signing_keys = msgspec.convert(answer["signing_keys"], list[SigningKey])
            certificate = str(answer["certificate"]).encode()
            agent_id = str(answer["agent_id"])
            # Absent from older control planes: no key is pinned, and self-update is refused.
            release_key = decode_release_key(str(answer.get("release_key") or ""))
        except (KeyError, TypeError, msgspec.ValidationError) as exc:
            raise EnrollmentError(f"{endpoint} answered without a certificate or keys ({exc})") from None
        except ValueError as exc:
            raise EnrollmentError(f"{endpoint} answered with a bad release key: {exc}") from None
        save_identity(
            config.data_dir,
            key,
            config.agent.name,
            config.agent.cluster,
            agent_id,
            certificate=certificate,
            server_ca=anchor,
            signing_keys=signing_keys,
            release_key=release_key,
        )
        return agent_id
    raise EnrollmentError(f"could not reach the control plane: {last_error}")
