"""The demo: a control plane, an enrolled agent and real REST, SQL and LDAP jobs, on loopback,
their records landing in a ServiceNow stand-in.

Starts a stand-in "internal API" with sample data, an HR database (an SQLite file read through
ODBC), a real OpenLDAP directory (slapd, with a temporary config and a private CA), the
ServiceNow sandbox (``bridgehead-sandbox``, a stand-in for a real instance, with a transform
map), a control plane on its embedded SQLite store, and an agent with a connection profile for
each; submits jobs through the job API, prints their records, delivers some into the sandbox
(Import Set API, and LDAP users from a schedule) and shows them there with their sys_ids, then
stops everything cleanly. Run it with ``scripts/demo``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bridgehead_testing.harness import free_port
from bridgehead_testing.ldap_data import base_entries, nested_groups, people, person_dn
from bridgehead_testing.slapd import Slapd
from demo_jobs import HR_ROWS, demo_jobs, sync_job

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


# Trusts the demo's control plane: its CA, as `bridgehead-control ca-cert` prints it.
TLS: dict[str, ssl.SSLContext] = {}


def wait_for(url: str, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1, context=TLS.get("control")):  # noqa: S310 - loopback only
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"demo: {what} did not come up at {url}")


def call(method: str, url: str, token: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback only
        url, data=data, method=method, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60, context=TLS.get("control")) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        sys.exit(f"demo: {method} {url} answered {exc.code}: {exc.read().decode()}")


def cli(*args: str) -> str:
    return subprocess.run([PY, "-m", *args], check=True, capture_output=True, text=True).stdout.strip()


def show(title: str, job: dict[str, Any], records: list[dict[str, Any]], columns: list[str]) -> None:
    print(f"\n▶ {title}")
    print(f"  job …{job['id'][-8:]}  state={job['state']}  agent={job['agent']}  records={job['record_count']}")
    for record in records[:8]:
        print("   ", "  ".join(f"{c}={record.get(c)!s:<22}"[:34] for c in columns))
    if job["record_count"] > 8:
        print(f"    … and {job['record_count'] - 8:,} more")


DEPARTMENTS = ["IT", "HR", "Finance", "Sales", "Operations"]


def make_hr_database(path: Path) -> Path:
    """A sample HR table in an SQLite file: the demo's on-prem database."""
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE staff (id INTEGER PRIMARY KEY, name TEXT NOT NULL, department TEXT NOT NULL, "
        "salary NUMERIC NOT NULL, hired DATE NOT NULL, active BOOLEAN NOT NULL)"
    )
    db.executemany(
        "INSERT INTO staff VALUES (?, ?, ?, ?, ?, ?)",
        (
            (
                n,
                f"employee-{n:05d}",
                DEPARTMENTS[n % len(DEPARTMENTS)],
                40_000 + (n * 37) % 60_000,
                f"20{10 + n % 15}-{1 + n % 12:02d}-{1 + n % 28:02d}",
                n % 9 != 0,
            )
            for n in range(1, HR_ROWS + 1)
        ),
    )
    db.commit()
    db.close()
    return path


SANDBOX_CONFIG = """
# The sandbox behaves like a real instance: tables and fields exist only when defined. This is
# what an instance admin sets up for Bridgehead (docs/servicenow-setup.md), in sandbox form.
[oauth]
client_credentials = true          # glide.oauth.inbound.client.credential.grant_type.enabled

# The target of the demo's transform map, a custom table.
[tables.u_staff]
label = "Staff"
[tables.u_staff.fields.u_employee_id]
type = "string"
max_length = 40
label = "Employee ID"
[tables.u_staff.fields.u_name]
type = "string"
max_length = 100
label = "Name"
[tables.u_staff.fields.u_department]
type = "string"
max_length = 100
label = "Department"

# The field the ldap_users preset matches users on (their entryUUID).
[tables.sys_user.fields.u_directory_id]
type = "string"
max_length = 40
label = "Directory ID"

# The demo's transform map: staff rows staged in u_staff_import land in u_staff, matched on
# the employee id, so running the import again updates rows instead of adding them.
[transforms.u_staff_import]
target = "u_staff"
coalesce = ["u_employee_id"]
display_field = "u_name"
[transforms.u_staff_import.fields]
u_employee_id = "u_id"
u_name = "u_name"
u_department = "u_department"
"""


