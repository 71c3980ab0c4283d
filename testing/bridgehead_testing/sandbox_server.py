"""``SandboxServer``: the ServiceNow stand-in (``bridgehead-sandbox serve``) as the tests' own
child process, on a free loopback port, with a data dir and config of its own."""

from __future__ import annotations

import base64
import json
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from bridgehead_testing.child_server import ChildServer
from bridgehead_testing.harness import free_port, scaled

ADMIN = ("admin", "admin")

# What an instance's admin sets up for the tests' sinks (docs/servicenow-setup.md), in the
# sandbox's form: the client-credentials grant turned on (off on a stock instance), the custom
# tables the tests write, and the field the LDAP presets match on. It relaxes no behaviour of
# the instance-like sandbox: tables, fields, labels, async imports and sessions stay as on an
# instance; this is the setup a real instance would need for the same tests.
ADMIN_SETUP = """
[oauth]
client_credentials = true

[tables.u_rows]
label = "Rows"
[tables.u_rows.fields.u_id]
label = "Id"
[tables.u_rows.fields.u_name]
label = "Name"

[tables.u_servers]
label = "Servers"
[tables.u_servers.fields.name]
max_length = 255
label = "Name"
[tables.u_servers.fields.u_number]
label = "Number"

[tables.sys_user.fields.u_directory_id]
max_length = 40
label = "Directory ID"
[tables.sys_user_group.fields.u_directory_id]
max_length = 40
label = "Directory ID"
"""


def with_setup(*configs: str) -> str:
    """``ADMIN_SETUP`` and then each of ``configs`` (TOML), merged table by table: a later
    key wins, so a test can add an ``[oauth]`` key of its own without repeating the table."""
    merged: dict[str, Any] = {}
    for text in (ADMIN_SETUP, *configs):
        _merge(merged, tomllib.loads(text))
    return _toml(merged)


def _merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _toml(table: dict[str, Any], prefix: str = "") -> str:
    """TOML of nested tables whose values are strings, numbers, booleans or lists of them
    (JSON spells those as TOML does; keys are quoted, so any name is safe)."""
    lines = [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in table.items() if not isinstance(v, dict)]
    out = "\n".join(lines) + "\n"
    for key, value in table.items():
        if isinstance(value, dict):
            name = f"{prefix}.{json.dumps(key)}" if prefix else json.dumps(key)
            out += f"\n[{name}]\n" + _toml(value, name)
    return out


class SandboxError(RuntimeError):
    pass


class SandboxServer(ChildServer):
    name = "sandbox"
    error = SandboxError

    def __init__(self, workdir: Path, config: str = "") -> None:
        super().__init__()
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = free_port()
        self.log_file = workdir / "sandbox.log"
        self.config_file = workdir / "sandbox.toml"
        self.config_file.write_text(config)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "bridgehead_sandbox", "serve",
            "--listen", f"{self.host}:{self.port}",
            "--data-dir", str(self.workdir / "data"),
            "--config", str(self.config_file),
        ]  # fmt: skip

    def pick_new_ports(self) -> None:
        self.port = free_port()

    def address(self) -> str:
        return self.url

    def probe(self, offset: int) -> str:
        try:
            with urllib.request.urlopen(self.url + "/sandbox/health", timeout=1) as response:  # noqa: S310 - loopback
                return "" if response.status == 200 else f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            return str(exc)

    # --- the instance, as a test reads and steers it ------------------------------------

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A request as admin (basic auth): the Table API or the /sandbox/ admin endpoints."""
        data = json.dumps(body).encode() if body is not None else None
        token = base64.b64encode(":".join(ADMIN).encode()).decode()
        headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for _ in range(100):
            request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=scaled(30)) as response:  # noqa: S310 - loopback
                    raw = response.read()
                    return response.status, json.loads(raw) if raw else None
            except urllib.error.HTTPError as exc:
                raw = exc.read()
                if exc.code == 429:  # a test's own reads wait out the rate limit it configured
                    time.sleep(float(exc.headers.get("Retry-After") or 1))
                    continue
                return exc.code, json.loads(raw) if raw else None
        raise SandboxError(f"{method} {path}: rate limited a hundred times in a row")

    def rows(self, table: str, query: str = "", fields: str = "") -> list[dict[str, Any]]:
        """Every row of ``table`` (paged), as the Table API returns them."""
        out: list[dict[str, Any]] = []
        while True:
            params = f"sysparm_limit=10000&sysparm_offset={len(out)}"
            if query:
                params += "&sysparm_query=" + urllib.parse.quote(query)
            if fields:
                params += "&sysparm_fields=" + fields
            status, body = self.call("GET", f"/api/now/table/{table}?{params}")
            if status != 200:
                if out or status in (400, 404):
                    return out
                raise SandboxError(f"GET {table}: HTTP {status}: {body}")
            page = body["result"]
            out += page
            if len(page) < 10000:
                return out

    def faults(self, **faults: Any) -> None:
        status, body = self.call("POST", "/sandbox/faults", faults)
        if status != 200:
            raise SandboxError(f"setting faults: HTTP {status}: {body}")

    def stats(self) -> dict[str, Any]:
        status, body = self.call("GET", "/sandbox/stats")
        if status != 200:
            raise SandboxError(f"stats: HTTP {status}: {body}")
        result: dict[str, Any] = body
        return result
