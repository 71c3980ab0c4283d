"""The relay end to end: real control plane and agent processes on loopback."""

from __future__ import annotations

import collections
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bridgehead_testing.harness import ROOT, Agent, ControlPlane, free_port, scaled, wait_connected, wait_until
from bridgehead_testing.outages import CuttableProxy, stopped

AgentFactory = Callable[..., Agent]


@pytest.fixture
def internal_api() -> Iterator[str]:
    """The demo's stand-in internal API, as a real HTTP server process."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "demo_api.py"), "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        def up() -> bool:
            try:
                with urllib.request.urlopen(url + "/health", timeout=1):  # noqa: S310
                    return True
            except OSError:
                return False

        wait_until(up, 15, "internal API")
        yield url
    finally:
        proc.terminate()
        proc.wait()


def rest_profile(url: str) -> str:
    return f'[connections.internal]\nplugin = "rest"\nbase_url = "{url}"\n'


def numbers(records: list[dict[str, object]]) -> list[object]:
    return [r["n"] for r in records]


def test_200_rest_jobs_each_get_exactly_their_own_record(
    control: ControlPlane, agent_factory: AgentFactory, internal_api: str
) -> None:
    """200 REST jobs through one agent each succeed with exactly the record of their own call."""
    agent_factory(control, extra=rest_profile(internal_api))
    api = control.api()
    wait_connected(api, ["agent-1"])
    jobs = [
        api.submit("rest", {"connection": "internal", "path": f"/api/items/{i}", "headers": {"X-Job": str(i)}})
        for i in range(200)
    ]
    for i, job in enumerate(jobs):
        done = api.wait_done(job["id"])
        assert ("succeeded", 1) == (done["state"], done["record_count"]), done
        [record] = api.records(job["id"])
        assert (200, {"item": i, "checked_by": str(i)}) == (record["status"], record["body"])


def test_agent_killed_mid_run_then_restarted_loses_and_duplicates_nothing(
    control: ControlPlane, agent_factory: AgentFactory
) -> None:
    """kill -9 of the agent while jobs stream, then a restart: every job succeeds, each record once."""
    agent = agent_factory(control)
    api = control.api()
    wait_connected(api, ["agent-1"])
    jobs = [api.submit("echo", {"count": 40, "interval_s": 0.01}) for _ in range(30)]
    # Records of a later job arriving: the agent is mid-run on several jobs at once.
    wait_until(lambda: api.job(jobs[3]["id"])["record_count"] > 0, 20, "records streaming")
    agent.kill9()
    agent.start()
    for job in jobs:
        done = api.wait_done(job["id"], timeout=90)
        assert "succeeded" == done["state"], done
        assert list(range(40)) == numbers(api.records(job["id"]))
    assert any(api.job(j["id"])["attempt"] > 1 for j in jobs), "the kill interrupted no attempt"


def test_control_plane_killed_and_restarted_on_same_data_dir(
    control: ControlPlane, agent_factory: AgentFactory
) -> None:
    """kill -9 of the control plane mid-run and a restart on its data dir: every job succeeds once."""
    agent_factory(control)
    api = control.api()
    wait_connected(api, ["agent-1"])
    jobs = [api.submit("echo", {"count": 200, "interval_s": 0.002}) for _ in range(20)]
    wait_until(lambda: api.job(jobs[2]["id"])["record_count"] > 0, 20, "records streaming")
    control.kill9()
    control.start()
    for job in jobs:
        done = api.wait_done(job["id"], timeout=90)
        assert "succeeded" == done["state"], done
        assert list(range(200)) == numbers(api.records(job["id"]))


def test_two_agents_share_the_work_and_one_survives_the_other(
    control: ControlPlane, agent_factory: AgentFactory
) -> None:
    """Two agents of one cluster both take jobs; kill -9 one and the other finishes everything."""
    a = agent_factory(control, "agent-a", max_concurrent_jobs=4)
    agent_factory(control, "agent-b", max_concurrent_jobs=4)
    api = control.api()
    wait_connected(api, ["agent-a", "agent-b"])
    first = [api.submit("echo", {"count": 5, "sleep_s": 0.2}) for _ in range(16)]
    assert {"agent-a", "agent-b"} == {api.wait_done(j["id"])["agent"] for j in first}
    second = [api.submit("echo", {"count": 20, "sleep_s": 1.0}) for _ in range(16)]
    wait_until(lambda: sum(api.job(j["id"])["state"] == "running" for j in second) >= 6, 20, "both busy")
    a.kill9()
    for job in second:
        done = api.wait_done(job["id"], timeout=90)
        assert ("succeeded", "agent-b") == (done["state"], done["agent"]), done
        assert list(range(20)) == numbers(api.records(job["id"]))


@pytest.mark.slow
def test_network_cut_of_30_s_while_records_stream(control: ControlPlane, agent_factory: AgentFactory) -> None:
    """Dropping the agent's connection for 30 s mid-stream loses and duplicates no record."""
    proxy = CuttableProxy(control.port, scheme="https")
    try:
        agent_factory(control, urls=[proxy.url])
        api = control.api()
        wait_connected(api, ["agent-1"])
        # 12 s of records: still streaming when the cut comes, and blocked on its full window
        # (or done into the spool) by the time it ends, so both sides of the cut are exercised.
        job = api.submit("echo", {"count": 600, "interval_s": 0.02})
        wait_until(lambda: api.job(job["id"])["record_count"] > 50, 20, "records streaming")
        proxy.cut()
        wait_until(lambda: not api.request("GET", "/api/v1/agents")[1][0]["connected"], 10, "agent seen lost")
        time.sleep(30)  # the outage's length is the behaviour under test
        proxy.restore()
        done = api.wait_done(job["id"], timeout=120)
        assert "succeeded" == done["state"], done
        assert list(range(600)) == numbers(api.records(job["id"]))
    finally:
        proxy.close()


