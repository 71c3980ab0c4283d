"""Programs posing as the control plane, or standing between it and an agent, get nothing done:
real agent and control plane processes, real TLS on loopback, hostile peers from tests/impostor.py.

Most cases share one control plane and one agent enrolled with it whose control URL points at
an impostor holding the control plane's real TLS certificate and key (a stolen TLS key: the
strongest impostor short of the job-signing key). Offers are made with the real job-signing
key, read from the control plane's data dir: that is how a test makes a genuinely valid offer
to tamper with or replay, not an attacker's power. Every offer is a ``rest`` job against a
local HTTP server that counts requests per path, so "nothing ran" is counted at the target.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from bridgehead_testing.harness import Agent, ControlPlane, wait_connected, wait_until
from bridgehead_testing.impostor import Impostor, ImpostorSession, Relay, Target, server_context
from bridgehead_testing.pki import write_test_pki
from bridgehead_testing.scripted_agent import Channel, hello_bytes
from bridgehead_testing.scripted_agent import enroll as scripted_enroll
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.exceptions import ConnectionClosed

from bridgehead.protocol.codec import encode
from bridgehead.protocol.messages import Offer
from bridgehead.protocol.signing import OfferSigner

AgentFactory = Callable[..., Agent]
FOOLED_AGENT = "fooled-agent"


def point_at(agent: Agent, url: str) -> None:
    """Make ``url`` the agent's only control URL (read when the agent process starts)."""
    text = agent.config.read_text()
    agent.config.write_text(re.sub(r"^urls = .*$", f"urls = {json.dumps([url])}", text, count=1, flags=re.M))


def real_signer(control: ControlPlane) -> OfferSigner:
    """The control plane's current job-signing key, as its dispatcher signs with it."""
    signing = control.data_dir / "signing"
    current = (signing / "current").read_text().strip()
    key = serialization.load_pem_private_key((signing / f"{current}.key").read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return OfferSigner(key, ttl_s=300)


def upstream_context(control: ControlPlane) -> ssl.SSLContext:
    """What a client that trusts the control plane's CA (and holds no client certificate) uses."""
    assert control.context is not None
    return control.context


def stolen_tls(control: ControlPlane) -> ssl.SSLContext:
    """A server context with the control plane's own TLS certificate and key."""
    tls = control.data_dir / "tls"
    return server_context(tls / "server.pem", tls / "server.key")


def rest_offer(job_id: str, agent: str = FOOLED_AGENT, path: str | None = None) -> Offer:
    """An unsigned offer of a rest GET of ``path`` (``/hit/JOB_ID`` by default) on the target."""
    params: dict[str, object] = {"connection": "target", "method": "GET", "path": path or f"/hit/{job_id}"}
    return Offer(job_id=job_id, attempt=1, plugin="rest", params=params, timeout_s=30.0, agent=agent)


def answered(answer: dict[str, Any]) -> tuple[str, str | None]:
    """(accept or reject, the reject's error code)."""
    return answer["type"], answer.get("error", {}).get("code")


def connected(control: ControlPlane, name: str) -> bool:
    status, agents = control.api().request("GET", "/api/v1/agents")
    assert 200 == status, agents
    return bool({a["name"]: a["connected"] for a in agents}[name])


# --- an impostor with the control plane's stolen TLS key -----------------------------------------


@dataclass
class Stolen:
    control: ControlPlane
    agent: Agent
    impostor: Impostor
    target: Target
    signer: OfferSigner

    def session(self, after: int = -1) -> ImpostorSession:
        """The agent's open session with the impostor (newer than session ``after``), once its
        TLS handshake passed and it said hello: the premise of every offer sent."""

        def newest() -> ImpostorSession | None:
            sessions = [s for s in self.impostor.welcomed() if s.index > after]
            return sessions[-1] if sessions else None

        session: ImpostorSession = wait_until(newest, 20, "the agent's hello to the impostor")
        assert session.hello is not None
        assert (FOOLED_AGENT, "default") == (session.hello["agent"], session.hello["cluster"])
        return session

    def answer(self, job_id: str, count: int = 1) -> dict[str, Any]:
        """The agent's ``count``-th answer (accept or reject) to offers of ``job_id``."""
        answers = wait_until(
            lambda: (a := self.impostor.answers(job_id)) and len(a) >= count and a,
            20,
            f"answer {count} to the offer of {job_id}",
        )
        return dict(answers[count - 1])

    def completed(self, job_id: str) -> dict[str, Any]:
        completions = wait_until(lambda: self.impostor.received("complete", job_id), 30, f"{job_id} to complete")
        return dict(completions[0])


@pytest.fixture(scope="module")
def stolen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stolen]:
    """A real control plane; an agent enrolled with it, then pointed at an impostor that serves
    with the control plane's own TLS certificate and key; the target the agent may reach."""
    workdir = tmp_path_factory.mktemp("stolen")
    control = ControlPlane(workdir, heartbeat_s=1.0)
    target = Target()
    agent = Agent(workdir / "agents", FOOLED_AGENT, [control.url], extra=target.profile())
    impostor: Impostor | None = None
    try:
        control.start()
        agent.enroll(control.enrollment_token())
        impostor = Impostor(stolen_tls(control))
        point_at(agent, impostor.url)
        agent.start()
        yield Stolen(control, agent, impostor, target, real_signer(control))
    finally:
        agent.stop(timeout=10)
        if impostor is not None:
            impostor.close()
        target.close()
        control.stop()


