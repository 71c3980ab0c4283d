"""Real processes on loopback for integration tests: control planes and agents (outages are in
``outages``).

Every wait in the tests goes through ``scaled`` so a slow machine can stretch them all at once
(``BRIDGEHEAD_TEST_TIMEOUT_SCALE=3``) instead of flaking.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridgehead_testing.store_choice import store_for

TIMEOUT_SCALE = float(os.environ.get("BRIDGEHEAD_TEST_TIMEOUT_SCALE", "1"))
# The repository: this package lives in testing/bridgehead_testing/ and is installed editable.
ROOT = Path(__file__).resolve().parents[2]


def scaled(seconds: float) -> float:
    return seconds * TIMEOUT_SCALE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + scaled(timeout)
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {scaled(timeout):g} s waiting for {what} (last: {last!r})")


async def wait_until_async(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """``wait_until`` for a test running on an event loop: polls without blocking the loop, so
    the code under test (on the same loop) can make ``predicate`` true meanwhile."""
    deadline = time.monotonic() + scaled(timeout)
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {scaled(timeout):g} s waiting for {what} (last: {last!r})")


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=scaled(60))
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}: {result.stderr}")
    return result


def agent_binary() -> str | None:
    """The built agent the tests run instead of this virtualenv's, if ``BRIDGEHEAD_AGENT_BIN``
    names one (``dist/bridgehead-agent`` from ``scripts/build-agent``)."""
    return os.environ.get("BRIDGEHEAD_AGENT_BIN") or None


def agent_command() -> list[str]:
    """How to run ``bridgehead-agent``: the built binary (``agent_binary``), else this
    interpreter with the agent's module, so that the same test covers both."""
    binary = agent_binary()
    return [binary] if binary else [sys.executable, "-m", "bridgehead.agent.cli"]


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> int:
    """SIGTERM (a graceful stop for each of the project's programs and the servers the tests
    run), then SIGKILL if it has not exited within ``timeout`` (scaled); its exit code."""
    if proc is None:
        return 0
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=scaled(timeout))
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# base URL -> the TLS context that trusts that control plane (registered when it starts), so
# that any ``Api(control.url, ...)`` verifies the server as a real client would.
TLS_CONTEXTS: dict[str, ssl.SSLContext] = {}


def tls_context(ca_pem: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca_pem.decode())


def urlopen(url: str | urllib.request.Request, data: Any = None, timeout: float = 10) -> Any:
    """``urllib.request.urlopen`` that trusts the test control plane the URL belongs to."""
    full = url if isinstance(url, str) else url.full_url
    context = TLS_CONTEXTS.get("/".join(full.split("/", 3)[:3]))
    return urllib.request.urlopen(url, data, timeout=timeout, context=context)  # noqa: S310