def _spool_bytes(agent: Agent) -> int:
    db = sqlite3.connect(f"file:{agent.dir / 'data' / 'journal.db'}?mode=ro", uri=True, timeout=5)
    try:
        (total,) = db.execute("SELECT COALESCE(SUM(length(data)), 0) FROM spool").fetchone()
        return int(total)
    finally:
        db.close()


def test_backpressure_blocks_the_plugin_and_drops_nothing(control: ControlPlane, agent_factory: AgentFactory) -> None:
    """With the control plane frozen, the window and spool fill, the plugin blocks; then all arrives once."""
    spool_cap = 300_000
    agent = agent_factory(
        control,
        extra=f"[limits]\nwindow_records = 50\nwindow_bytes = 65536\nspool_max_bytes = {spool_cap}\n"
        "batch_records = 20\n",
    )
    api = control.api()
    wait_connected(api, ["agent-1"])
    job = api.submit("echo", {"count": 20_000, "size": 500})
    # Records arriving prove the agent runs it ("running" alone means only that it was offered).
    wait_until(lambda: api.job(job["id"])["record_count"] > 0, 20, "records flowing")
    assert control.proc is not None
    with stopped(control.proc):
        # Frozen: acks stop, so the window fills, then the spool up to its cap, then the plugin waits.
        wait_until(lambda: _spool_bytes(agent) > spool_cap - 2_000, 30, "spool to fill")
        # Time bounds of the behaviour itself: the journal commits spooled rows at least every
        # second, so past that the spool on disk is all there is; then it stays put (blocked).
        time.sleep(scaled(1.2))
        before = _spool_bytes(agent)
        time.sleep(scaled(1.5))
        assert before == _spool_bytes(agent) <= spool_cap
    done = api.wait_done(job["id"], timeout=120)
    assert ("succeeded", 20_000) == (done["state"], done["record_count"]), done
    assert list(range(20_000)) == numbers(api.records(job["id"]))


def test_cancel_reaches_a_running_plugin(control: ControlPlane, agent_factory: AgentFactory) -> None:
    """Cancelling a running job stops its plugin and the job ends cancelled."""
    agent_factory(control)
    api = control.api()
    wait_connected(api, ["agent-1"])
    job = api.submit("echo", {"sleep_s": 600})
    wait_until(lambda: api.job(job["id"])["state"] == "running", 20, "job running")
    status, _ = api.request("POST", f"/api/v1/jobs/{job['id']}/cancel")
    assert 200 == status
    done = api.wait_done(job["id"], timeout=20)
    assert ("cancelled", "cancelled") == (done["state"], done["error"]["code"])


def test_cancel_of_a_queued_job(control: ControlPlane) -> None:
    """A queued job (no agent) is cancelled at once."""
    api = control.api()
    job = api.submit("echo", {})
    status, body = api.request("POST", f"/api/v1/jobs/{job['id']}/cancel")
    assert (200, "cancelled") == (status, body["state"])
    assert 409 == api.request("POST", f"/api/v1/jobs/{job['id']}/cancel")[0]