def forge(case: str, signer: OfferSigner, now: float) -> Offer:
    """The offer of ``case`` for job ``case``, wrong in the way the case names."""
    if case == "unsigned":
        return rest_offer(case)
    if case == "own-key":  # the impostor's own signing key, under its own key id
        return OfferSigner(Ed25519PrivateKey.generate()).sign(rest_offer(case), now)
    if case == "random-key-real-id":  # a random key, claiming the real key's id
        forger = OfferSigner(Ed25519PrivateKey.generate())
        forger.key_id = signer.key_id
        return forger.sign(rest_offer(case), now)
    if case == "tampered-params":  # genuinely signed, then the request changed
        signed = signer.sign(rest_offer(case, path=f"/hit/{case}-as-signed"), now)
        return msgspec.structs.replace(signed, params={**signed.params, "path": f"/hit/{case}"})
    if case == "expired":
        return signer.sign(rest_offer(case), now - 3600)
    if case == "not-yet-valid":
        return signer.sign(rest_offer(case), now + 3600)
    if case == "misaddressed":  # genuinely signed, for another agent
        return signer.sign(rest_offer(case, agent="another-agent"), now)
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("unsigned", "offer_unsigned"),
        ("own-key", "offer_unknown_key"),
        ("random-key-real-id", "offer_bad_signature"),
        ("tampered-params", "offer_bad_signature"),
        ("expired", "offer_expired"),
        ("not-yet-valid", "offer_not_yet_valid"),
        ("misaddressed", "offer_misaddressed"),
    ],
)
def test_forged_offer_over_stolen_tls_is_rejected_and_reaches_nothing(stolen: Stolen, case: str, code: str) -> None:
    """A forged offer is answered with a reject naming the forgery and sends nothing to the
    target, while the same job done right, right after it on the same session, runs."""
    session = stolen.session()
    stolen.impostor.send(encode(forge(case, stolen.signer, time.time())), session)
    reject = stolen.answer(case)
    assert ("reject", code) == answered(reject), reject
    # The premise: this session, profile and target run a genuine offer (then the refusal
    # above is the forgery's doing), and it gives the forged one time to show up at the target.
    control = f"{case}-control"
    stolen.impostor.send(encode(stolen.signer.sign(rest_offer(control), time.time())), session)
    accepted = stolen.answer(control)
    assert "accept" == accepted["type"], accepted
    assert "succeeded" == stolen.completed(control)["status"]
    assert {f"/hit/{control}": 1} == stolen.target.hits(f"/hit/{case}")
    assert [("reject", code)] == [answered(a) for a in stolen.impostor.answers(case)]