class Api:
    """A small JSON client for the job API (stdlib only, so it tests nothing of ours)."""

    def __init__(self, base: str, token: str | None, context: ssl.SSLContext | None = None) -> None:
        self.base = base
        self.token = token
        self.context = context or TLS_CONTEXTS.get(base)

    def request(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"}
        tok = token if token is not None else self.token
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=scaled(120), context=self.context) as resp:  # noqa: S310
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")

    def submit(self, plugin: str, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
        status, body = self.request("POST", "/api/v1/jobs", {"plugin": plugin, "params": params, **extra})
        assert status in (200, 201), (status, body)
        return dict(body)

    def job(self, job_id: str, wait: float = 0) -> dict[str, Any]:
        status, body = self.request("GET", f"/api/v1/jobs/{job_id}" + (f"?wait={wait:g}" if wait else ""))
        assert status == 200, (status, body)
        return dict(body)

    def wait_done(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + scaled(timeout)
        while True:
            remaining = deadline - time.monotonic()
            try:
                job = self.job(job_id, wait=max(0.1, min(remaining, 10)))
            except (OSError, AssertionError):  # the control plane may be restarting
                job = {"state": "unreachable"}
                time.sleep(0.2)
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return job
            if remaining <= 0:
                raise AssertionError(f"job {job_id} did not end in {scaled(timeout):g} s: {job}")

    def records(self, job_id: str, page: int = 1000) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            status, body = self.request("GET", f"/api/v1/jobs/{job_id}/records?after={after}&limit={page}")
            assert status == 200, (status, body)
            out += body["records"]
            if body["next"] is None:
                return out
            after = body["next"]


class ControlPlane:
    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        heartbeat_s: float = 5.0,
        extra_config: str = "",
        tls: bool = True,
        **server: Any,
    ) -> None:
        """``server``: keys of the config's [server] table; ``extra_config``: more TOML after it
        (say a [servicenow.NAME] table). ``tls=False`` serves plain HTTP (``--insecure-http``),
        only for tests about that mode."""
        self.data_dir = workdir / "control"
        self.port = port or free_port()
        self.tls = tls
        self.host = "127.0.0.1"  # the listen address (a test may bind a namespace's link instead)
        self.url = f"{'https' if tls else 'http'}://{self.host}:{self.port}"
        self.context: ssl.SSLContext | None = None
        self.config = workdir / "control.toml"
        lines = ["[server]", f"heartbeat_s = {heartbeat_s}"] + [f"{k} = {json.dumps(v)}" for k, v in server.items()]
        # BRIDGEHEAD_TEST_STORE=postgresql: a database of its own, unless the test chose a store.
        extra_config, self.database = store_for(self, extra_config)
        self.config.write_text("\n".join(lines) + "\n" + extra_config)
        self.log = workdir / "control.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_token = ""
        self.wrapper: list[str] = []  # a command the server runs under (say strace and its options)
        self.env: dict[str, str] | None = None  # the server's environment, if not this process's
        self.serve_args: list[str] = []  # more arguments of ``serve`` (say --database-wait 5)

    def listen_on(self, host: str) -> ControlPlane:
        """Serve on ``host`` (an address of this machine) instead of 127.0.0.1; before start."""
        self.host = host
        self.url = f"{'https' if self.tls else 'http'}://{host}:{self.port}"
        return self

    def start(self) -> ControlPlane:
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [
                    *self.wrapper,
                    sys.executable,
                    "-m",
                    "bridgehead.control.cli",
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--listen",
                    f"{self.host}:{self.port}",
                    "--config",
                    str(self.config),
                    *([] if self.tls else ["--insecure-http"]),
                    *self.serve_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        if self.tls:
            # The CA is made by the first command that needs it (the server, or a token made before).
            run_cli("bridgehead.control.cli", "ca-cert", "--data-dir", str(self.data_dir))
            wait_until(lambda: (self.data_dir / "tls" / "anchor.pem").exists(), 20, "the server's certificate")
            self.context = tls_context((self.data_dir / "tls" / "anchor.pem").read_bytes())
            TLS_CONTEXTS[self.url] = self.context
        wait_until(self._healthy, 20, f"control plane on {self.url} (log {self.log})")
        if not self.admin_token:
            self.admin_token = self.token("admin")
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"control plane exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1, context=self.context) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except OSError:
            return False

    def token(self, role: str) -> str:
        return run_cli(
            "bridgehead.control.cli", "api-token", "create", "--data-dir", str(self.data_dir), "--role", role
        ).stdout.strip()

    def enrollment_token(self, cluster: str = "default", ttl: float = 600, *extra: str) -> str:
        return run_cli(
            "bridgehead.control.cli",
            "enrollment-token",
            "create",
            "--data-dir",
            str(self.data_dir),
            "--cluster",
            cluster,
            "--ttl",
            str(ttl),
            *extra,
        ).stdout.strip()

    def metrics(self) -> str:
        """``GET /metrics`` with the admin token (it needs one unless metrics_public)."""
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        with urlopen(urllib.request.Request(self.url + "/metrics", headers=headers)) as resp:  # noqa: S310
            return str(resp.read().decode())

    def ca_pem(self) -> bytes:
        return run_cli("bridgehead.control.cli", "ca-cert", "--data-dir", str(self.data_dir)).stdout.encode()

    def api(self, token: str | None = None) -> Api:
        return Api(self.url, token if token is not None else self.admin_token, self.context)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        return terminate(self.proc, 20)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


class Agent:
    def __init__(
        self,
        workdir: Path,
        name: str,
        urls: list[str],
        cluster: str = "default",
        extra: str = "",
        max_concurrent_jobs: int = 8,
        env: dict[str, str] | None = None,
        plugins_dir: Path | None = None,
        disabled_plugins: list[str] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        """``options``: more keys of the config's [agent] table (say ``synchronous``)."""
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "agent.toml"
        self.log = self.dir / "agent.log"
        self.env = {**os.environ, **(env or {})}
        self.config.write_text(
            f'[agent]\nname = "{name}"\ncluster = "{cluster}"\ndata_dir = "{self.dir / "data"}"\n'
            f"max_concurrent_jobs = {max_concurrent_jobs}\n"
            + (f'plugins_dir = "{plugins_dir}"\n' if plugins_dir else "")
            + (f"disabled_plugins = {json.dumps(disabled_plugins)}\n" if disabled_plugins else "")
            + "".join(f"{key} = {json.dumps(value)}\n" for key, value in (options or {}).items())
            + "\n"
            + f"[control]\nurls = {json.dumps(urls)}\nbackoff_initial_s = 0.2\nbackoff_max_s = 2.0\n\n{extra}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.wrapper: list[str] = []  # a command the agent runs under (say strace and its options)
        self.own_group = False  # started in a process group of its own (the binary: see start)

    def enroll(self, token: str) -> None:
        result = self.try_enroll(token)
        assert result.returncode == 0, result.stderr

    def try_enroll(self, token: str) -> subprocess.CompletedProcess[str]:
        """Enrol with the token on standard input (``--token -``), as an admin should."""
        return subprocess.run(
            [*agent_command(), "enroll", "--config", str(self.config), "--token", "-"],
            input=token + "\n",
            capture_output=True,
            text=True,
            timeout=scaled(30),
            env=self.env,
        )

    def start(self) -> Agent:
        # The one-file binary is a bootloader and the agent, its child: a process group of
        # their own lets kill9 kill both, as a service manager kills the unit's cgroup.
        self.own_group = agent_binary() is not None
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [*self.wrapper, *agent_command(), "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=self.own_group,
            )
        return self

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # nothing of it is left
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)

    def kill9(self) -> None:
        """SIGKILL the agent. The binary's bootloader cannot pass SIGKILL on to the agent it
        started (which would live on, orphaned), so there the whole process group gets it."""
        assert self.proc is not None
        if self.own_group:
            self._kill_group()
        else:
            self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = 30) -> int:
        code = terminate(self.proc, timeout)
        if self.own_group:  # a bootloader killed after the timeout leaves its agent running
            self._kill_group()
        return code

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_connected(api: Api, names: list[str], timeout: float = 20) -> None:
    def connected() -> bool:
        status, agents = api.request("GET", "/api/v1/agents")
        up = {a["name"] for a in agents if a["connected"]} if status == 200 else set()
        return set(names) <= up

    wait_until(connected, timeout, f"agents {names} connected")
