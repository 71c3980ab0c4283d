"""The sql plugin through real control-plane and agent processes, against PostgreSQL and MariaDB.

The agent's profiles connect as root (PostgreSQL trusts loopback; MariaDB's root has no
password on this machine); a database that is not running fails these tests.
"""

# The SQL built with f-strings below interpolates only table names and tags these tests make.
# ruff: noqa: S608

from __future__ import annotations

import datetime
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from bridgehead_testing.databases import MARIA, PG, admin, mariadb_account
from bridgehead_testing.harness import Agent, Api, ControlPlane, scaled, wait_connected, wait_until
from bridgehead_testing.rss import RssSampler

AgentFactory = Callable[..., Agent]

MARIA_USER = "bh_pw_test"
MARIA_PASSWORD = "right"  # noqa: S105 - the test account's real password, made and dropped by the fixture
WRONG_PASSWORD = "Wr0ng-pw-9d4c2a"  # noqa: S105 - looked for in messages and logs
PASSWORD_ENV = "BH_TEST_MARIA_PW"  # noqa: S105 - the name of a variable, not a secret

# {app} is replaced per agent: PostgreSQL sessions of that agent carry it as application_name.
SQL_PROFILES = f"""
[connections.pg]
plugin = "sql"
connection_string = "{PG};pqopt={{application_name={{app}}}}"
credential = "pg"

[connections.pg_quick]
plugin = "sql"
connection_string = "{PG};pqopt={{application_name={{app}}}}"
credential = "pg"
query_timeout_s = 1

[connections.maria]
plugin = "sql"
connection_string = "{MARIA}"
credential = "maria"

[connections.maria_quick]
plugin = "sql"
connection_string = "{MARIA}"
credential = "maria"
query_timeout_s = 1

[connections.maria_badpw]
plugin = "sql"
connection_string = "{MARIA}"
credential = "maria_badpw"

[credentials.pg]
username = "root"

[credentials.maria]
username = "root"

[credentials.maria_badpw]
username = "{MARIA_USER}"
password_env = "{PASSWORD_ENV}"
"""

BIG_ROWS = 1_000_000
EPOCH = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
DAY_ONE = datetime.date(2024, 1, 1)


def tag() -> str:
    return f"bh_tag_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def big_table() -> Iterator[str]:
    """1,000,000 rows of mixed types in PostgreSQL, made once for the module."""
    name = f"bh_big_{uuid.uuid4().hex[:12]}"
    conn = admin(PG)
    cur = conn.cursor()
    cur.execute(
        f"""CREATE TABLE {name} (id bigint PRIMARY KEY, label text, amount numeric(12, 2), at timestamptz,
            flag boolean, day date, ratio double precision)"""
    )
    cur.execute(
        f"""INSERT INTO {name}
            SELECT g, 'row-' || g, (g % 100000) / 100.0, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
                   g % 2 = 0, date '2024-01-01' + (g % 365), g::float8 / 7
            FROM generate_series(1, {BIG_ROWS}) g"""
    )
    cur.execute(f"ANALYZE {name}")
    try:
        yield name
    finally:
        cur.execute(f"DROP TABLE IF EXISTS {name}")
        conn.close()


def expected_big_row(n: int) -> dict[str, Any]:
    """Row ``n`` of ``big_table`` in its JSON form."""
    return {
        "id": n,
        "label": f"row-{n}",
        "amount": f"{(n % 100000) // 100}.{n % 100:02d}",
        "at": (EPOCH + datetime.timedelta(seconds=n)).isoformat().replace("+00:00", "Z"),
        "flag": n % 2 == 0,
        "day": (DAY_ONE + datetime.timedelta(days=n % 365)).isoformat(),
        "ratio": n / 7,
    }


def check_records_in_order(api: Api, job_id: str) -> int:
    """Read a job's records a page at a time and check that record k is row k of big_table;
    return how many there were. Nothing is kept beyond the current page."""
    after, n = 0, 0
    while True:
        status, body = api.request("GET", f"/api/v1/jobs/{job_id}/records?after={after}&limit=10000")
        assert 200 == status, body
        for record in body["records"]:
            n += 1
            if record != expected_big_row(n):
                raise AssertionError(f"record {n} is {record}, expected {expected_big_row(n)}")
        if body["next"] is None:
            return n
        after = body["next"]