def test_valid_offer_runs_once_and_its_replay_is_refused_even_after_a_restart(stolen: Stolen) -> None:
    """A genuine offer runs once; sent again it is rejected offer_replayed, and again after the
    agent process is killed and restarted; the target sees exactly one request."""
    session = stolen.session()
    frame = encode(stolen.signer.sign(rest_offer("replayed"), time.time()))
    stolen.impostor.send(frame, session)
    assert "accept" == stolen.answer("replayed")["type"]
    assert "succeeded" == stolen.completed("replayed")["status"]  # and the impostor acked it
    assert {"/hit/replayed": 1} == stolen.target.hits("/hit/replayed")

    stolen.impostor.send(frame, session)
    replay = stolen.answer("replayed", 2)
    assert ("reject", "offer_replayed") == answered(replay), replay

    stolen.agent.kill9()
    stolen.agent.start()
    restarted = stolen.session(after=session.index)  # a new process's hello
    stolen.impostor.send(frame, restarted)
    replay = stolen.answer("replayed", 3)
    assert ("reject", "offer_replayed") == answered(replay), replay
    assert [replay] == [a for a in restarted.received if a["type"] in ("accept", "reject")]
    assert {"/hit/replayed": 1} == stolen.target.hits("/hit/replayed")
    assert 1 == len(stolen.impostor.received("complete", "replayed"))


# --- a peer with a certificate of its own: no TLS, so no hello --------------------------------------


def other_ca_certificate(directory: Path) -> ssl.SSLContext:
    """A certificate for 127.0.0.1 and localhost from a CA the agent never pinned."""
    pki = write_test_pki(directory)
    return server_context(pki.cert_file, pki.key_file)


