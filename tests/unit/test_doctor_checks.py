"""Unit tests of doctor's parts that need no server: the clock and certificate verdicts, the
runner's chains and timeouts (with real blocked threads), data_dir checks on real
directories, where a connection string points, and the table."""

from __future__ import annotations

import asyncio
import datetime
import json
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from bridgehead.agent.cli import main
from bridgehead.agent.config import AgentSection
from bridgehead.agent.doctor.control import clock_skew
from bridgehead.agent.doctor.disk_check import check_data_dir
from bridgehead.agent.doctor.findings import Finding, Result, Row, fail, ok, warn
from bridgehead.agent.doctor.identity_check import IdentityCheck, certificate_window
from bridgehead.agent.doctor.probe_sql import server_address
from bridgehead.agent.doctor.runner import Chain, Step, constant, run_chain
from bridgehead.agent.doctor.table import exit_code, render_json, render_table
from bridgehead.agent.doctor.threads import in_thread
from bridgehead.agent.identity import new_key, save_identity
from bridgehead.core.redact import REDACTOR
from bridgehead.plugins.sql.params import SqlProfile

NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


def test_clock_skew_within_and_beyond_the_configured_limit() -> None:
    date = "Sun, 06 Dec 2026 12:00:00 GMT"
    server = NOW.timestamp() + 0.5  # Date is truncated to the second
    assert Result.OK == clock_skew(date, server + 2, 60, "200 OK").result
    assert Result.WARN == clock_skew(date, server + 45, 60, "200 OK").result
    beyond = clock_skew(date, server - 90, 60, "200 OK")
    assert Result.FAIL == beyond.result
    assert "90 s behind the control plane's, more than control.max_clock_skew_s (60 s)" in beyond.detail
    assert "NTP" in beyond.advice
    assert Result.WARN == clock_skew(None, server, 60, "200 OK").result
    assert Result.WARN == clock_skew(date, server, 60, "503 Service Unavailable").result


def test_certificate_window_warns_once_renewal_is_overdue_and_fails_once_expired() -> None:
    issued = NOW - 60 * DAY
    assert Result.OK == certificate_window(issued, NOW + 30 * DAY, NOW).result  # renewal due now
    assert Result.WARN == certificate_window(issued, NOW + 10 * DAY, NOW).result
    expired = certificate_window(issued, NOW - DAY, NOW)
    assert (Result.FAIL, "expired 2026-12-05 12:00 UTC") == (expired.result, expired.detail)
    assert "clock is behind" in certificate_window(NOW + DAY, NOW + 90 * DAY, NOW).detail
    # A one-day certificate: a warning only in its last third, not within 14 days.
    hour = datetime.timedelta(hours=1)
    assert Result.OK == certificate_window(NOW - 10 * hour, NOW + 14 * hour, NOW).result
    assert Result.WARN == certificate_window(NOW - 17 * hour, NOW + 7 * hour, NOW).result


def run(chain: Chain, timeout_s: float = 5.0) -> list[Row]:
    return asyncio.run(run_chain(chain, timeout_s))


def test_a_failed_step_skips_the_steps_that_depend_on_it() -> None:
    rows = run(
        Chain(
            [
                Step("first", constant(fail("broken", "mend it"))),
                Step("independent", constant(ok("fine")), always=True),
                Step("dependent", constant(ok("never run"))),
            ]
        )
    )
    assert [("first", Result.FAIL), ("independent", Result.OK), ("dependent", Result.SKIP)] == [
        (r.check, r.result) for r in rows
    ]
    assert "not checked: first failed" == rows[2].detail


def test_a_step_blocked_in_a_driver_costs_one_timeout_and_the_chain_goes_on_to_clean_up() -> None:
    release = threading.Event()
    cleaned: list[bool] = []

    async def stuck() -> Finding:
        await in_thread(release.wait)  # a real thread, blocked as a driver's connect would be
        return ok("unreachable")

    async def cleanup() -> None:
        cleaned.append(True)

    started = time.monotonic()
    rows = run(Chain([Step("stuck", stuck), Step("after", constant(ok("x")))], cleanup=cleanup), timeout_s=0.2)
    elapsed = time.monotonic() - started
    release.set()
    assert [("stuck", Result.FAIL, "no answer within 0.2 s"), ("after", Result.SKIP, "not checked: stuck failed")] == [
        (r.check, r.result, r.detail) for r in rows
    ]
    assert [True] == cleaned
    assert elapsed < 2, elapsed


def test_a_check_that_raises_becomes_a_failed_row() -> None:
    async def buggy() -> Finding:
        raise KeyError("oops")

    rows = run(Chain([Step("buggy", buggy)]))
    assert Result.FAIL == rows[0].result
    assert "the check itself failed: KeyError" in rows[0].detail


def test_rows_are_one_line_and_never_show_a_secret() -> None:
    secret = "Doctor-unit-secret-8842"  # noqa: S105 - registered, then looked for
    REDACTOR.add(secret)
    row = Row.of("login", fail(f"refused:\n  password {secret}\n", f"not {secret}"))
    assert ("refused: password ***", "not ***") == (row.detail, row.advice)


