"""A network partition between the agents and one control-plane node (issue 19): the agents
run in a network namespace the test makes, joined to each node by a link of its own; cutting
node A's link drops its packets both ways, with no FIN or RST, while A keeps running and keeps
its database. The agents move to node B, B takes over their attempts, and when the link heals
nothing is doubled: every job ended once, every record is there once, and the REST server the
jobs POST to (not safe to repeat) saw each job's request at most once."""

from __future__ import annotations

import http.server
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bridgehead_testing.harness import Agent, Api, scaled, wait_until
from bridgehead_testing.netns import Namespace
from bridgehead_testing.nodes import IDENTITY_SECRET_ENV, fresh_database, running_nodes


class Witness(http.server.ThreadingHTTPServer):
    """An HTTP server counting each job's POST (the body names the job), answering slowly."""

    def __init__(self, host: str) -> None:
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()
        super().__init__((host, 0), _WitnessHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}"


class _WitnessHandler(http.server.BaseHTTPRequestHandler):
    server: Witness

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.seen[body["job"]] = self.server.seen.get(body["job"], 0) + 1
        time.sleep(0.2)
        answer = json.dumps({"job": body["job"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    ns = Namespace(links=2)
    try:
        yield ns
    finally:
        ns.close()


def test_a_partitioned_node_loses_its_agents_to_the_other_and_nothing_doubles(
    namespace: Namespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(IDENTITY_SECRET_ENV, secrets.token_urlsafe(32))
    witness = Witness(namespace.host_ip(1))  # reached through B's link, which stays up
    profiles = f'[connections.witness]\nplugin = "rest"\nbase_url = "{witness.url}"\n'
    agents: list[Agent] = []
    with (
        fresh_database() as database,
        running_nodes(tmp_path, database, [namespace.host_ip(0), namespace.host_ip(1)]) as (a, b),
    ):
        try:
            for i in (1, 2):
                agent = Agent(tmp_path / "agents", f"agent-{i}", [a.url, b.url], extra=profiles, max_concurrent_jobs=8)
                agent.enroll(a.enrollment_token())  # from the host, which reaches both links
                agent.wrapper = namespace.wrapper  # then runs in the namespace
                agents.append(agent)
            jobs: dict[str, dict[str, Any]] = {}
            api_a, api_b = a.api(), b.api()
            for i in range(200):
                if i % 2:
                    params = {"connection": "witness", "path": "/run", "method": "POST", "json": {"job": f"j{i}"}}
                    jobs[f"j{i}"] = {"plugin": "rest", **api_b.submit("rest", params, max_attempts=5)}
                else:
                    params = {"records": [{"i": i, "k": k} for k in range(3)], "sleep_s": 0.2}
                    jobs[f"j{i}"] = {"plugin": "echo", **api_a.submit("echo", params, max_attempts=5)}
            for agent in agents:
                agent.start()

            def on_node(api: Api) -> set[str]:
                """The agents with a session on this very node (not on another: ``node``)."""
                agents = api.request("GET", "/api/v1/agents")[1]
                return {x["name"] for x in agents if x["connected"] and x["node"] is None}

            wait_until(lambda: on_node(api_a) == {"agent-1", "agent-2"}, scaled(30), "both agents on node A")
            wait_until(lambda: done_count(api_b) >= 20, scaled(60), "some jobs done")
            namespace.cut(0)  # A and the agents no longer hear each other; A and B both run on
            cut_at = time.monotonic()
            held = {n["url"]: n["running"] for n in api_b.request("GET", "/api/v1/nodes")[1]["nodes"]}
            assert held[a.url] > 0, held  # premise: A held attempts when it was cut off
            wait_until(lambda: on_node(api_b) == {"agent-1", "agent-2"}, scaled(30), "both agents moved to B")
            moved_s = time.monotonic() - cut_at
            time.sleep(scaled(3))  # A notices its agents' silence and its leases lapse meanwhile
            namespace.heal(0)
            wait_until(lambda: all_ended(api_b), scaled(120), "every job ended")
            check_exactly_once(api_b, jobs, witness)
            # A is alive and serving all along: the partition cut the agents off, not A.
            nodes = {n["url"]: n for n in api_b.request("GET", "/api/v1/nodes")[1]["nodes"]}
            assert nodes[a.url]["alive"], nodes
            print(f"agents moved to node B {moved_s:.1f} s after the cut; {held[a.url]} attempts were held by A")
        finally:
            for agent in agents:
                agent.stop(timeout=10)
            witness.shutdown()
            witness.server_close()


def done_count(api: Api) -> int:
    return len(api.request("GET", "/api/v1/jobs?state=succeeded&limit=1000")[1]["jobs"])


def all_ended(api: Api) -> bool:
    return not any(api.request("GET", f"/api/v1/jobs?state={s}&limit=1")[1]["jobs"] for s in ("queued", "running"))


def check_exactly_once(api: Api, jobs: dict[str, dict[str, Any]], witness: Witness) -> None:
    failed: list[dict[str, Any]] = []
    for marker, job in jobs.items():
        done = api.job(job["id"])
        if done["state"] != "succeeded":
            # Only a POST whose attempt was lost may fail (it is never sent twice).
            assert job["plugin"] == "rest" and done["error_code"] == "agent_lost", done
            failed.append(done)
            continue
        records = api.records(job["id"])
        if job["plugin"] == "echo":
            number = int(marker[1:])
            assert [(r["i"], r["k"]) for r in records] == [(number, k) for k in range(3)], done
        else:
            assert len(records) == 1 and records[0]["body"] == {"job": marker}, records
            assert witness.seen.get(marker) == 1, (marker, witness.seen.get(marker))
    assert max(witness.seen.values()) == 1, {k: v for k, v in witness.seen.items() if v > 1}
    assert len(failed) <= 5, failed


AgentFactory = Callable[..., Agent]
