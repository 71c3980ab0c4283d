"""The certificate the control plane issues names the enrolled agent and its cluster, and only
for the enrolled key: an enrolled (hostile) agent asks for more, through enrolment and through
renewal over its session, against a real control plane. What was asked is checked where it
would show: the certificate that came back, and the control plane's record of its agents.
"""

from __future__ import annotations

import asyncio
import http.server
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bridgehead_testing.harness import Agent, ControlPlane, wait_until
from bridgehead_testing.impostor import server_context
from bridgehead_testing.pki import write_test_pki
from bridgehead_testing.scripted_agent import Channel, ScriptedIdentity, csr_for
from bridgehead_testing.scripted_agent import enroll as scripted_enroll
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.exceptions import ConnectionClosed

CLOSE_AUTH_FAILED = 4003


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One control plane for the tests that need no special one: each uses agent names of its own."""
    cp = ControlPlane(tmp_path_factory.mktemp("enrolment"), heartbeat_s=1.0)
    try:
        yield cp.start()
    finally:
        cp.stop()  # also when start() failed half-way: its process must not outlive the test


def agents(control: ControlPlane) -> dict[str, dict[str, Any]]:
    status, listing = control.api().request("GET", "/api/v1/agents")
    assert 200 == status, listing
    return {a["name"]: a for a in listing}


def names_in(certificate: bytes) -> list[str]:
    """The URI names of a certificate (where agent certificates carry agent and cluster)."""
    cert = x509.load_pem_x509_certificate(certificate)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(san.get_values_for_type(x509.UniformResourceIdentifier))


async def hello_for_another_cluster(control: ControlPlane, identity: ScriptedIdentity) -> tuple[int | None, str]:
    """Say a hello as ``identity`` but for cluster ``payroll``, signed with its own key (so only
    the control plane's record of the agent can tell); the close code and reason."""
    channel = await Channel.open(control.url, identity.context() if control.tls else None)
    try:
        [challenge] = await channel.recv()
        signature = identity.sign_hello(challenge["nonce"], channel.binding, cluster="payroll")
        hello = {"type": "hello", "agent": identity.name, "cluster": "payroll", "signature": signature}
        await channel.send({**hello, "capacity": 1, "plugins": [{"name": "echo"}]})
        while True:
            for message in await channel.recv():
                assert "welcome" != message["type"], message
    except ConnectionClosed as exc:
        return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")
    finally:
        await channel.close()


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain-http"])
async def test_an_agent_cannot_join_another_cluster(control_factory: Callable[..., ControlPlane], tls: bool) -> None:
    """An agent enrolled in ``default`` that says hello for ``payroll`` (correctly signed by its
    own key) is closed 4003, over TLS (its certificate names ``default``) and over plain HTTP
    (the enrolment record does); a payroll job queued meanwhile is offered to no one."""
    control = control_factory(tls=tls)
    identity = await asyncio.to_thread(scripted_enroll, control, "wanderer")
    job = await asyncio.to_thread(control.api().submit, "echo", {}, cluster="payroll")

    code, reason = await hello_for_another_cluster(control, identity)

    assert CLOSE_AUTH_FAILED == code, reason
    assert "default" in reason, reason
    seen = (await asyncio.to_thread(agents, control))["wanderer"]
    assert ("default", False, None) == (seen["cluster"], seen["connected"], seen["last_seen"])
    assert "queued" == (await asyncio.to_thread(control.api().job, job["id"]))["state"]
    # The premise: the same identity, saying its own cluster, is welcome.
    channel = await Channel.open(control.url, identity.context() if tls else None)
    try:
        await channel.handshake(identity)
    finally:
        await channel.close()


def test_a_csr_naming_another_agent_gets_a_certificate_for_the_enrolled_name(control: ControlPlane) -> None:
    """A CSR whose subject names an enrolled agent of another cluster, sent with a token for
    ``mallory`` in ``default``, gets a certificate naming ``mallory`` in ``default`` only; the
    agent it named keeps its key, its cluster and its enrolment."""
    victim = scripted_enroll(control, "victim", cluster="payroll", token=control.enrollment_token("payroll"))
    before = agents(control)["victim"]
    key = Ed25519PrivateKey.generate()
    body = {"token": control.enrollment_token().split(".")[0], "agent": "mallory", "cluster": "default"}

    status, answer = control.api("").request("POST", "/api/v1/enroll", {**body, "csr": csr_for(key, "victim")})

    assert 201 == status, answer  # the premise: the enrolment itself was genuine
    certificate = answer["certificate"].encode()
    assert ["urn:bridgehead:agent:mallory", "urn:bridgehead:cluster:default"] == names_in(certificate)
    issued = x509.load_pem_x509_certificate(certificate)
    assert key.public_key() == issued.public_key()
    assert ["urn:bridgehead:agent:victim", "urn:bridgehead:cluster:payroll"] == names_in(victim.certificate)
    assert before == agents(control)["victim"]
    assert "default" == agents(control)["mallory"]["cluster"]


async def renew_with(channel: Channel, csr: str) -> tuple[int | None, list[dict[str, Any]]]:
    """Send a renewal request with ``csr``; the close code and every message until the close
    (or until a certificate comes back, which ends the wait too)."""
    await channel.send({"type": "renew", "csr": csr})
    seen: list[dict[str, Any]] = []
    try:
        while not any(m["type"] == "certificate" for m in seen):
            seen += await channel.recv()
    except ConnectionClosed as exc:
        return (exc.rcvd.code if exc.rcvd else None), seen
    return None, seen


async def test_a_renewal_for_another_key_is_refused(control: ControlPlane) -> None:
    """Over its authenticated session an agent asks a certificate for a new key it made: the
    session is closed 4003 with no certificate sent, and the agent's record keeps its expiry;
    a renewal for its enrolled key, on the next session, is answered (the premise)."""
    identity: ScriptedIdentity = await asyncio.to_thread(scripted_enroll, control, "renewer")
    expiry = (await asyncio.to_thread(agents, control))["renewer"]["certificate_expires_at"]
    channel = await Channel.open(control.url, identity.context())
    try:
        await channel.handshake(identity)
        code, seen = await renew_with(channel, csr_for(Ed25519PrivateKey.generate(), "renewer"))
    finally:
        await channel.close()

    assert CLOSE_AUTH_FAILED == code, seen
    assert [] == [m for m in seen if m["type"] == "certificate"]
    assert ["auth_failed"] == [m["code"] for m in seen if m["type"] == "error"], seen
    assert expiry == (await asyncio.to_thread(agents, control))["renewer"]["certificate_expires_at"]

    channel = await Channel.open(control.url, identity.context())
    try:
        await channel.handshake(identity)
        code, seen = await renew_with(channel, csr_for(identity.key, "renewer"))
    finally:
        await channel.close()
    [certificate] = [m["certificate"] for m in seen if m["type"] == "certificate"]
    assert ["urn:bridgehead:agent:renewer", "urn:bridgehead:cluster:default"] == names_in(certificate.encode())
    assert identity.key.public_key() == x509.load_pem_x509_certificate(certificate.encode()).public_key()


class PosingServer(http.server.ThreadingHTTPServer):
    """An HTTPS server posing as the control plane with a certificate of its own CA: it serves
    the real control plane's CA (public, so anyone can) at ``/api/v1/ca``, and keeps whatever
    is POSTed to it. ``handshakes`` counts the TLS connections it accepted or tried to."""

    def __init__(self, context: ssl.SSLContext, anchor: bytes) -> None:
        self.context = context
        self.anchor = anchor
        self.handshakes = 0
        self.fetched: list[str] = []
        self.posted: list[bytes] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.fetched.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.anchor)))
                self.end_headers()
                self.wfile.write(server.anchor)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                server.posted.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                self.send_response(500)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        raw, address = self.socket.accept()
        self.handshakes += 1
        # A failed handshake raises SSLError (an OSError): the server drops that connection.
        return self.context.wrap_socket(raw, server_side=True), address