def wait_delivered(control_url: str, token: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job: dict[str, Any] = call("GET", f"{control_url}/api/v1/jobs/{job_id}", token)
        if job["sync"]["state"] in ("done", "failed", "not_delivered"):
            return job
        time.sleep(0.2)
    sys.exit(f"demo: job {job_id}'s delivery did not end in 2 minutes")


def sandbox_rows(sandbox_url: str, table: str, fields: str, limit: int = 5) -> list[dict[str, Any]]:
    query = f"sysparm_fields={fields}&sysparm_limit={limit}&sysparm_query=ORDERBYsys_created_on"
    rows: list[dict[str, Any]] = call_basic("GET", f"{sandbox_url}/api/now/table/{table}?{query}")["result"]
    return rows


def show_sync(title: str, job: dict[str, Any]) -> None:
    sync = job["sync"]
    print(f"\n▶ {title}")
    print(
        f"  job …{job['id'][-8:]}  state={job['state']}  records={job['record_count']}  sync={sync['state']}: "
        f"inserted={sync['inserted']} updated={sync['updated']} ignored={sync['ignored']} errors={sync['errors']}"
    )


def deliver_to_servicenow(control_url: str, token: str, sandbox_url: str, people_base: str) -> None:
    """HR rows through the Import Set API; LDAP users into sys_user from a schedule."""
    sink = {
        "servicenow": "sandbox",
        "import_set": "u_staff_import",
        "map": {"u_id": "id", "u_name": "name", "u_department": "department"},
        "passthrough": False,
    }
    params = {"connection": "hr_db", "query": "SELECT id, name, department FROM staff ORDER BY id"}
    for title in ("ServiceNow: HR staff into the sandbox's Import Set API (transform map, coalesce on id)",
                  "ServiceNow: the same import again: rows are matched and left as they are, none added"):  # fmt: skip
        job = call("POST", control_url + "/api/v1/jobs", token, {"plugin": "sql", "params": params, "sink": sink})
        show_sync(title, wait_delivered(control_url, token, job["id"]))
    print(f"  in the sandbox, table u_staff ({sandbox_url}/api/now/table/u_staff):")
    for row in sandbox_rows(sandbox_url, "u_staff", "sys_id,u_employee_id,u_name,u_department"):
        print(f"    sys_id={row['sys_id']}  id={row['u_employee_id']:<5} {row['u_name']:<18} {row['u_department']}")

    schedule = {
        "name": "directory-users",
        "cron": "*/15 * * * *",
        "timezone": "Europe/Paris",
        "job": {
            "plugin": "ldap",
            "params": {
                "connection": "corp_ldap",
                "base": people_base,
                "filter": "(objectClass=inetOrgPerson)",
                "mode": "sync",
                "sync": "directory-users",
            },
            "sink": {"servicenow": "sandbox", "preset": "ldap_users"},
        },
    }
    created = call("POST", control_url + "/api/v1/schedules", token, schedule)
    print(f"\n• schedule {created['name']!r}: {created['cron']} ({created['timezone']}), next {created['next_run_at']}")
    job = call("POST", f"{control_url}/api/v1/schedules/{schedule['name']}/run", token)
    show_sync("ServiceNow: directory users into sys_user (the ldap_users preset), run now", wait_delivered(
        control_url, token, job["id"]))  # fmt: skip
    print(f"  in the sandbox, table sys_user ({sandbox_url}/api/now/table/sys_user):")
    for row in sandbox_rows(sandbox_url, "sys_user", "sys_id,user_name,email,active"):
        print(f"    sys_id={row['sys_id']}  {row['user_name']:<10} {row['email']:<28} active={row['active']}")


def call_basic(method: str, url: str) -> Any:
    """The sandbox's Table API as its demo admin (basic auth)."""
    request = urllib.request.Request(  # noqa: S310 - loopback
        url, method=method, headers={"Authorization": "Basic YWRtaW46YWRtaW4=", "Accept": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bridgehead-demo-"))
    api_port, cp_port = free_port(), free_port()
    control_url = f"https://127.0.0.1:{cp_port}"
    procs: list[subprocess.Popen[bytes]] = []
    stop_directory: Any = lambda: None  # noqa: E731 - replaced once the directory runs
    logs = open(work / "demo.log", "ab")  # noqa: SIM115 - closed at the end
    sandbox_port = free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    try:
        print(f"Bridgehead demo (work dir {work})")
        (work / "sandbox.toml").write_text(SANDBOX_CONFIG)
        procs.append(
            subprocess.Popen(
                [PY, "-m", "bridgehead_sandbox", "serve", "--listen", f"127.0.0.1:{sandbox_port}"]
                + ["--data-dir", str(work / "sandbox"), "--config", str(work / "sandbox.toml")],
                stdout=logs,
                stderr=logs,
            )
        )
        wait_for(sandbox_url + "/sandbox/health", "the ServiceNow sandbox")
        print(f"• ServiceNow sandbox (a stand-in for an instance) on {sandbox_url}, admin/admin")
        (work / "control.toml").write_text(
            f'[servicenow.sandbox]\nurl = "{sandbox_url}"\nauth = "oauth_client_credentials"\n'
            'tables = ["u_staff_import", "sys_user"]\n'
            'client_id = "bridgehead"\nclient_secret_env = "BH_DEMO_SN_SECRET"\n'
        )
        procs.append(
            subprocess.Popen(
                [PY, str(ROOT / "scripts" / "demo_api.py"), "--port", str(api_port)], stdout=logs, stderr=logs
            )
        )
        wait_for(f"http://127.0.0.1:{api_port}/health", "the internal API")
        print(f"• internal API (sample data) on http://127.0.0.1:{api_port}")

        procs.append(
            subprocess.Popen(
                [
                    PY,
                    "-m",
                    "bridgehead.control.cli",
                    "serve",
                    "--data-dir",
                    str(work / "control"),
                    "--listen",
                    f"127.0.0.1:{cp_port}",
                    "--config",
                    str(work / "control.toml"),
                ],
                stdout=logs,
                stderr=logs,
                # The sandbox's demo OAuth client; a real secret comes from a vault or a file.
                env={**os.environ, "BH_DEMO_SN_SECRET": "bridgehead"},
            )
        )
        ca = cli("bridgehead.control.cli", "ca-cert", "--data-dir", str(work / "control"))
        TLS["control"] = ssl.create_default_context(cadata=ca)
        wait_for(control_url + "/healthz", "the control plane")
        token = cli(
            "bridgehead.control.cli", "api-token", "create", "--data-dir", str(work / "control"), "--role", "admin"
        )
        enrollment = cli(
            "bridgehead.control.cli", "enrollment-token", "create", "--data-dir", str(work / "control"), "--ttl", "600"
        )
        print(f"• control plane on {control_url} (embedded SQLite store in {work / 'control'}; its own CA)")

        hr_db = make_hr_database(work / "hr.db")
        print(f"• HR database (SQLite, {HR_ROWS:,} staff) in {hr_db}, read through ODBC")

        directory = Slapd(work / "slapd")
        directory.load([*base_entries(), *people(40), *nested_groups()])
        directory.start()
        stop_directory = directory.stop
        print(f"• LDAP directory (slapd, 40 people, nested groups) on {directory.ldaps_url}, with its own CA")

        config = work / "agent.toml"
        config.write_text(
            f'[agent]\nname = "demo-agent"\ndata_dir = "{work / "agent"}"\n\n'
            f'[control]\nurl = "{control_url}"\n\n'
            f'[connections.internal_api]\nplugin = "rest"\nbase_url = "http://127.0.0.1:{api_port}/api"\n\n'
            f'[connections.hr_db]\nplugin = "sql"\nconnection_string = "Driver={{SQLite3}};Database={hr_db}"\n\n'
            f'[connections.corp_ldap]\nplugin = "ldap"\nurl = "{directory.ldaps_url}"\n'
            f'ca_file = "{directory.ca_file}"\ncredential = "ldap_reader"\n\n'
            # An inline password is for demos and tests; production uses password_env or password_file.
            f'[credentials.ldap_reader]\nusername = "{directory.reader_dn}"\npassword = "{directory.reader_password}"\n'
        )
        print("• " + cli("bridgehead.agent.cli", "enroll", "--config", str(config), "--token", enrollment))
        print("  (the token pinned the control plane's CA; the agent holds a client certificate for mutual TLS)")
        procs.append(
            subprocess.Popen(
                [PY, "-m", "bridgehead.agent.cli", "run", "--config", str(config)], stdout=logs, stderr=logs
            )
        )
        deadline = time.monotonic() + 20
        while not any(a["connected"] for a in call("GET", control_url + "/api/v1/agents", token)):
            if time.monotonic() > deadline:
                sys.exit("demo: the agent did not connect; see " + str(work / "demo.log"))
            time.sleep(0.1)
        print("• agent demo-agent connected over one outbound websocket (mutual TLS; job offers signed)")

        people_base = f"ou=people,{directory.suffix}"

        def run(title: str, plugin: str, params: dict[str, Any], columns: list[str]) -> None:
            job = call("POST", control_url + "/api/v1/jobs?wait=30", token, {"plugin": plugin, "params": params})
            records = call("GET", f"{control_url}/api/v1/jobs/{job['id']}/records", token)["records"]
            show(title, job, records, columns)
            if job["error"]:
                print(f"    error: {job['error']['code']}: {job['error']['message']}")

        for title, plugin, params, columns in demo_jobs(directory.suffix):
            run(title, plugin, params, columns)
        directory.replace(person_dn(3), "mail", ["new-address@example.com"])
        directory.delete(person_dn(7))
        print("\n• in the directory: user00003's mail changed, user00007 deleted")
        run(
            "LDAP sync, next run: only what changed since the first",
            "ldap",
            sync_job(people_base),
            ["op", "id", "dn", "mail"],
        )
        deliver_to_servicenow(control_url, token, sandbox_url, people_base)
    finally:
        stop_directory()
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs.close()
    print(f"\nAll stopped cleanly. Logs: {work / 'demo.log'}")


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
