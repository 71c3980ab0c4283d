"""``bridgehead-agent doctor`` run as a command against real servers: a control plane, PostgreSQL
and MariaDB through unixODBC, slapd, sshd and tinyproxy. Each failure class gives its own
FAIL line and exit code 1; a healthy setup exits 0; no secret is ever printed. With
``BRIDGEHEAD_AGENT_BIN`` set, the built binary is what runs (harness.agent_command)."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridgehead_testing.databases import MARIA, PG, mariadb_account
from bridgehead_testing.harness import Agent, ControlPlane, agent_command, free_port, scaled
from bridgehead_testing.pki import write_test_pki
from bridgehead_testing.slapd import Slapd
from bridgehead_testing.sshd import Sshd, TestUser
from bridgehead_testing.tinyproxy import Tinyproxy

AGENT = "doctor-1"
WRONG_PASSWORD = "Wr0ng-doctor-pw-5e1f"  # noqa: S105 - looked for in doctor's output, where it must never be
MARIA_USER = "bh_doctor"
MARIA_PASSWORD = "Right-doctor-pw-77"  # noqa: S105 - the throw-away account's real password
PROXY_USER, PROXY_PASSWORD = "bhdoctor", "Proxy-doctor-pw-31"
ROW = re.compile(r"^(?P<check>\S.*?)\s{2,}(?P<result>ok|warn|FAIL|skip)\s{2,}(?P<detail>.*)$")


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(tmp_path_factory.mktemp("doctor-cp"))
    try:
        yield cp.start()
    finally:
        cp.stop()


@pytest.fixture(scope="module")
def enrolled(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data_dir of an agent enrolled with ``control_plane`` (shared: copy it to change it)."""
    agent = Agent(tmp_path_factory.mktemp("doctor-agents"), AGENT, [control_plane.url])
    agent.enroll(control_plane.enrollment_token())
    return agent.dir / "data"


def write_config(path: Path, data_dir: Path, urls: list[str], control: str = "", extra: str = "") -> Path:
    path.write_text(
        f'[agent]\nname = "{AGENT}"\ndata_dir = "{data_dir}"\n\n'
        f"[control]\nurls = {json.dumps(urls)}\n{control}\n\n{extra}\n"
    )
    return path


def doctor(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*agent_command(), "doctor", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )


def table(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    """check -> (result, detail) of each row of the printed table."""
    rows = {}
    for line in result.stdout.splitlines()[1:]:
        match = ROW.match(line)
        if match:
            rows[match["check"]] = (match["result"], match["detail"])
    return rows


def failed(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {check: detail for check, (outcome, detail) in table(result).items() if outcome == "FAIL"}


def advice_after(result: subprocess.CompletedProcess[str], check: str) -> str:
    """The 'fix:' line printed under ``check``'s row."""
    lines = result.stdout.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(check + " "))
    advice = lines[index + 1].strip()
    assert advice.startswith("fix: "), result.stdout
    return advice


def control_label(cp: ControlPlane) -> str:
    return f"control 127.0.0.1:{cp.port}"


def sql_profile(name: str, connection_string: str, credential: str) -> str:
    return (
        f'[connections.{name}]\nplugin = "sql"\nconnection_string = "{connection_string}"\n'
        f'credential = "{credential}"\n'
    )


def credential(name: str, username: str, password: str | None = None) -> str:
    secret = f'password = "{password}"\n' if password is not None else ""
    return f'[credentials.{name}]\nusername = "{username}"\n{secret}'


def ldap_profile(name: str, server: Slapd, cred: str) -> str:
    return f'[connections.{name}]\nplugin = "ldap"\nurl = "{server.url}"\ncredential = "{cred}"\n'


def ssh_profile(name: str, server: Sshd, cred: str) -> str:
    return (
        f'[connections.{name}]\nplugin = "ssh"\nhost = "{server.host}"\nport = {server.port}\n'
        f'host_key = "{server.host_key_fingerprint()}"\ncredential = "{cred}"\n'
    )


def rest_profile(name: str, cp: ControlPlane, cred: str) -> str:
    """The control plane's own API as a REST target: a real server that checks a bearer token."""
    return (
        f'[connections.{name}]\nplugin = "rest"\nbase_url = "{cp.url}/api/v1/agents"\n'
        f'ca_file = "{cp.data_dir / "tls" / "anchor.pem"}"\ncredential = "{cred}"\n'
    )


def test_a_healthy_setup_passes_every_check(
    control_plane: ControlPlane, enrolled: Path, tmp_path: Path, slapd: Slapd, sshd: Sshd, test_user: TestUser
) -> None:
    profiles = "\n".join(
        [
            sql_profile("pg", PG, "root"),
            sql_profile("maria", MARIA, "root"),
            credential("root", "root"),
            ldap_profile("dir", slapd, "reader"),
            credential("reader", slapd.reader_dn, slapd.reader_password),
            ssh_profile("box", sshd, "login"),
            credential("login", test_user.name, test_user.password),
            rest_profile("api", control_plane, "api"),
            f'[credentials.api]\ntoken = "{control_plane.admin_token}"\n',
        ]
    )
    config = write_config(tmp_path / "agent.toml", enrolled, [control_plane.url], extra=profiles)
    started = time.monotonic()
    result = doctor(config, "--json")
    elapsed = time.monotonic() - started
    rows = {row["check"]: row for row in json.loads(result.stdout)}
    assert 0 == result.returncode, result.stdout + result.stderr
    assert not [row for row in rows.values() if row["result"] == "fail"], result.stdout
    label = control_label(control_plane)
    expected = ["config", "identity", "certificate", "data_dir"]
    expected += [f"{label} {step}" for step in ("dns", "tcp", "tls", "clock")]
    expected += [
        f"connection {name} {step}"
        for name in ("pg", "maria", "dir", "box", "api")
        for step in ("driver", "reach", "login")
    ]
    assert expected == list(rows)
    # Every check that reaches something did reach it (data_dir may warn about free space).
    assert {"ok"} == {rows[check]["result"] for check in expected if check != "data_dir"}, result.stdout
    assert "logged in as root: postgresql, read-only session" == rows["connection pg login"]["detail"]
    assert rows["connection maria login"]["detail"].startswith("logged in as root: mariadb")
    assert f"bound as {slapd.reader_dn}" == rows["connection dir login"]["detail"]
    assert rows["connection box login"]["detail"].startswith(f"logged in as {test_user.name} on {sshd.host}")
    assert rows["connection api login"]["detail"].endswith("/api/v1/agents answered HTTP 200 OK")
    assert rows[f"{label} tls"]["detail"].startswith("server certificate verified against")
    assert slapd.reader_password not in result.stdout + result.stderr
    assert test_user.password not in result.stdout + result.stderr
    assert control_plane.admin_token not in result.stdout + result.stderr
    assert elapsed < scaled(15), f"doctor took {elapsed:.1f} s"


def test_bad_config_fails_with_the_key_named(control_plane: ControlPlane, enrolled: Path, tmp_path: Path) -> None:
    not_toml = tmp_path / "broken.toml"
    not_toml.write_text('[agent]\nname = "doctor-1"\ndata_dir = \n')
    result = doctor(not_toml)
    assert 1 == result.returncode, result.stdout + result.stderr
    assert ["config"] == list(failed(result)), result.stdout
    assert "not valid TOML" in failed(result)["config"]
    assert "bridgehead-agent check" in advice_after(result, "config")

    # Semantically wrong: a password inside a connection string. The [agent] table is fine, so
    # the identity and data_dir are still checked; the connections are not.
    secret = "Hunter2-in-the-string"  # noqa: S105 - looked for in the output
    profile = f'[connections.pg]\nplugin = "sql"\nconnection_string = "{PG};PWD={secret}"\n'
    config = write_config(tmp_path / "semantic.toml", enrolled, [control_plane.url], extra=profile)
    result = doctor(config)
    assert 1 == result.returncode, result.stdout + result.stderr
    assert ["config"] == list(failed(result)), result.stdout
    assert "connections.pg: connection_string holds a secret (PWD=...)" in failed(result)["config"]
    rows = table(result)
    assert ("ok", "ok") == (rows["identity"][0], rows["certificate"][0]), result.stdout
    assert "skip" == rows["connections"][0]
    assert secret not in result.stdout + result.stderr


def test_a_plugin_that_does_not_load_is_a_warning_not_a_failure(
    control_plane: ControlPlane, enrolled: Path, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "broken.py").write_text("raise RuntimeError('no such library')\n")
    config = write_config(tmp_path / "agent.toml", enrolled, [control_plane.url])
    config.write_text(config.read_text().replace("[agent]\n", f'[agent]\nplugins_dir = "{plugins}"\n', 1))
    result = doctor(config)
    assert 0 == result.returncode, result.stdout + result.stderr
    outcome, detail = table(result)["config"]
    assert "warn" == outcome, result.stdout
    assert "rejected: plugins_dir module" in detail and "failed to import: no such library" in detail
    assert "agent.disabled_plugins" in advice_after(result, "config")


def test_an_unreachable_control_plane_fails_its_tcp_check(enrolled: Path, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = write_config(tmp_path / "agent.toml", enrolled, [f"https://127.0.0.1:{port}"])
    result = doctor(config)
    assert 1 == result.returncode, result.stdout + result.stderr
    assert [f"control 127.0.0.1:{port} tcp"] == list(failed(result)), result.stdout
    assert "Connection refused" in failed(result)[f"control 127.0.0.1:{port} tcp"]
    assert "start the control plane" in advice_after(result, f"control 127.0.0.1:{port} tcp")
    assert "skip" == table(result)[f"control 127.0.0.1:{port} tls"][0]


def test_a_control_plane_signed_by_another_ca_fails_the_tls_check(
    control_plane: ControlPlane, enrolled: Path, tmp_path: Path
) -> None:
    # The agent's pinned CA replaced by an unrelated one: the real control plane's certificate
    # no longer chains to what this agent trusts.
    data_dir = tmp_path / "data"
    shutil.copytree(enrolled, data_dir)
    (tmp_path / "pki").mkdir()
    other_ca = write_test_pki(tmp_path / "pki").other_ca_file
    (data_dir / "control-ca.pem").write_bytes(other_ca.read_bytes())
    config = write_config(tmp_path / "agent.toml", data_dir, [control_plane.url])
    result = doctor(config)
    assert 1 == result.returncode, result.stdout + result.stderr
    tls = f"{control_label(control_plane)} tls"
    assert [tls] == list(failed(result)), result.stdout
    ca_file = data_dir / "control-ca.pem"
    assert failed(result)[tls].startswith(
        f"the server's certificate is not signed by the configured CA ({ca_file}, pinned at enrolment)"
    )
    assert "enrol again" in advice_after(result, tls)


def test_a_missing_odbc_driver_fails_the_driver_check(
    control_plane: ControlPlane, enrolled: Path, tmp_path: Path
) -> None:
    ghost = PG.replace("PostgreSQL Unicode", "Bridgehead Ghost ODBC 9")
    extra = sql_profile("ghost", ghost, "root") + credential("root", "root")
    config = write_config(tmp_path / "agent.toml", enrolled, [control_plane.url], extra=extra)
    result = doctor(config)
    assert 1 == result.returncode, result.stdout + result.stderr
    assert ["connection ghost driver"] == list(failed(result)), result.stdout
    detail = failed(result)["connection ghost driver"]
    assert detail.startswith("ODBC driver 'Bridgehead Ghost ODBC 9' is not registered with unixODBC (registered: ")
    assert "PostgreSQL Unicode" in detail
    assert "odbcinst -q -d" in advice_after(result, "connection ghost driver")
    rows = table(result)
    # The server is up, so reach passes; logging in needs the driver, so it is not tried.
    assert ("ok", "skip") == (rows["connection ghost reach"][0], rows["connection ghost login"][0]), result.stdout


def test_refused_credentials_fail_each_login_with_the_servers_own_words(
    control_plane: ControlPlane, enrolled: Path, tmp_path: Path, slapd: Slapd, sshd: Sshd, test_user: TestUser
) -> None:
    """MariaDB, slapd and sshd each really refuse a wrong password (PostgreSQL trusts loopback),
    and the control plane's API a wrong bearer token."""
    extra = "\n".join(
        [
            sql_profile("maria", MARIA, "maria"),
            credential("maria", MARIA_USER, WRONG_PASSWORD),
            ldap_profile("dir", slapd, "reader"),
            credential("reader", slapd.reader_dn, WRONG_PASSWORD),
            ssh_profile("box", sshd, "login"),
            credential("login", test_user.name, WRONG_PASSWORD),
            rest_profile("api", control_plane, "api"),
            f'[credentials.api]\ntoken = "bh_{WRONG_PASSWORD}"\n',
        ]
    )
    config = write_config(tmp_path / "agent.toml", enrolled, [control_plane.url], extra=extra)
    with mariadb_account(MARIA_USER, MARIA_PASSWORD):
        result = doctor(config)
    assert 1 == result.returncode, result.stdout + result.stderr
    logins = ["connection maria login", "connection dir login", "connection box login", "connection api login"]
    assert logins == list(failed(result)), result.stdout
    fails = failed(result)
    assert f"Access denied for user '{MARIA_USER}'" in fails["connection maria login"]
    assert "invalidCredentials" in fails["connection dir login"]
    assert f"authenticating as {test_user.name}" in fails["connection box login"]
    assert "answered HTTP 401 Unauthorized: the credential was refused" in fails["connection api login"]
    assert "[credentials.api]" in advice_after(result, "connection api login")
    assert "[credentials.maria]" in advice_after(result, "connection maria login")
    assert WRONG_PASSWORD not in result.stdout + result.stderr


def test_the_proxy_is_checked_with_its_credential(
    control_plane: ControlPlane, enrolled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    proxy = Tinyproxy(tmp_path / "proxy", connect_ports=[control_plane.port], basic_auth=(PROXY_USER, PROXY_PASSWORD))
    proxy.start()
    try:
        label = control_label(control_plane)
        results: dict[str, subprocess.CompletedProcess[str]] = {}
        for password in (PROXY_PASSWORD, WRONG_PASSWORD):
            via = f'proxy = "{proxy.url}"\nproxy_credential = "corp_proxy"'
            config = write_config(
                tmp_path / "agent.toml",
                enrolled,
                [control_plane.url],
                control=via,
                extra=credential("corp_proxy", PROXY_USER, password),
            )
            results[password] = doctor(config)
        connects = proxy.connect_requests()
    finally:
        proxy.stop()
    good, bad = results[PROXY_PASSWORD], results[WRONG_PASSWORD]
    assert 0 == good.returncode, good.stdout + good.stderr
    rows = table(good)
    assert rows[f"{label} proxy"] == ("ok", f"127.0.0.1:{proxy.port} opened a tunnel to 127.0.0.1:{control_plane.port}")
    assert ("ok", "ok") == (rows[f"{label} tls"][0], rows[f"{label} clock"][0]), good.stdout
    assert f"127.0.0.1:{control_plane.port}" in " ".join(connects)

    assert 1 == bad.returncode, bad.stdout + bad.stderr
    assert [f"{label} proxy"] == list(failed(bad)), bad.stdout
    assert "refused the tunnel" in failed(bad)[f"{label} proxy"]
    assert "control.proxy_credential" in advice_after(bad, f"{label} proxy")
    for result in (good, bad):
        assert PROXY_PASSWORD not in result.stdout + result.stderr
        assert WRONG_PASSWORD not in result.stdout + result.stderr


def test_a_server_that_never_answers_costs_one_timeout(enrolled: Path, tmp_path: Path) -> None:
    """A port that accepts connections but never speaks: the TLS step gives up on time."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshakes; nobody ever reads or writes
        port = silent.getsockname()[1]
        config = write_config(tmp_path / "agent.toml", enrolled, [f"https://127.0.0.1:{port}"])
        started = time.monotonic()
        result = doctor(config, "--timeout", "0.5")
        elapsed = time.monotonic() - started
    assert 1 == result.returncode, result.stdout + result.stderr
    assert {f"control 127.0.0.1:{port} tls": "no answer within 0.5 s"} == failed(result), result.stdout
    assert elapsed < scaled(10), f"doctor took {elapsed:.1f} s"


class SkewedHealthz(http.server.BaseHTTPRequestHandler):
    """Answers GET /healthz with a Date five minutes behind this machine's clock."""

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def date_time_string(self, timestamp: float | None = None) -> str:
        return super().date_time_string(time.time() - 300)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


def test_a_control_plane_whose_clock_differs_fails_the_clock_check(enrolled: Path, tmp_path: Path) -> None:
    """A real HTTPS server on loopback, its certificate signed by the CA the agent pins, whose
    clock is five minutes behind: TLS passes, the clock check fails."""
    (tmp_path / "pki").mkdir()
    pki = write_test_pki(tmp_path / "pki")
    data_dir = tmp_path / "data"
    shutil.copytree(enrolled, data_dir)
    (data_dir / "control-ca.pem").write_bytes(pki.ca_file.read_bytes())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SkewedHealthz)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        config = write_config(tmp_path / "agent.toml", data_dir, [f"https://127.0.0.1:{port}"])
        result = doctor(config)
    finally:
        server.shutdown()
        server.server_close()
    assert 1 == result.returncode, result.stdout + result.stderr
    clock = f"control 127.0.0.1:{port} clock"
    assert [clock] == list(failed(result)), result.stdout
    ahead = r"this machine's clock is (299|30[01]) s ahead of the control plane's, more than"
    assert re.match(ahead, failed(result)[clock]), result.stdout
    assert "NTP" in advice_after(result, clock)


def test_an_https_url_on_a_plain_http_port_fails_the_tls_check(enrolled: Path, tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SkewedHealthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        config = write_config(tmp_path / "agent.toml", enrolled, [f"https://127.0.0.1:{port}"])
        result = doctor(config)
    finally:
        server.shutdown()
        server.server_close()
    assert 1 == result.returncode, result.stdout + result.stderr
    tls = f"control 127.0.0.1:{port} tls"
    assert [tls] == list(failed(result)), result.stdout
    assert failed(result)[tls].startswith("TLS handshake failed: "), result.stdout
    assert "not plain HTTP" in advice_after(result, tls)


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    for args in ([], ["--config", str(tmp_path / "x.toml"), "--timeout", "0"]):
        result = subprocess.run(
            [*agent_command(), "doctor", *args],
            capture_output=True,
            text=True,
            timeout=scaled(60),
        )
        assert 2 == result.returncode, result.stderr
        assert "usage: bridgehead-agent doctor" in result.stderr
