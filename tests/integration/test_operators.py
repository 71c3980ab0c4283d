"""Operators who are known and answers bounded by bytes: tokens, the audit log, /metrics, record
pages and the data dirs' permissions, against real control-plane and agent processes."""

from __future__ import annotations

import json
import os
import stat
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from bridgehead_testing.harness import Agent, Api, ControlPlane, run_cli, urlopen, wait_connected, wait_until
from bridgehead_testing.sandbox_server import SandboxServer, with_setup

AgentFactory = Callable[..., Agent]
ControlFactory = Callable[..., ControlPlane]
MiB = 1024 * 1024


def cli_token(control: ControlPlane, role: str, name: str, *extra: str) -> str:
    args = ("bridgehead.control.cli", "api-token", "create", "--data-dir", str(control.data_dir), "--role", role)
    return run_cli(*args, "--name", name, *extra).stdout.strip()


def whoami(control: ControlPlane, token: str | None) -> tuple[int, Any]:
    return Api(control.url, token, control.context).request("GET", "/api/v1/whoami")


def status_of(control: ControlPlane, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urlopen(urllib.request.Request(control.url + path, headers=headers)) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def audit_entries(api: Api, **filters: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    after = 0
    while True:
        query = "&".join([f"after={after}", "limit=2", *(f"{k}={v}" for k, v in filters.items())])
        status, page = api.request("GET", f"/api/v1/audit?{query}")
        assert 200 == status, page
        entries += page["entries"]
        if page["next"] is None:
            return entries
        after = page["next"]


def test_roles_and_tokens_refused_at_once(control: ControlPlane) -> None:
    """A viewer cannot submit; no token, a revoked (API or CLI) and an expired token get 401."""
    viewer = cli_token(control, "viewer", "dashboard")
    status, _ = Api(control.url, viewer, control.context).request(
        "POST", "/api/v1/jobs", {"plugin": "echo", "params": {}}
    )
    assert 403 == status
    assert 401 == whoami(control, None)[0]
    assert 401 == whoami(control, "bh_not-a-token")[0]

    admin = control.api()
    status, made = admin.request("POST", "/api/v1/tokens", {"role": "operator", "name": "ci"})
    assert 201 == status, made
    assert (200, "operator") == (whoami(control, made["token"])[0], whoami(control, made["token"])[1]["role"])
    status, _ = admin.request("DELETE", f"/api/v1/tokens/{made['id']}")
    assert 200 == status
    assert 401 == whoami(control, made["token"])[0]  # the role cache does not let it through

    by_cli = cli_token(control, "operator", "cron-box")
    status, me = whoami(control, by_cli)
    assert (200, "cron-box") == (status, me["name"])
    run_cli("bridgehead.control.cli", "api-token", "revoke", me["token"], "--data-dir", str(control.data_dir))
    wait_until(lambda: whoami(control, by_cli)[0] == 401, 1.0, "the CLI's revocation to be refused")

    short = cli_token(control, "viewer", "short", "--ttl", "1")
    assert 200 == whoami(control, short)[0]
    wait_until(lambda: whoami(control, short)[0] == 401, 10, "the token to expire")

    listing = run_cli("bridgehead.control.cli", "api-token", "list", "--data-dir", str(control.data_dir)).stdout
    assert me["token"] in listing and "cron-box" in listing and by_cli not in listing
    status, tokens = admin.request("GET", "/api/v1/tokens")
    assert 200 == status
    by_id = {t["id"]: t for t in tokens["tokens"]}
    assert by_id[me["token"]]["revoked_at"] is not None
    assert by_id[me["token"]]["last_used_at"] is not None
    assert all("token" not in t for t in tokens["tokens"])


def test_every_change_is_audited_with_who_and_where(control: ControlPlane, agent_factory: AgentFactory) -> None:
    """Job submit and cancel, schedule changes, enrolment, revocation and token changes name the
    actor's token id and label and the client's address."""
    agent_factory(control, start=False)  # enrolled: the store audits it
    admin_token = cli_token(control, "admin", "alice")
    admin = Api(control.url, admin_token, control.context)
    status, made = admin.request("POST", "/api/v1/tokens", {"role": "operator", "name": "bob"})
    assert 201 == status, made
    operator = Api(control.url, made["token"], control.context)

    job = operator.submit("echo", {"sleep_s": 60})
    assert 200 == operator.request("POST", f"/api/v1/jobs/{job['id']}/cancel")[0]
    schedule = {"name": "nightly", "cron": "0 0 1 1 *", "timezone": "UTC", "job": {"plugin": "echo", "params": {}}}
    assert 201 == operator.request("POST", "/api/v1/schedules", schedule)[0]
    assert 200 == operator.request("PATCH", "/api/v1/schedules/nightly", {"enabled": False})[0]
    assert 201 == operator.request("POST", "/api/v1/schedules/nightly/run")[0]
    assert 200 == operator.request("DELETE", "/api/v1/schedules/nightly")[0]
    assert 201 == admin.request("POST", "/api/v1/enrollment-tokens", {"cluster": "default"})[0]
    assert 200 == admin.request("DELETE", "/api/v1/agents/agent-1")[0]
    assert 200 == admin.request("DELETE", f"/api/v1/tokens/{made['id']}")[0]

    entries = audit_entries(admin)
    who = {(e["action"], e["actor"], e["actor_name"], e["address"]) for e in entries}
    alice = whoami(control, admin_token)[1]["token"]
    expected = {
        ("agent.enroll", "enrollment-token", "", "127.0.0.1"),
        ("api_token.create", alice, "alice", "127.0.0.1"),
        ("job.submit", made["id"], "bob", "127.0.0.1"),
        ("job.cancel", made["id"], "bob", "127.0.0.1"),
        ("schedule.create", made["id"], "bob", "127.0.0.1"),
        ("schedule.disable", made["id"], "bob", "127.0.0.1"),
        ("schedule.run", made["id"], "bob", "127.0.0.1"),
        ("schedule.delete", made["id"], "bob", "127.0.0.1"),
        ("enrollment_token.create", alice, "alice", "127.0.0.1"),
        ("agent.revoke", alice, "alice", "127.0.0.1"),
        ("api_token.revoke", alice, "alice", "127.0.0.1"),
    }
    assert expected <= who, sorted(who)
    assert ("api_token.create", "cli", "", "local") in who  # alice's own token, made by the CLI
    submitted = [e for e in entries if e["action"] == "job.submit"]
    assert job["id"] == submitted[0]["detail"]["job"]

    assert {"bob"} == {e["actor_name"] for e in audit_entries(admin, actor="bob")}
    assert ["job.cancel"] == [e["action"] for e in audit_entries(admin, action="job.cancel")]
    assert [] == audit_entries(admin, since=str(entries[-1]["at"] + 1))
    assert 403 == operator.request("GET", "/api/v1/audit", token=cli_token(control, "operator", "x"))[0]


def test_metrics_need_a_token_unless_public(control_factory: ControlFactory) -> None:
    """/metrics is 401 without a token, 200 with a viewer's, and 200 without one when metrics_public."""
    closed = control_factory()
    assert 401 == status_of(closed, "/metrics", None)
    assert 200 == status_of(closed, "/metrics", cli_token(closed, "viewer", "prometheus"))
    public = control_factory(metrics_public=True)
    assert 200 == status_of(public, "/metrics", None)


def records_page(control: ControlPlane, job_id: str, after: int) -> tuple[list[bytes], Any]:
    """One page of records, each as the raw JSON text the server sent (its size on the wire)."""
    api = control.api()
    status, page = api.request("GET", f"/api/v1/jobs/{job_id}/records?after={after}&limit=10000")
    assert 200 == status, page
    return [json.dumps(r, separators=(",", ":")).encode() for r in page["records"]], page["next"]


def test_record_pages_are_capped_by_bytes(control_factory: ControlFactory, agent_factory: AgentFactory) -> None:
    """A page holds at most max_page_bytes of records, except a single record larger than that."""
    cap = 64 * 1024
    control = control_factory(max_page_bytes=cap)
    agent_factory(control)
    api = control.api()
    wait_connected(api, ["agent-1"])
    small = api.wait_done(api.submit("echo", {"count": 100, "size": 10_000})["id"])
    large = api.wait_done(api.submit("echo", {"count": 3, "size": 200_000})["id"])
    assert ("succeeded", "succeeded") == (small["state"], large["state"])

    pages, after, seen = [], 0, 0
    while after is not None:
        page, after = records_page(control, small["id"], after)
        pages.append(page)
        seen += len(page)
    assert 100 == seen
    assert all(sum(len(r) for r in page) <= cap for page in pages)
    assert all(len(page) > 1 for page in pages[:-1])

    sizes, after = [], 0
    while after is not None:
        page, after = records_page(control, large["id"], after)
        sizes.append(len(page))
    assert [1, 1, 1] == sizes


def test_job_lists_are_capped_by_bytes(control_factory: ControlFactory) -> None:
    """A job list stops at max_page_bytes of params and names the next page, which has the rest."""
    cap = 64 * 1024
    control = control_factory(max_page_bytes=cap)
    api = control.api()
    made = [api.submit("echo", {"records": [{"pad": f"{n}" * 30_000}]})["id"] for n in range(5)]
    pages, before = [], ""
    while True:
        status, page = api.request("GET", "/api/v1/jobs?limit=1000" + (f"&before={before}" if before else ""))
        assert 200 == status, page
        pages.append([job["id"] for job in page["jobs"]])
        if page["next"] is None:
            break
        before = page["next"]
    assert made[::-1] == [job_id for page in pages for job_id in page]
    assert all(len(page) <= 3 for page in pages)  # 3 x 30 KB reach the 64 KiB cap


def test_memory_stays_bounded_while_paging_large_records(
    control_factory: ControlFactory, agent_factory: AgentFactory
) -> None:
    """Paging through 200 records of 1 MB keeps the control plane's memory within a few pages."""
    control = control_factory()
    agent_factory(control)
    api = control.api()
    wait_connected(api, ["agent-1"])
    job = api.wait_done(api.submit("echo", {"count": 200, "size": 1_000_000})["id"], timeout=180)
    assert ("succeeded", 200) == (job["state"], job["record_count"])
    assert control.proc is not None
    process = psutil.Process(control.proc.pid)
    before = process.memory_info().rss
    peak, after, seen = before, 0, 0
    while after is not None:
        status, page = api.request("GET", f"/api/v1/jobs/{job['id']}/records?after={after}&limit=10000")
        assert 200 == status
        assert len(page["records"]) <= 4  # 4 MiB by default
        seen += len(page["records"])
        after = page["next"]
        peak = max(peak, process.memory_info().rss)
    assert 200 == seen
    assert peak - before < 100 * MiB, (before // MiB, peak // MiB)


SANDBOX_TRANSFORM = """
[transforms.u_rows_import]
target = "u_rows"
coalesce = ["u_id"]
[transforms.u_rows_import.fields]
u_id = "u_id"
u_name = "u_name"
"""


def test_a_sink_request_carries_at_most_max_request_bytes(
    tmp_path: Path, control_factory: ControlFactory, agent_factory: AgentFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of large records goes to ServiceNow in requests of at most max_request_bytes of them."""
    sandbox = SandboxServer(tmp_path / "sandbox", with_setup(SANDBOX_TRANSFORM)).start()
    try:
        monkeypatch.setenv("BH_TEST_SN_SECRET", "bridgehead")
        instance = {
            "url": sandbox.url,
            "tables": ["u_rows_import"],
            "client_id": "bridgehead",
            "client_secret_env": "BH_TEST_SN_SECRET",
            "max_requests_per_s": 1000,
            "max_request_bytes": 64 * 1024,
        }
        extra = "\n[servicenow.sandbox]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in instance.items())
        control = control_factory(extra_config=extra + "\n")
        agent_factory(control)
        api = control.api()
        wait_connected(api, ["agent-1"])
        sink = {"servicenow": "sandbox", "import_set": "u_rows_import", "map": {"u_id": "n", "u_name": "pad"}}
        job = api.submit("echo", {"count": 10, "size": 30_000}, sink=sink)
        assert "succeeded" == api.wait_done(job["id"])["state"]
        wait_until(lambda: api.job(job["id"])["sync"]["state"] in ("done", "failed"), 60, "the delivery to end")
        sync = api.job(job["id"])["sync"]
        assert ("done", 10) == (sync["state"], sync["inserted"]), sync
        assert 5 == sandbox.stats()["by_endpoint"]["POST import.insertMultiple"]  # 2 records of 30 KB each
        assert 10 == len(sandbox.rows("u_rows"))
    finally:
        sandbox.stop()


def modes(root: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        if not path.is_symlink():
            found[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return found


def private(found: dict[str, int], root: Path) -> dict[str, int]:
    """What each mode should be: 0700 for directories, 0600 for files."""
    return {name: 0o700 if (root / name).is_dir() else 0o600 for name in found}


def loosen(root: Path) -> None:
    for name in modes(root):
        os.chmod(root / name, 0o755 if (root / name).is_dir() else 0o644)


def test_data_dirs_are_private_whatever_they_were(control: ControlPlane, agent_factory: AgentFactory) -> None:
    """Data dir files made 0644 (dirs 0755) are 0600 (0700) again after a restart, on both sides."""
    agent = agent_factory(control)
    api = control.api()
    wait_connected(api, ["agent-1"])
    assert "succeeded" == api.wait_done(api.submit("echo", {"count": 3})["id"])["state"]
    agent.stop()
    control.stop()
    agent_dir = agent.dir / "data"
    for root in (control.data_dir, agent_dir):
        loosen(root)
        assert {0o644, 0o755} == set(modes(root).values())
    assert {"control.db", "tls", "signing"} <= set(modes(control.data_dir))

    control.start()
    agent.start()
    wait_connected(api, ["agent-1"])
    assert "succeeded" == api.wait_done(api.submit("echo", {"count": 3})["id"])["state"]
    for root in (control.data_dir, agent_dir):
        found = modes(root)
        assert private(found, root) == found
    assert {"control.db-wal", "control.db-shm"} <= set(modes(control.data_dir))
