"""Reaching the control plane, one chain per configured URL, the way the agent dials it:

    dns     the control plane's name (or the proxy's, when one is used) resolves
    tcp     a TCP connection opens (direct), or
    proxy   the HTTP CONNECT proxy opens a tunnel to the control plane (its credential included)
    tls     the TLS handshake verifies the server against the CA pinned at enrolment
            (data_dir/control-ca.pem), host name included, presenting the agent's certificate
    clock   the Date of the control plane's answer to GET /healthz is within
            control.max_clock_skew_s of this machine's clock (job offers carry issue and
            expiry times, and certificates have validity windows)

The streams are asyncio's, so a timeout cancels a step cleanly; only the name lookup runs in
a (daemon) thread.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import socket
import ssl
import time
import urllib.parse
from pathlib import Path

from bridgehead.agent.config import AgentConfig
from bridgehead.agent.dialing import websocket_url
from bridgehead.agent.doctor.findings import Finding, Result, fail, ok, skip, warn
from bridgehead.agent.doctor.http_head import MAX_HEAD_BYTES, BadAnswer, read_head
from bridgehead.agent.doctor.runner import Chain, Step, constant
from bridgehead.agent.doctor.threads import in_thread
from bridgehead.agent.enroll import http_base
from bridgehead.agent.identity import SERVER_CA_FILE, Identity
from bridgehead.agent.tls import client_context, proxy_for
from bridgehead.core.errors import ConfigError

# OpenSSL's verify codes that mean "no chain from this certificate to a CA we trust".
_NOT_OUR_CA = {2, 18, 19, 20, 21}
_HOSTNAME_MISMATCH = 62
_EXPIRED, _NOT_YET_VALID = 10, 9
CHECK_URL = "correct control.urls (scheme, host and port of the control plane's HTTPS listener)"


class ControlUrl:
    """The checks of one control URL; the steps share the connection they build up."""

    def __init__(self, config: AgentConfig, url: str, identity: Identity | None) -> None:
        self.config = config
        self.url = url
        self.identity = identity
        base = urllib.parse.urlsplit(http_base(url))
        self.tls = base.scheme == "https"
        self.host = base.hostname or ""
        self.port = base.port or (443 if self.tls else 80)
        self.label = f"control {self.host}:{self.port}"
        self.proxy: urllib.parse.SplitResult | None = None
        self.addresses: list[str] = []
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def chain(self) -> Chain:
        try:
            # As the agent asks it: for the WebSocket URL, the credential read now.
            proxy = proxy_for(self.config, websocket_url(self.url))
        except ConfigError as exc:
            step = Step(f"{self.label} proxy", constant(fail(str(exc), "correct control.proxy_credential")))
            return Chain([step])
        self.proxy = urllib.parse.urlsplit(proxy) if proxy else None
        reach = (
            Step(f"{self.label} proxy", self.through_proxy) if self.proxy else Step(f"{self.label} tcp", self.connect)
        )
        return Chain(
            [
                Step(f"{self.label} dns", self.resolve),
                reach,
                Step(f"{self.label} tls", self.handshake),
                Step(f"{self.label} clock", self.clock),
            ],
            cleanup=self.close,
        )

    # -- steps --------------------------------------------------------------------------------

    async def resolve(self) -> Finding:
        host = (self.proxy.hostname or "") if self.proxy else self.host
        port = (self.proxy.port or 3128) if self.proxy else self.port
        try:
            infos = await in_thread(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            what = "the proxy's name" if self.proxy else "the control plane's name"
            return fail(
                f"cannot resolve {host} ({what}): {exc.strerror}",
                "check the name (control.proxy)"
                if self.proxy
                else f"check the name ({CHECK_URL}) and this machine's DNS",
            )
        self.addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        note = "; the proxy resolves the control plane's name" if self.proxy else ""
        return ok(f"{host} is {', '.join(self.addresses)}{note}")

    async def connect(self) -> Finding:
        opened = await self._open(self.port, f"the control plane at {self.host}:{self.port}")
        if opened.result is Result.FAIL and "refused" in opened.detail.lower():
            return fail(
                opened.detail,
                "start the control plane, or correct the port in control.urls: nothing listens there "
                "(or a firewall rejects it)",
            )
        return opened

    async def through_proxy(self) -> Finding:
        assert self.proxy is not None  # noqa: S101 - the chain has this step only with a proxy
        proxy_at = f"{self.proxy.hostname}:{self.proxy.port or 3128}"
        opened = await self._open(self.proxy.port or 3128, f"the proxy at {proxy_at}")
        if opened.result is Result.FAIL:
            return fail(opened.detail, "check control.proxy (or HTTPS_PROXY): does a proxy listen there?")
        assert self.reader is not None and self.writer is not None  # noqa: S101 - set by _open
        target = f"{self.host}:{self.port}"
        request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if self.proxy.username is not None:
            user = urllib.parse.unquote(self.proxy.username)
            password = urllib.parse.unquote(self.proxy.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            request += f"Proxy-Authorization: Basic {token}\r\n"
        self.writer.write((request + "\r\n").encode())
        try:
            status, reason, _headers = await read_head(self.reader)
        except (OSError, BadAnswer) as exc:
            return fail(
                f"the proxy {proxy_at} did not answer CONNECT: {exc}", "check control.proxy: is that an HTTP proxy?"
            )
        if status == 200:
            return ok(f"{proxy_at} opened a tunnel to {target}")
        detail = f"the proxy {proxy_at} refused the tunnel to {target} with HTTP {status} {reason}"
        if status in (401, 407):
            return fail(detail, "check the proxy user and password (control.proxy_credential)")
        if status in (502, 503, 504):
            return fail(detail, "the proxy cannot reach the control plane: check control.urls and the proxy's network")
        return fail(detail, f"ask the proxy's admin to allow CONNECT to {target}")

    async def handshake(self) -> Finding:
        if not self.tls:
            return skip("plain http:// (allowed on loopback only): no TLS")
        assert self.writer is not None  # noqa: S101 - the chain stops before this without a connection
        ca_file = Path(self.config.agent.data_dir) / SERVER_CA_FILE
        identity = self.identity
        if identity is None or not identity.server_ca:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            try:
                context = client_context(identity.server_ca, identity if identity.certificate else None)
            except (ssl.SSLError, OSError) as exc:
                return fail(f"cannot load {ca_file} or the agent's certificate: {exc}", "enrol the agent again")
        try:
            await self.writer.start_tls(context, server_hostname=self.host)
        except ssl.SSLCertVerificationError as exc:
            return _verify_failure(exc, ca_file, self.host)
        except ssl.SSLError as exc:
            return fail(
                f"TLS handshake failed: {exc.reason or exc}",
                f"check that {self.host}:{self.port} is the control plane's HTTPS listener (not plain HTTP)",
            )
        except (OSError, asyncio.IncompleteReadError) as exc:
            return fail(f"the connection broke during the TLS handshake: {exc}", "check the control plane's log")
        if identity is None or not identity.server_ca:
            return skip("TLS handshake done, but the server was not verified: no pinned CA (not enrolled)")
        return ok(f"server certificate verified against {ca_file} (name {self.host})")

    async def clock(self) -> Finding:
        assert self.reader is not None and self.writer is not None  # noqa: S101 - set by the steps before
        request = (
            f"GET /healthz HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "User-Agent: bridgehead-agent-doctor\r\nConnection: close\r\n\r\n"
        )
        sent = time.time()
        self.writer.write(request.encode())
        try:
            status, reason, headers = await read_head(self.reader)
        except (OSError, BadAnswer) as exc:
            return fail(f"GET /healthz got no HTTP answer: {exc}", "check that the URL is the control plane's")
        answered = time.time()
        return clock_skew(
            headers.get("date"), (sent + answered) / 2, self.config.control.max_clock_skew_s, f"{status} {reason}"
        )

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()

    # -- helpers -----------------------------------------------------------------------------

    async def _open(self, port: int, what: str) -> Finding:
        failures: list[str] = []
        for address in self.addresses:
            try:
                self.reader, self.writer = await asyncio.open_connection(address, port, limit=MAX_HEAD_BYTES)
            except OSError as exc:
                failures.append(f"{address}:{port}: {exc.strerror or exc}")
                continue
            return ok(f"connected to {what} ({address}:{port})")
        return fail(
            f"cannot connect to {what}: {'; '.join(failures)}",
            "check the network path and firewalls between this machine and that address",
        )


def clock_skew(date_header: str | None, local: float, max_skew_s: float, status: str) -> Finding:
    """Compare the server's ``Date`` (whole seconds) with this machine's clock at the moment
    the request was answered (``local``, the middle of the round trip)."""
    if not date_header:
        return warn(f"GET /healthz answered {status} without a Date header: clocks not compared", "")
    try:
        server = email.utils.parsedate_to_datetime(date_header).timestamp() + 0.5  # Date is truncated
    except (TypeError, ValueError):
        return warn(f"GET /healthz answered {status} with an unreadable Date: {date_header!r}", "")
    skew = local - server
    ahead = "ahead of" if skew > 0 else "behind"
    detail = f"this machine's clock is {abs(skew):.0f} s {ahead} the control plane's"
    if abs(skew) > max_skew_s:
        return fail(
            f"{detail}, more than control.max_clock_skew_s ({max_skew_s:g} s): job offers will be refused",
            "set the clock right and keep it on NTP (timedatectl set-ntp true; chronyc tracking)",
        )
    if abs(skew) > max_skew_s / 2:
        return warn(f"{detail} (limit {max_skew_s:g} s)", "keep this machine on NTP")
    if not status.startswith("200"):
        return warn(f"{detail}; but GET /healthz answered {status}", "check the control plane's log")
    return ok(f"{detail} (within {max_skew_s:g} s)")


def _verify_failure(exc: ssl.SSLCertVerificationError, ca_file: Path, host: str) -> Finding:
    code, message = exc.verify_code, exc.verify_message
    if code in _NOT_OUR_CA:
        return fail(
            f"the server's certificate is not signed by the configured CA ({ca_file}, pinned at enrolment): {message}",
            "if the control plane's CA changed, enrol again with a new token; otherwise something else answers "
            "at this address (check control.urls, or a TLS-inspecting proxy in the way)",
        )
    if code == _HOSTNAME_MISMATCH:
        return fail(
            f"the server's certificate is not for {host}: {message}",
            "use a name the control plane's certificate is issued for in control.urls",
        )
    if code == _EXPIRED:
        return fail("the server's certificate has expired", "renew the control plane's TLS certificate")
    if code == _NOT_YET_VALID:
        return fail("the server's certificate is not valid yet", "set the clock right (NTP) here or on the server")
    return fail(f"the server's certificate was refused: {message}", "check the control plane's TLS certificate")