@pytest.fixture
def posing(control: ControlPlane, tmp_path: Path) -> Iterator[PosingServer]:
    pki = write_test_pki(tmp_path)
    server = PosingServer(
        server_context(pki.cert_file, pki.key_file), (control.data_dir / "tls" / "anchor.pem").read_bytes()
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_an_impostor_serving_the_real_ca_gets_no_enrolment_secret(
    control: ControlPlane, posing: PosingServer, tmp_path: Path
) -> None:
    """A server that hands out the real control plane's CA (so the token's pin matches) but holds
    no certificate of that CA is refused at the TLS handshake of the enrolment request: it never
    receives the token's secret, which then enrols the agent with the real control plane."""
    token = control.enrollment_token()
    agent = Agent(tmp_path / "agents", "lured", [f"https://127.0.0.1:{posing.server_address[1]}"])

    result = agent.try_enroll(token)

    assert 0 != result.returncode, result.stdout
    # The premise: the pin matched (the CA was fetched) and the agent went on to a second TLS
    # connection, for the enrolment request, which its verification refused.
    assert ["/api/v1/ca"] == posing.fetched
    wait_until(lambda: posing.handshakes >= 2, 5, "the enrolment request's TLS handshake")
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr, result.stderr
    assert [] == posing.posted
    assert token.split(".")[0] not in result.stderr
    real = Agent(tmp_path / "agents", "lured-then-real", [control.url])
    real.enroll(token)
    assert "default" == agents(control)["lured-then-real"]["cluster"]


def test_a_replace_token_takes_only_the_name_it_was_made_for(control: ControlPlane) -> None:
    """A token made with ``--replace kept-a`` cannot take ``kept-b`` (409, ``kept-b`` keeps its key
    and enrolment, the token is not used up); it does take ``kept-a``."""
    for name in ("kept-a", "kept-b"):
        scripted_enroll(control, name)
    before = agents(control)
    token = control.enrollment_token("default", 600, "--replace", "kept-a").split(".")[0]
    key = Ed25519PrivateKey.generate()

    status, answer = control.api("").request(
        "POST",
        "/api/v1/enroll",
        {"token": token, "agent": "kept-b", "cluster": "default", "csr": csr_for(key, "kept-b")},
    )

    assert 409 == status, answer
    assert before["kept-b"] == agents(control)["kept-b"]
    status, answer = control.api("").request(
        "POST",
        "/api/v1/enroll",
        {"token": token, "agent": "kept-a", "cluster": "default", "csr": csr_for(key, "kept-a")},
    )
    assert 201 == status, answer  # the premise: the token is good, for the name it was made for
    assert before["kept-a"]["enrolled_at"] < agents(control)["kept-a"]["enrolled_at"]
