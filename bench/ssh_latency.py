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

    .venv/bin/python bench/ssh_latency.py [--commands 30] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
import socket
import statistics
import tempfile
import time
from pathlib import Path

import paramiko
from _cluster import cluster
from sshd import Sshd, ensure_test_user, make_client_key

from agent.plugin_loader import parse_params
from agent.sdk import Credential, JobContext
from agent.testing import ListSink
from plugins.ssh import SshPlugin
from plugins.ssh.params import SshProfile

COMMAND = "true"


def connect(server: Sshd, user: str, key: paramiko.PKey) -> paramiko.Transport:
    sock = socket.create_connection((server.host, server.port))
    # As the plugin does: without TCP_NODELAY paramiko stalls ~40 ms a command on Nagle and
    # the server's delayed ACK, which would flatter the relay against a slowed-down raw call.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock)
    transport.start_client()
    transport.auth_publickey(user, key)
    return transport


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
    args = parser.parse_args()
    user = ensure_test_user()
    with tempfile.TemporaryDirectory(prefix="bridgehead-bench-ssh-") as tmp:
        workdir = Path(tmp)
        server = Sshd(workdir / "sshd", users=[user.name]).start()
        try:
            private, public = make_client_key(workdir / "id_ed25519")
            server.add_authorized_key(user.name, public)
            key = paramiko.PKey.from_path(private)
            extra = (
                f'[connections.bench]\nplugin = "ssh"\nhost = "{server.host}"\nport = {server.port}\n'
                f'host_key = "{server.host_key_fingerprint()}"\ncredential = "bench"\n\n'
                f'[credentials.bench]\nusername = "{user.name}"\nprivate_key_file = "{private}"\n'
            )
            profile = SshProfile(
                plugin="ssh", host=server.host, port=server.port, host_key=server.host_key_fingerprint()
            )
            credential = Credential(username=user.name, private_key_file=str(private))
            measure(server, user.name, key, extra, (profile, credential), args)
        finally:
            server.stop()


def measure(
    server: Sshd,
    user: str,
    key: paramiko.PKey,
    agent_extra: str,
    plugin_target: tuple[SshProfile, Credential],
    args: argparse.Namespace,
) -> None:
    warm: list[float] = []
    relay: list[float] = []
    cold: list[float] = []
    floor: list[float] = []
    alone: list[float] = []
    transport = connect(server, user, key)
    plugin, plugin_loop = SshPlugin(), asyncio.new_event_loop()
    profile, credential = plugin_target

    def plugin_once() -> None:
        params = parse_params(plugin, {"connection": "bench", "command": COMMAND})
        plugin.check_policy(profile, params)
        sink = ListSink()
        ctx: JobContext[SshProfile] = JobContext(
            job_id="bench",
            attempt=1,
            profile=profile,
            credential=credential,
            sink=sink,
            deadline=time.monotonic() + 30,
            max_record_bytes=1 << 20,
            logger=logging.getLogger("bench"),
        )
        plugin_loop.run_until_complete(plugin.run(ctx, params))
        (record,) = [json.loads(r) for r in sink.records]
        if record["exit_code"] != 0:
            raise SystemExit(f"plugin run failed: {record}")

    with cluster(agent_extra=agent_extra) as (control, _agent):
        api = control.api()
        ssh_body = json.dumps({"plugin": "ssh", "params": {"connection": "bench", "command": COMMAND}}).encode()
        echo_body = json.dumps({"plugin": "echo", "params": {"records": [{"exit_code": 0}]}}).encode()

        # One kept-alive HTTP connection, as a real client of the job API would hold: a new
        # TCP connection per job would charge the relay for the bench's own client.
        host, port = control.url.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port))
        headers = {"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"}

        def submit(body: bytes) -> None:
            conn.request("POST", "/api/v1/jobs?wait=30", body=body, headers=headers)
            job = json.loads(conn.getresponse().read())
            if job["state"] != "succeeded":
                raise SystemExit(f"relay job failed: {job}")

        def via_relay() -> None:
            submit(ssh_body)

        def via_floor() -> None:
            submit(echo_body)

        def cold_once() -> None:
            fresh = connect(server, user, key)
            exec_once(fresh)
            fresh.close()

        via_relay()  # the agent's transport is opened here: every timed job is warm
        plugin_once()  # and the in-process plugin's
        for run in range(1, args.runs + 1):
            w = timed(lambda: exec_once(transport), args.commands)
            r = timed(via_relay, args.commands)
            a = timed(plugin_once, args.commands)
            c = timed(cold_once, max(5, args.commands // 3))
            o = timed(via_floor, args.commands)
            warm += w
            relay += r
            alone += a
            cold += c
            floor += o
            print(
                f"run {run}: p50 warm raw {statistics.median(w):5.2f} ms, relay {statistics.median(r):5.2f} ms, "
                f"plugin {statistics.median(a):5.2f} ms, cold raw {statistics.median(c):5.1f} ms, "
                f"floor (echo job) {statistics.median(o):5.2f} ms"
            )
    transport.close()
    plugin_loop.run_until_complete(plugin.aclose())
    plugin_loop.close()
    w, r, c = statistics.median(warm), statistics.median(relay), statistics.median(cold)
    o, a = statistics.median(floor), statistics.median(alone)
    print(
        f"\nmedian per command: warm raw {w:.2f} ms, relay {r:.2f} ms, plugin alone {a:.2f} ms, "
        f"cold raw {c:.1f} ms, floor {o:.2f} ms\n"
        f"relay / warm raw = {r / w:.2f}x (goal <= 1.2x); cold / relay = {c / r:.1f}x faster (goal >= 5x)\n"
        f"plugin alone / warm raw = {a / w:.2f}x; relay - floor = {r - o:.2f} ms, {(r - o) / w:.2f}x warm raw"
    )


if __name__ == "__main__":
    main()