@pytest.fixture(scope="module")
def maria_user() -> Iterator[str]:
    """A MariaDB account with a password and SELECT on test.*, for the wrong-password test."""
    with mariadb_account(MARIA_USER, MARIA_PASSWORD) as user:
        yield user


class SqlAgent:
    def __init__(self, agent: Agent, api: Api, app: str) -> None:
        self.agent = agent
        self.api = api
        # The application_name of this agent's PostgreSQL sessions.
        self.app = app


def start_sql_agent(control: ControlPlane, agent_factory: AgentFactory) -> SqlAgent:
    app = tag()
    agent = agent_factory(control, extra=SQL_PROFILES.replace("{app}", app), env={PASSWORD_ENV: WRONG_PASSWORD})
    api = control.api()
    wait_connected(api, [agent.name])
    return SqlAgent(agent, api, app)


def pg_backends(app: str) -> list[int]:
    """PostgreSQL backends of one agent (by application_name)."""
    conn = admin(PG)
    try:
        query = "SELECT pid FROM pg_stat_activity WHERE application_name = ?"
        return [int(row[0]) for row in conn.cursor().execute(query, app).fetchall()]
    finally:
        conn.close()


# --- sessions on the servers ---------------------------------------------------------------


def sessions(db: str, marker: str) -> list[int]:
    """Server sessions (other than ours) whose current statement contains ``marker``."""
    if db == "pg":
        query = "SELECT pid FROM pg_stat_activity WHERE query LIKE ? AND pid <> pg_backend_pid()"
        conn = admin(PG)
    else:
        query = "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE ? AND ID <> CONNECTION_ID()"
        conn = admin(MARIA)
    try:
        return [int(row[0]) for row in conn.cursor().execute(query, f"%{marker}%").fetchall()]
    finally:
        conn.close()


SLEEP = {"pg": "SELECT pg_sleep({s}) AS s, '{tag}' AS tag", "maria": "SELECT SLEEP({s}) AS s, '{tag}' AS tag"}
CONNECTION = {"pg": "pg", "maria": "maria"}


# --- a. volume ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_million_rows_arrive_once_and_in_order_in_bounded_memory(
    control: ControlPlane, agent_factory: AgentFactory, big_table: str
) -> None:
    """1,000,000 rows of mixed types stream through agent and control plane: each arrives once,
    in order, with its exact value, and neither process grows by more than 150 MB doing it."""
    sql = start_sql_agent(control, agent_factory)
    agent, api = sql.agent, sql.api
    assert agent.proc is not None and control.proc is not None
    with RssSampler({"agent": agent.proc.pid, "control": control.proc.pid}) as rss:
        started = time.monotonic()
        job = api.submit("sql", {"connection": "pg", "query": f"SELECT * FROM {big_table} ORDER BY id"})
        done = api.wait_done(job["id"], timeout=240)
        streamed_s = time.monotonic() - started
    assert ("succeeded", BIG_ROWS, 1) == (done["state"], done["record_count"], done["attempt"]), done
    growth = rss.growth_mib()
    print(f"1M rows streamed in {streamed_s:.1f} s; peak RSS growth (MB): {growth}")
    assert growth["agent"] < 150, f"agent RSS grew by {growth['agent']} MB (start {rss.start['agent'] / 2**20:.0f} MB)"
    assert growth["control"] < 150, (
        f"control plane RSS grew by {growth['control']} MB (start {rss.start['control'] / 2**20:.0f} MB)"
    )
    assert BIG_ROWS == check_records_in_order(api, job["id"])


# --- b. cancel ----------------------------------------------------------------------------


