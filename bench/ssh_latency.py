"""SSH: per-command latency through the relay on a warm target, against paramiko alone.

A real sshd (started here, as the tests do) and its test account. Ways to run the same short
command (``true``), alternating, in one run:

    warm raw    paramiko: a channel and ``exec_command`` on a transport already open
    relay       an ``ssh`` job through a real control plane and agent, submitted with
                ``?wait``, timed from submit to the answer (the agent's transport is warm)
    cold raw    paramiko: connect, key exchange, host-key check and authentication for each
                command, as a MID Server-style probe that does not pool does
    plugin      the ssh plugin alone, in this process on its warm pool, each command admitted
                as the agent does (params parsed, policy checked, a job context): the SSH path
                without the control plane and agent around it
    floor       an ``echo`` job emitting one record, the same way: what the round trip through
                the control plane and agent costs without any SSH (submit, dispatch, journal,
                record, completion, answer), printed so the relay's share is visible

With ``--rtt-ms``, the same again over links with about that round-trip time: a delay proxy
(bench/_delay_proxy.py, a process of its own) between sshd and both paramiko and the agent,
as when the target is across a network rather than on the agent's host. Only the SSH hops
are delayed; the control plane and agent stay on loopback. Each link's RTT as measured (an
SSH global request and its answer) is printed beside its figures: the proxy's timers round
up to the millisecond.

    .venv/bin/python bench/ssh_latency.py [--commands 30] [--runs 3] [--rtt-ms 2,5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http.client
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from _cluster import cluster
from bridgehead_testing.sshd import Sshd, ensure_test_user, make_client_key

from bridgehead.agent.plugin_loader import parse_params
from bridgehead.plugins.ssh import SshPlugin
from bridgehead.plugins.ssh.params import SshProfile
from bridgehead.sdk import Credential
from bridgehead.sdk.testing import ListSink, job_context

COMMAND = "true"


@dataclass
class Link:
    """One way to reach the sshd: straight over loopback, or through a delay proxy."""

    name: str  # the agent's connection profile for it
    label: str
    port: int
    transport: paramiko.Transport | None = None
    times: dict[str, list[float]] = field(
        default_factory=lambda: {k: [] for k in ("rtt", "warm", "relay", "plugin", "cold")}
    )


@contextlib.contextmanager
def delay_proxy(target_port: int, one_way_ms: float) -> Iterator[int]:
    script = Path(__file__).with_name("_delay_proxy.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--target", f"127.0.0.1:{target_port}", "--one-way-ms", f"{one_way_ms:g}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()


def connect(host: str, port: int, user: str, key: paramiko.PKey) -> paramiko.Transport:
    sock = socket.create_connection((host, port))
    # As the plugin does: without TCP_NODELAY paramiko stalls ~40 ms a command on Nagle and
    # the server's delayed ACK, which would flatter the relay against a slowed-down raw call.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock)
    transport.start_client()
    transport.auth_publickey(user, key)
    return transport


def round_trip(transport: paramiko.Transport) -> None:
    """One request and its answer on the open transport and nothing else: the link's RTT
    as SSH sees it (sshd answers an unknown global request with a failure)."""
    transport.global_request("keepalive@openssh.com", wait=True)


def exec_once(transport: paramiko.Transport) -> int:
    channel = transport.open_session()
    channel.exec_command(COMMAND)
    channel.recv(1024)
    status = channel.recv_exit_status()
    channel.close()
    return status


def timed(fn: object, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rtt-ms", default="", help="round-trip times to add, comma-separated (e.g. 2,5)")
    args = parser.parse_args()
    rtts = [float(x) for x in args.rtt_ms.split(",") if x.strip()]
    user = ensure_test_user()
    with tempfile.TemporaryDirectory(prefix="bridgehead-bench-ssh-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        server = Sshd(workdir / "sshd", users=[user.name]).start()
        stack.callback(server.stop)
        private, public = make_client_key(workdir / "id_ed25519")
        server.add_authorized_key(user.name, public)
        key = paramiko.PKey.from_path(private)
        links = [Link("bench", "loopback", server.port)]
        for rtt in rtts:
            port = stack.enter_context(delay_proxy(server.port, rtt / 2))
            links.append(Link(f"bench_rtt{len(links)}", f"RTT {rtt:g} ms", port))
        extra = "".join(
            f'[connections.{link.name}]\nplugin = "ssh"\nhost = "{server.host}"\nport = {link.port}\n'
            f'host_key = "{server.host_key_fingerprint()}"\ncredential = "bench"\n\n'
            for link in links
        )
        extra += f'[credentials.bench]\nusername = "{user.name}"\nprivate_key_file = "{private}"\n'
        credential = Credential(username=user.name, private_key_file=str(private))
        measure(server, user.name, key, extra, links, credential, args)


def measure(
    server: Sshd,
    user: str,
    key: paramiko.PKey,
    agent_extra: str,
    links: list[Link],
    credential: Credential,
    args: argparse.Namespace,
) -> None:
    floor: list[float] = []
    plugin, plugin_loop = SshPlugin(), asyncio.new_event_loop()
    for link in links:
        link.transport = connect(server.host, link.port, user, key)

    def plugin_once(link: Link) -> None:
        params = parse_params(plugin, {"connection": link.name, "command": COMMAND})
        profile = SshProfile(plugin="ssh", host=server.host, port=link.port, host_key=server.host_key_fingerprint())
        plugin.check_policy(profile, params)
        sink = ListSink()
        ctx = job_context(profile, sink, credential=credential, timeout_s=30)
        plugin_loop.run_until_complete(plugin.run(ctx, params))
        (record,) = [json.loads(r) for r in sink.records]
        if record["exit_code"] != 0:
            raise SystemExit(f"plugin run failed: {record}")

    with cluster(agent_extra=agent_extra) as (control, _agent):
        api = control.api()
        echo_body = json.dumps({"plugin": "echo", "params": {"records": [{"exit_code": 0}]}}).encode()

        # One kept-alive HTTP connection, as a real client of the job API would hold: a new
        # TCP connection per job would charge the relay for the bench's own client.
        # HTTPS with the control plane's own CA, as every client of the API talks to it.
        url = urllib.parse.urlsplit(control.url)
        assert url.hostname is not None and url.port is not None
        conn: http.client.HTTPConnection = (
            http.client.HTTPSConnection(url.hostname, url.port, context=control.context)
            if url.scheme == "https"
            else http.client.HTTPConnection(url.hostname, url.port)
        )
        headers = {"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"}

        def submit(body: bytes) -> None:
            conn.request("POST", "/api/v1/jobs?wait=30", body=body, headers=headers)
            job = json.loads(conn.getresponse().read())
            if job["state"] != "succeeded":
                raise SystemExit(f"relay job failed: {job}")

        def ssh_body(link: Link) -> bytes:
            return json.dumps({"plugin": "ssh", "params": {"connection": link.name, "command": COMMAND}}).encode()

        def cold_once(link: Link) -> None:
            fresh = connect(server.host, link.port, user, key)
            exec_once(fresh)
            fresh.close()

        for link in links:  # the agent's and the in-process plugin's transports open here
            submit(ssh_body(link))
            plugin_once(link)
        for run in range(1, args.runs + 1):
            o = timed(lambda: submit(echo_body), args.commands)
            floor += o
            print(f"run {run}: floor (echo job) p50 {statistics.median(o):5.2f} ms")
            for link in links:
                got = {
                    "rtt": timed(functools.partial(round_trip, link.transport), args.commands),
                    "warm": timed(functools.partial(exec_once, link.transport), args.commands),
                    "relay": timed(functools.partial(submit, ssh_body(link)), args.commands),
                    "plugin": timed(functools.partial(plugin_once, link), args.commands),
                    "cold": timed(functools.partial(cold_once, link), max(5, args.commands // 3)),
                }
                for kind, values in got.items():
                    link.times[kind] += values
                p50 = {kind: statistics.median(values) for kind, values in got.items()}
                print(
                    f"  {link.label:>14}: p50 RTT {p50['rtt']:5.2f} ms, warm raw {p50['warm']:6.2f} ms, "
                    f"relay {p50['relay']:6.2f} ms, "
                    f"plugin {p50['plugin']:6.2f} ms, cold raw {p50['cold']:6.1f} ms"
                )
    for link in links:
        if link.transport is not None:
            link.transport.close()
    plugin_loop.run_until_complete(plugin.aclose())
    plugin_loop.close()
    o = statistics.median(floor)
    print(f"\nmedians; floor (an echo job through the relay) {o:.2f} ms")
    for link in links:
        t, w, r, a, c = (statistics.median(link.times[k]) for k in ("rtt", "warm", "relay", "plugin", "cold"))
        print(
            f"{link.label} (measured RTT {t:.2f} ms): warm raw {w:.2f} ms, relay {r:.2f} ms, "
            f"plugin alone {a:.2f} ms, cold raw {c:.1f} ms\n"
            f"  relay / warm raw = {r / w:.2f}x (goal <= 1.2x); cold / relay = {c / r:.1f}x faster (goal >= 5x)\n"
            f"  plugin alone / warm raw = {a / w:.2f}x; relay - floor = {r - o:.2f} ms, {(r - o) / w:.2f}x warm raw"
        )


if __name__ == "__main__":
    main()