def test_timeout_fails_the_job_with_code_timeout(control: ControlPlane, agent_factory: AgentFactory) -> None:
    """A job past its timeout_s is stopped and fails with error code timeout, after max_attempts."""
    agent_factory(control)
    api = control.api()
    wait_connected(api, ["agent-1"])
    job = api.submit("echo", {"sleep_s": 600}, timeout_s=0.5, max_attempts=1)
    done = api.wait_done(job["id"], timeout=20)
    assert ("failed", "timeout") == (done["state"], done["error"]["code"])


def test_retryable_failure_is_retried_up_to_max_attempts(control: ControlPlane, agent_factory: AgentFactory) -> None:
    """A plugin failing with a non-retryable code fails at once; the job's attempt stays 1."""
    agent_factory(control)
    api = control.api()
    wait_connected(api, ["agent-1"])
    job = api.submit("echo", {"records": [{"a": 1}], "fail": "boom"}, max_attempts=3)
    done = api.wait_done(job["id"])
    assert ("failed", "boom", 1, 1) == (done["state"], done["error"]["code"], done["attempt"], done["record_count"])
    assert [{"a": 1}] == api.records(job["id"])


def test_idempotency_key_returns_the_same_job(control: ControlPlane) -> None:
    """The same idempotency_key gives back the first job; other content under it is a 409."""
    api = control.api()
    first = api.submit("echo", {"count": 1}, idempotency_key="k-1")
    status, again = api.request(
        "POST", "/api/v1/jobs", {"plugin": "echo", "params": {"count": 1}, "idempotency_key": "k-1"}
    )
    assert (200, first["id"]) == (status, again["id"])
    status, body = api.request(
        "POST", "/api/v1/jobs", {"plugin": "echo", "params": {"count": 2}, "idempotency_key": "k-1"}
    )
    assert (409, "idempotency_conflict") == (status, body["error"]["code"])


def test_wait_holds_the_answer_until_the_job_ends(control: ControlPlane, agent_factory: AgentFactory) -> None:
    """GET ?wait=S answers when the job ends, not before, and not later than S."""
    api = control.api()
    job = api.submit("echo", {"sleep_s": 0.5, "count": 1})
    started = time.monotonic()
    assert "queued" == api.job(job["id"], wait=0.5)["state"]
    assert time.monotonic() - started >= 0.45
    agent_factory(control)
    assert "succeeded" == api.job(job["id"], wait=30)["state"]


def test_sigterm_drains_running_jobs_then_exits_zero(control: ControlPlane, agent_factory: AgentFactory) -> None:
    """SIGTERM lets a running job finish and deliver before the agent exits 0."""
    agent = agent_factory(control)
    api = control.api()
    wait_connected(api, ["agent-1"])
    job = api.submit("echo", {"count": 10, "interval_s": 0.15})
    # A record arriving means the agent accepted and runs it ("running" alone means offered, and
    # a draining agent rightly refuses an offer that reaches it after the SIGTERM).
    wait_until(lambda: api.job(job["id"])["record_count"] > 0, 20, "job running on the agent")
    assert 0 == agent.stop()
    done = api.job(job["id"])
    assert ("succeeded", 1) == (done["state"], done["attempt"]), done
    assert list(range(10)) == numbers(api.records(job["id"]))


def test_jobs_spread_by_plugin_and_cluster(control: ControlPlane, agent_factory: AgentFactory) -> None:
    """A job for cluster B never runs on an agent of cluster A."""
    agent_factory(control, "agent-a", cluster="a")
    agent_factory(control, "agent-b", cluster="b")
    api = control.api()
    wait_connected(api, ["agent-a", "agent-b"])
    jobs = [api.submit("echo", {"count": 1}, cluster="b") for _ in range(10)]
    assert collections.Counter(["agent-b"] * 10) == collections.Counter(api.wait_done(j["id"])["agent"] for j in jobs)


def test_agent_list_and_metrics(control: ControlPlane, agent_factory: AgentFactory, tmp_path: Path) -> None:
    """The agent list shows the live agent and its plugins; /metrics counts finished jobs."""
    agent_factory(control)
    api = control.api()
    wait_connected(api, ["agent-1"])
    api.wait_done(api.submit("echo", {"count": 1})["id"])
    status, agents = api.request("GET", "/api/v1/agents")
    assert 200 == status
    [agent] = agents
    assert (True, "default") == (agent["connected"], agent["cluster"])
    assert {"echo", "rest"} <= set(agent["plugins"])
    text = control.metrics()
    assert 'bridgehead_jobs_finished_total{state="succeeded"} 1.0' in text