@pytest.mark.parametrize("db", ["pg", "maria"])
def test_cancel_reaches_the_database_server(control: ControlPlane, agent_factory: AgentFactory, db: str) -> None:
    """A cancel through the API ends the job cancelled and the statement's server session."""
    api = start_sql_agent(control, agent_factory).api
    marker = tag()
    job = api.submit("sql", {"connection": CONNECTION[db], "query": SLEEP[db].format(s=60, tag=marker)}, max_attempts=1)
    wait_until(lambda: sessions(db, marker), 20, f"the {db} session running sleep(60)", interval=0.1)
    status, body = api.request("POST", f"/api/v1/jobs/{job['id']}/cancel")
    assert 200 == status, body
    started = time.monotonic()
    done = api.wait_done(job["id"], timeout=20)
    assert ("cancelled", "cancelled") == (done["state"], done["error"]["code"]), done
    wait_until(lambda: not sessions(db, marker), 10, f"the {db} session to end after the cancel", interval=0.1)
    assert time.monotonic() - started < scaled(10)


# --- c. timeouts --------------------------------------------------------------------------


@pytest.mark.parametrize("db", ["pg", "maria"])
def test_query_timeout_fails_the_job_and_ends_the_session(
    control: ControlPlane, agent_factory: AgentFactory, db: str
) -> None:
    """query_timeout_s = 1 against a 30 s sleep: failed with query_timeout within seconds."""
    api = start_sql_agent(control, agent_factory).api
    marker = tag()
    started = time.monotonic()
    job = api.submit(
        "sql", {"connection": f"{CONNECTION[db]}_quick", "query": SLEEP[db].format(s=30, tag=marker)}, max_attempts=1
    )
    done = api.wait_done(job["id"], timeout=20)
    elapsed = time.monotonic() - started
    assert ("failed", "query_timeout") == (done["state"], done["error"]["code"]), done
    assert "query_timeout_s = 1" in done["error"]["message"]
    assert elapsed < scaled(8), f"the job took {elapsed:.1f} s to fail"
    wait_until(lambda: not sessions(db, marker), 10, f"the {db} session to end after the timeout", interval=0.1)


def test_job_timeout_fails_the_job_and_ends_the_session(control: ControlPlane, agent_factory: AgentFactory) -> None:
    """The job's own timeout_s (2 s) on a profile with the default query timeout (300 s)."""
    api = start_sql_agent(control, agent_factory).api
    marker = tag()
    started = time.monotonic()
    job = api.submit(
        "sql", {"connection": "pg", "query": SLEEP["pg"].format(s=30, tag=marker)}, timeout_s=2, max_attempts=1
    )
    wait_until(lambda: sessions("pg", marker), 10, "the session running pg_sleep(30)", interval=0.1)
    done = api.wait_done(job["id"], timeout=20)
    assert ("failed", "timeout") == (done["state"], done["error"]["code"]), done
    assert time.monotonic() - started < scaled(10)
    wait_until(lambda: not sessions("pg", marker), 10, "the session to end after the job timeout", interval=0.1)


# --- d. the database session goes away mid-query ------------------------------------------


def test_terminated_backend_fails_the_job_and_the_pool_carries_on(
    control: ControlPlane, agent_factory: AgentFactory
) -> None:
    """pg_terminate_backend on a streaming query: that job fails cleanly with its SQLSTATE, the
    agent stays up, and the next job on the same connection succeeds."""
    sql = start_sql_agent(control, agent_factory)
    agent, api = sql.agent, sql.api
    marker = tag()
    # generate_series in the select list streams lazily; in FROM it would be materialised first.
    query = f"SELECT generate_series(1, 200000000) AS g, '{marker}' AS tag"
    job = api.submit("sql", {"connection": "pg", "query": query}, max_attempts=1)
    wait_until(lambda: api.job(job["id"])["record_count"] > 0, 30, "records streaming")
    # Once rows stream, the session's current statement is psqlODBC's FETCH, not the query:
    # the agent's application_name finds it (its pool has just this one session).
    [pid] = pg_backends(sql.app)
    conn = admin(PG)
    try:
        assert 1 == conn.cursor().execute("SELECT pg_terminate_backend(?)::int", pid).fetchone()[0]
    finally:
        conn.close()
    done = api.wait_done(job["id"], timeout=30)
    assert "failed" == done["state"], done
    assert done["error"]["code"] in ("source_unavailable", "sql_error"), done["error"]
    assert re.search(r"SQLSTATE [0-9A-Z]{5}", done["error"]["message"]), done["error"]
    assert 0 < done["record_count"] < 200_000_000
    assert agent.proc is not None and agent.proc.poll() is None
    again = api.submit("sql", {"connection": "pg", "query": "SELECT 1 AS one"}, max_attempts=1)
    after = api.wait_done(again["id"], timeout=30)
    assert ("succeeded", 1) == (after["state"], after["record_count"]), after
    assert [{"one": 1}] == api.records(again["id"])