def enrolled_agent_certificate(control: ControlPlane, directory: Path) -> ssl.SSLContext:
    """Another enrolled agent's certificate and key, issued by the very CA the agent pinned."""
    identity = scripted_enroll(control, "hostile-agent")
    cert, key = directory / "hostile.pem", directory / "hostile.key"
    cert.write_bytes(identity.certificate)
    key.write_bytes(
        identity.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return server_context(cert, key)


@pytest.mark.parametrize(
    ("peer", "certificate"),
    [("impostor", "other-ca"), ("impostor", "enrolled-agent"), ("relay", "other-ca")],
)
def test_peer_with_its_own_certificate_fails_the_agents_tls_and_gets_no_hello(
    stolen: Stolen, agent_factory: AgentFactory, tmp_path: Path, peer: str, certificate: str
) -> None:
    """An impostor, or a relay to the real control plane, serving its own certificate (another
    CA's, or an enrolled agent's from the pinned CA) fails the agent's TLS handshake on every
    try: no connection opens, so no hello is sent and nothing is relayed."""
    control = stolen.control
    context = (
        other_ca_certificate(tmp_path) if certificate == "other-ca" else enrolled_agent_certificate(control, tmp_path)
    )
    upstream = f"wss://127.0.0.1:{control.port}/api/v1/agent/connect"
    server: Impostor | Relay = (
        Impostor(context) if peer == "impostor" else Relay(context, upstream, upstream_context(control))
    )
    try:
        name = f"{peer}-{certificate}-agent"
        agent = agent_factory(control, name, start=False, extra=stolen.target.profile())
        point_at(agent, server.url)
        agent.start()
        refused = f"connection to wss://127.0.0.1:{server.port}/api/v1/agent/connect failed: SSLCertVerificationError"
        # The premise: the agent reached the peer and began TLS, twice (it retried), and
        # refused the certificate both times.
        wait_until(lambda: server.client_hellos >= 2, 20, "two TLS handshakes begun by the agent")
        wait_until(lambda: agent.log_text().count(refused) >= 2, 20, "two refused handshakes in the agent's log")
        assert [] == server.sessions  # no websocket ever opened: nothing sent, nothing relayed
        assert False is connected(control, name)
    finally:
        server.close()


# --- a relay with the stolen TLS key, between the real agent and the real control plane ---------------


def test_relay_with_the_stolen_tls_key_cannot_act_as_the_agent(
    control_factory: Callable[..., ControlPlane], agent_factory: AgentFactory
) -> None:
    """A relay terminating the agent's TLS with the control plane's real certificate and key,
    forwarding frames over its own TLS connection without a client certificate, is closed 4003
    at the hello; the agent never shows connected and a job queued meanwhile never reaches the
    relay, while the same agent dialling the control plane directly runs it."""
    control = control_factory(heartbeat_s=1.0)
    target = Target()
    upstream = f"wss://127.0.0.1:{control.port}/api/v1/agent/connect"
    relay = Relay(stolen_tls(control), upstream, upstream_context(control))
    try:
        agent = agent_factory(control, "relayed-agent", start=False, extra=target.profile())
        point_at(agent, relay.url)
        agent.start()
        wait_until(
            lambda: relay.closed_sessions() or relay.sent("down", "welcome"), 20, "a relayed session to end (or pass)"
        )
        assert [] == relay.sent("down", "welcome")
        first = relay.closed_sessions()[0]
        # The premise: TLS with the agent passed, the real challenge went down, and the agent's
        # own hello (signed for that challenge and that certificate) went up.
        [challenge] = first.sent("down", "challenge")
        [hello] = first.sent("up", "hello")
        assert ("relayed-agent", "default") == (hello["agent"], hello["cluster"])
        real_cert = x509.load_pem_x509_certificate((control.data_dir / "tls" / "server.pem").read_bytes())
        binding = hashlib.sha256(real_cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        agent_key = serialization.load_pem_private_key((agent.dir / "data" / "agent.key").read_bytes(), password=None)
        assert isinstance(agent_key, Ed25519PrivateKey)
        signed = hello_bytes(challenge["nonce"], "relayed-agent", "default", binding)
        agent_key.public_key().verify(base64.b64decode(hello["signature"]), signed)  # raises if not
        code, reason = first.upstream_close or (None, "")
        assert (4003, True) == (code, "no client certificate" in reason), reason
        assert False is connected(control, "relayed-agent")

        api = control.api()
        job = api.submit("rest", {"connection": "target", "method": "GET", "path": "/hit/relayed"})
        tried = len(relay.closed_sessions())
        shown: set[bool] = set()  # what GET /api/v1/agents says, at every poll until then

        def tried_twice_more() -> bool:
            shown.add(connected(control, "relayed-agent"))
            return len(relay.closed_sessions()) >= tried + 2

        wait_until(tried_twice_more, 20, "two more relayed sessions to end")
        assert {False} == shown
        assert {4003} == {s.upstream_close[0] for s in relay.closed_sessions() if s.upstream_close}
        assert [] == relay.sent("down", "offer") + relay.sent("down", "welcome")
        assert ("queued", {}) == (api.job(job["id"])["state"], target.hits("/hit/"))

        # The same agent and job without the relay: the job was deliverable all along.
        agent.stop(timeout=10)
        point_at(agent, control.url)
        agent.start()
        done = api.wait_done(job["id"], timeout=30)
        assert ("succeeded", "relayed-agent") == (done["state"], done["agent"])
        assert {"/hit/relayed": 1} == target.hits("/hit/")
        assert [] == relay.sent("down", "offer")
    finally:
        relay.close()
        target.close()


# --- a hello replayed on another connection (plain HTTP, so no channel binding helps) ---------------


async def test_hello_replayed_on_another_connection_is_closed_4003(
    control_factory: Callable[..., ControlPlane],
) -> None:
    """Over plain HTTP, a hello accepted on one connection, sent byte for byte on a second
    connection (another nonce), is closed 4003; the first session stays up."""
    control = control_factory(tls=False)
    identity = scripted_enroll(control, "replaying-agent")
    first = await Channel.open(control.url, None)
    second = await Channel.open(control.url, None)
    try:
        [challenge] = await first.recv()
        [other] = await second.recv()
        assert ("challenge", "challenge", True) == (
            challenge["type"],
            other["type"],
            challenge["nonce"] != other["nonce"],
        )
        hello = json.dumps(
            {
                "type": "hello",
                "agent": identity.name,
                "cluster": identity.cluster,
                "signature": identity.sign_hello(challenge["nonce"], ""),
                "capacity": 1,
                "plugins": [{"name": "echo"}],
            }
        )
        await first.ws.send(hello)
        [welcome, *_] = await first.recv()
        assert "welcome" == welcome["type"]  # the premise: a genuine hello, for the first nonce
        wait_connected(control.api(), [identity.name])

        await second.ws.send(hello)
        errors = []
        with pytest.raises(ConnectionClosed):
            while True:
                errors += [m for m in await second.recv() if m["type"] == "error"]
        assert (4003, ["auth_failed"]) == (second.ws.close_code, [e["code"] for e in errors])
        assert "signature" in (second.ws.close_reason or ""), second.ws.close_reason
        assert (None, True) == (first.ws.close_code, connected(control, identity.name))
    finally:
        await first.close()
        await second.close()
