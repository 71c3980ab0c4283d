"""Agent set-up end to end: identity files, several control URLs, drop-in plugins, the OpenAPI."""

from __future__ import annotations

import stat
import textwrap
from collections.abc import Callable
from pathlib import Path

from bridgehead_testing.harness import Agent, ControlPlane, free_port, wait_connected, wait_until

AgentFactory = Callable[..., Agent]

DROP_IN = textwrap.dedent(
    """
    from bridgehead.sdk import JobContext, NoProfile, Params, Plugin


    class ShoutParams(Params):
        text: str


    class Shout(Plugin[ShoutParams, NoProfile]):
        name = "shout"
        params_type = ShoutParams
        safe_to_repeat = True

        async def run(self, ctx: JobContext[NoProfile], params: ShoutParams) -> None:
            await ctx.emit({"text": params.text.upper()})


    PLUGIN = Shout
    """
)


def test_identity_files_are_private_to_the_agent_user(control: ControlPlane, agent_factory: AgentFactory) -> None:
    """Enrolment writes the key and identity readable by the agent's user only, in a 0700 dir."""
    agent = agent_factory(control, start=False)
    data = agent.dir / "data"
    assert 0o700 == stat.S_IMODE(data.stat().st_mode)
    for name in ("agent.key", "identity.json"):
        assert 0o600 == stat.S_IMODE((data / name).stat().st_mode), name


def test_agent_tries_control_urls_in_turn(control: ControlPlane, agent_factory: AgentFactory) -> None:
    """With the first control URL dead, the agent connects through the next one and runs jobs."""
    dead = f"http://127.0.0.1:{free_port()}"
    agent = agent_factory(control, urls=[dead, control.url])
    api = control.api()
    wait_connected(api, ["agent-1"])
    assert "succeeded" == api.wait_done(api.submit("echo", {"count": 1})["id"])["state"]
    assert f"{dead[7:]}" in agent.log_text()  # it did try the dead one, and said so


def test_drop_in_plugin_runs_and_a_broken_one_is_rejected(
    control: ControlPlane, agent_factory: AgentFactory, tmp_path: Path
) -> None:
    """A module in plugins_dir is loaded like a built-in; a broken one is refused and the agent starts."""
    plugins_dir = tmp_path / "plugins"
    plugins_dir.mkdir()
    (plugins_dir / "shout.py").write_text(DROP_IN)
    (plugins_dir / "broken.py").write_text("raise RuntimeError('this plugin does not import')\n")
    (plugins_dir / "noclass.py").write_text("PLUGIN = 42\n")
    agent = agent_factory(control, extra="", plugins_dir=plugins_dir)
    api = control.api()
    wait_connected(api, ["agent-1"])
    status, agents = api.request("GET", "/api/v1/agents")
    assert {"echo", "rest", "sql", "ldap", "ssh", "powershell", "shout"} == set(agents[0]["plugins"])
    job = api.wait_done(api.submit("shout", {"text": "hello"})["id"])
    assert ("succeeded", [{"text": "HELLO"}]) == (job["state"], api.records(job["id"]))
    log = agent.log_text()
    assert "broken.py failed to import" in log and "this plugin does not import" in log
    assert "is not a subclass of bridgehead.sdk.Plugin" in log
    status, body = api.request("POST", "/api/v1/jobs", {"plugin": "shout", "params": {"txt": "x"}})
    assert (422, "invalid_params") == (status, body["error"]["code"])


def test_disabled_plugin_is_not_offered(control: ControlPlane, agent_factory: AgentFactory) -> None:
    """agent.disabled_plugins keeps a built-in plugin out of the agent and off the cluster."""
    agent_factory(control, disabled_plugins=["echo"])
    api = control.api()
    wait_connected(api, ["agent-1"])
    status, body = api.request("POST", "/api/v1/jobs", {"plugin": "echo", "params": {}})
    assert (422, "unknown_plugin") == (status, body["error"]["code"])


def test_openapi_describes_the_job_api(control: ControlPlane) -> None:
    """/api/v1/openapi.json is OpenAPI 3.1, covers the contract's calls and resolves its references."""
    status, doc = control.api().request("GET", "/api/v1/openapi.json")
    assert (200, "3.1.0") == (status, doc["openapi"])
    expected = {
        ("/api/v1/jobs", "post"),
        ("/api/v1/jobs/{job_id}", "get"),
        ("/api/v1/jobs/{job_id}/records", "get"),
        ("/api/v1/jobs/{job_id}/cancel", "post"),
        ("/api/v1/agents", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/api/v1/tokens", "get"),
        ("/api/v1/tokens", "post"),
        ("/api/v1/tokens/{token_id}", "delete"),
        ("/api/v1/audit", "get"),
    }
    assert set() == expected - {(path, method) for path, ops in doc["paths"].items() for method in ops}
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    schemas = doc["components"]["schemas"]
    assert [] == [r for r in refs if r.removeprefix("#/components/schemas/") not in schemas]
    assert {"plugin", "params"} <= set(schemas["JobSubmit"]["required"])


def test_agent_version_and_wait_until_job_list(control: ControlPlane, agent_factory: AgentFactory) -> None:
    """GET /api/v1/jobs lists jobs newest first and filters by state."""
    agent_factory(control)
    api = control.api()
    wait_connected(api, ["agent-1"])
    ids = [api.submit("echo", {"count": 1})["id"] for _ in range(3)]
    for job_id in ids:
        api.wait_done(job_id)
    status, body = api.request("GET", "/api/v1/jobs?state=succeeded&limit=2")
    assert (200, ids[::-1][:2]) == (status, [j["id"] for j in body["jobs"]])
    wait_until(lambda: api.request("GET", "/api/v1/jobs?state=queued")[1]["jobs"] == [], 5, "no queued jobs")