# --- e. the agent killed mid-query ----------------------------------------------------------


@pytest.mark.slow
def test_agent_killed_mid_query_repeats_the_read_only_job_once(
    control: ControlPlane, agent_factory: AgentFactory, big_table: str
) -> None:
    """kill -9 of the agent while 300,000 rows stream, then a restart with the same identity:
    the job runs again and succeeds, and its visible records are one attempt's, 1..N once each."""
    rows = 300_000
    sql = start_sql_agent(control, agent_factory)
    agent, api = sql.agent, sql.api
    query = f"SELECT * FROM {big_table} WHERE id <= {rows} ORDER BY id"
    job = api.submit("sql", {"connection": "pg", "query": query})
    wait_until(lambda: api.job(job["id"])["record_count"] > 0, 30, "records acked", interval=0.02)
    agent.kill9()
    assert "succeeded" != api.job(job["id"])["state"], "the job ended before the kill"
    agent.start()
    done = api.wait_done(job["id"], timeout=180)
    assert ("succeeded", rows) == (done["state"], done["record_count"]), done
    assert done["attempt"] >= 2, done
    assert rows == check_records_in_order(api, job["id"])


# --- f. errors through the API --------------------------------------------------------------


@pytest.mark.parametrize(
    ("db", "query", "code", "state"),
    [
        ("pg", "SELECT 1 +", "sql_error", "42601"),
        ("maria", "SELECT 1 +", "sql_error", "42000"),
        ("pg", "SELECT * FROM {tag}", "sql_error", "42P01"),
        ("maria", "SELECT * FROM {tag}", "sql_error", "42S02"),
        ("pg", "CREATE TABLE {tag} (x int)", "policy_denied", None),
        ("maria", "CREATE TABLE {tag} (x int)", "policy_denied", None),
    ],
)
def test_sql_errors_reach_the_api_with_their_sqlstate(
    control: ControlPlane, agent_factory: AgentFactory, db: str, query: str, code: str, state: str | None
) -> None:
    api = start_sql_agent(control, agent_factory).api
    marker = tag()
    job = api.submit("sql", {"connection": CONNECTION[db], "query": query.format(tag=marker)})
    done = api.wait_done(job["id"], timeout=30)
    assert ("failed", code, 1, 0) == (
        done["state"],
        done["error"]["code"],
        done["attempt"],
        done["record_count"],
    ), done
    if state is not None:
        assert f"SQLSTATE {state}" in done["error"]["message"], done["error"]
    if code == "policy_denied":
        # Nothing was created.
        check = "SELECT count(*) FROM information_schema.tables WHERE table_name = ?"
        conn = admin(PG if db == "pg" else MARIA)
        try:
            assert 0 == conn.cursor().execute(check, marker).fetchone()[0]
        finally:
            conn.close()


def test_wrong_password_is_auth_failed_and_never_shown(
    control: ControlPlane, agent_factory: AgentFactory, maria_user: str
) -> None:
    """A MariaDB credential with a wrong password (from password_env): auth_failed, and the
    password appears neither in the job's error nor in the agent's or control plane's log."""
    sql = start_sql_agent(control, agent_factory)
    agent, api = sql.agent, sql.api
    job = api.submit("sql", {"connection": "maria_badpw", "query": "SELECT 1 AS one"})
    done = api.wait_done(job["id"], timeout=30)
    assert ("failed", "auth_failed", 1) == (done["state"], done["error"]["code"], done["attempt"]), done
    message = done["error"]["message"]
    assert "SQLSTATE 28000" in message and maria_user in message, message
    assert WRONG_PASSWORD not in message
    status, listed = api.request("GET", "/api/v1/jobs?state=failed")
    assert 200 == status
    assert WRONG_PASSWORD not in str(listed)
    agent_log = agent.log_text()
    assert "auth_failed" in agent_log  # the failure was logged: the log is the right one
    assert WRONG_PASSWORD not in agent_log
    assert WRONG_PASSWORD not in control.log_text()