def test_data_dir_must_be_private_and_writable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert "does not exist" in check_data_dir(data, 0).detail
    data.mkdir(mode=0o700)
    assert Result.OK == check_data_dir(data, 0).result
    data.chmod(0o777)
    open_dir = check_data_dir(data, 0)
    assert (Result.FAIL, f"chmod 700 {data}") == (open_dir.result, open_dir.advice)
    data.chmod(0o750)
    assert Result.WARN == check_data_dir(data, 0).result  # listable by the group
    data.chmod(0o700)
    assert Result.WARN == check_data_dir(data, 1 << 60).result  # less room than the spool may take
    file = tmp_path / "file"
    file.write_text("")
    assert "is not a directory" in check_data_dir(file, 0).detail


@pytest.mark.parametrize(
    ("connection_string", "address"),
    [
        ("Driver={PostgreSQL Unicode};Server=db1;Port=5433;Database=x", ("db1", 5433)),
        ("Driver={MariaDB Unicode};Server=127.0.0.1;Database=x", ("127.0.0.1", 3306)),
        ("Driver={ODBC Driver 18 for SQL Server};Server=tcp:sql.corp,14330", ("sql.corp", 14330)),
        ("Driver={ODBC Driver 18 for SQL Server};Server=sql.corp\\INST", ("sql.corp", 1433)),
    ],
)
def test_where_a_connection_string_points(connection_string: str, address: tuple[str, int]) -> None:
    assert address == server_address(SqlProfile(plugin="sql", connection_string=connection_string))


def test_a_dsn_or_unknown_driver_leaves_the_address_to_the_login() -> None:
    assert isinstance(server_address(SqlProfile(plugin="sql", dsn="reports")), str)
    assert isinstance(server_address(SqlProfile(plugin="sql", connection_string="Driver={Exotic};Server=h")), str)


def test_the_table_prints_advice_under_failures_and_the_exit_code_follows_them() -> None:
    rows = [
        Row.of("config", ok("valid")),
        Row.of("data_dir", warn("little room", "free space")),
        Row.of("control 127.0.0.1:1 tcp", fail("refused", "start it")),
    ]
    text = render_table(rows).splitlines()
    assert text[0].split() == ["CHECK", "RESULT", "DETAIL"]
    assert ["control", "127.0.0.1:1", "tcp", "FAIL", "refused"] == text[4].split()
    assert ["fix: free space", "fix: start it"] == [line.strip() for line in text if line.strip().startswith("fix:")]
    assert "1 failed, 1 warning, 1 ok" == text[-1]
    assert 1 == exit_code(rows)
    assert 0 == exit_code(rows[:2])
    assert {"check": "config", "result": "ok", "detail": "valid", "advice": None} == json.loads(render_json(rows))[0]


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["doctor"], ["doctor", "--config", "x.toml", "--timeout", "soon"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert 2 == exited.value.code
    assert "argument --timeout: 'soon' is not a number of seconds" in capsys.readouterr().err


def enrolled_dir(tmp_path: Path, not_after: datetime.datetime) -> Path:
    """A data_dir as enrolment leaves it, with a client certificate for the agent's own key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = new_key()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "doctor-unit")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(not_after - 90 * DAY)
        .not_valid_after(not_after)
        .sign(ca_key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    data_dir = tmp_path / "data"
    save_identity(data_dir, key, "agent-1", "default", "id-1", certificate=pem, server_ca=pem)
    return data_dir


def agent_section(data_dir: Path, name: str = "agent-1") -> AgentSection:
    return AgentSection(name=name, data_dir=str(data_dir))


def test_identity_enrolled_complete_and_the_configured_agent(tmp_path: Path) -> None:
    data_dir = enrolled_dir(tmp_path, datetime.datetime.now(datetime.UTC) + 60 * DAY)
    check = IdentityCheck(agent_section(data_dir))
    assert Result.OK == check.check_identity().result
    assert Result.OK == check.check_certificate().result
    other = IdentityCheck(agent_section(data_dir, name="agent-2")).check_identity()
    assert (Result.FAIL, "enrolled as agent-1/default, but the config says agent-2/default") == (
        other.result,
        other.detail,
    )
    (data_dir / "agent.key").chmod(0o644)
    assert (
        "other users can read the agent's private key" in IdentityCheck(agent_section(data_dir)).check_identity().detail
    )
    (data_dir / "agent.key").chmod(0o600)
    (data_dir / "agent.crt").unlink()
    assert "agent.crt is missing" in IdentityCheck(agent_section(data_dir)).check_identity().detail
    assert "not enrolled" in IdentityCheck(agent_section(tmp_path / "empty")).check_identity().detail


def test_an_expired_client_certificate_fails(tmp_path: Path) -> None:
    check = IdentityCheck(agent_section(enrolled_dir(tmp_path, datetime.datetime.now(datetime.UTC) - DAY)))
    assert Result.OK == check.check_identity().result
    expired = check.check_certificate()
    assert Result.FAIL == expired.result
    assert expired.detail.startswith("expired ")
