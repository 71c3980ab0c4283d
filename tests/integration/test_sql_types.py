"""The sql plugin in-process (``run_plugin``) against the real PostgreSQL and MariaDB servers.

Every table is made per test with a unique name by a fixture (over pyodbc, autocommit) and
dropped after it. A database that is not running fails these tests; nothing is skipped.
"""

# The SQL built with f-strings below interpolates only table names these tests make themselves.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest
from bridgehead_testing.databases import MARIA, PG, admin, mariadb_account
from bridgehead_testing.harness import ROOT, free_port, scaled, wait_until_async

from bridgehead.core.errors import JobError, SourceError
from bridgehead.plugins.sql import SqlPlugin
from bridgehead.plugins.sql.params import SqlProfile
from bridgehead.sdk import Credential
from bridgehead.sdk.testing import run_plugin

DATABASES = {"pg": PG, "maria": MARIA}
ROOT_USER = Credential(username="root")
# 25,000 characters with 2-, 3- and 4-byte UTF-8 in them, so truncation or re-encoding shows.
LONG_TEXT = ("héllo wörld € 😀 " * 2000)[:25_000]
ALL_BYTES = bytes(range(256))


def scalar(connection_string: str, query: str, *parameters: Any) -> Any:
    conn = admin(connection_string)
    try:
        return conn.cursor().execute(query, *parameters).fetchone()[0]
    finally:
        conn.close()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _connection_name(connection_string: str, profile: dict[str, Any]) -> str:
    # The plugin pools by connection name: each distinct profile gets its own name.
    digest = hashlib.sha256(json.dumps([connection_string, profile], sort_keys=True).encode()).hexdigest()
    return "c" + digest[:12]


async def run(
    plugin: SqlPlugin,
    connection_string: str,
    query: str,
    parameters: list[Any] | None = None,
    *,
    credential: Credential | None = ROOT_USER,
    job_max_rows: int | None = None,
    name: str | None = None,
    **profile: Any,
) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"connection": name or _connection_name(connection_string, profile), "query": query}
    if parameters is not None:
        params["parameters"] = parameters
    if job_max_rows is not None:
        params["max_rows"] = job_max_rows
    return await run_plugin(
        plugin,
        params,
        profile={"connection_string": connection_string, **profile},
        credential=credential,
        timeout_s=scaled(60),
    )


async def failure(plugin: SqlPlugin, connection_string: str, query: str, **kwargs: Any) -> JobError:
    with pytest.raises(JobError) as info:
        await run(plugin, connection_string, query, **kwargs)
    return info.value


@pytest.fixture
async def plugin() -> AsyncIterator[SqlPlugin]:
    sql = SqlPlugin()
    try:
        yield sql
    finally:
        await sql.aclose()


@pytest.fixture(params=sorted(DATABASES))
def db(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def scratch(db: str) -> Iterator[str]:
    """An empty table ``(x int)`` on ``db``, for writes that must (or must not) land."""
    name = unique("bh_w")
    conn = admin(DATABASES[db])
    conn.cursor().execute(f"CREATE TABLE {name} (x int)")
    try:
        yield name
    finally:
        conn.cursor().execute(f"DROP TABLE IF EXISTS {name}")
        conn.close()


def count_rows(db: str, table: str) -> int:
    return int(scalar(DATABASES[db], f"SELECT count(*) FROM {table}"))


# --- the JSON form of each type ----------------------------------------------------------


@pytest.fixture
def pg_types() -> Iterator[str]:
    name = unique("bh_types")
    conn = admin(PG)
    cur = conn.cursor()
    cur.execute(
        f"""CREATE TABLE {name} (
            id int PRIMARY KEY, n int, b boolean, s smallint, i integer, bi bigint, d numeric(30, 10),
            r real, f double precision, dt date, t time, t2 time, ts timestamp, tz timestamptz,
            by bytea, u uuid, txt text, j json, jb jsonb, iv interval, arr int[], ch char(5))"""
    )
    cur.execute(
        f"""INSERT INTO {name} VALUES (1, NULL, true, -32768, -2147483648, 9223372036854775807,
            12345678901234567890.0123456789, 1.5, 0.1, '2024-02-29', '12:00:01', '12:00:01.5',
            '2024-02-29 12:00:01.5', '2024-02-29 12:00:01.5+02', ?, 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11',
            ?, '{{"b": 2,  "a": 1}}', '{{"b": 2,  "a": 1}}', '1 day 2 hours', ARRAY[1, 2, 3], 'ab')""",
        ALL_BYTES,
        LONG_TEXT,
    )
    cur.execute(
        f"""INSERT INTO {name} (id, b, s, i, bi, d, r, f) VALUES
            (2, false, 32767, 2147483647, -9223372036854775808, -0.5, 'NaN', 'NaN'),
            (3, NULL, 0, 0, 0, 0, 'Infinity', 'Infinity'),
            (4, NULL, 0, 0, 0, 0.0000001, '-Infinity', '-Infinity')"""
    )
    try:
        yield name
    finally:
        cur.execute(f"DROP TABLE IF EXISTS {name}")
        conn.close()


async def test_postgresql_types_have_their_exact_json_form(plugin: SqlPlugin, pg_types: str) -> None:
    """Each PostgreSQL type arrives in the JSON form rows.py documents, value for value."""
    records = await run(plugin, PG, f"SELECT * FROM {pg_types} ORDER BY id")
    assert 4 == len(records)
    assert {
        "id": 1,
        "n": None,
        "b": True,
        "s": -32768,
        "i": -2147483648,
        "bi": 9223372036854775807,
        "d": "12345678901234567890.0123456789",
        "r": 1.5,
        "f": 0.1,
        "dt": "2024-02-29",
        "t": "12:00:01",
        "t2": "12:00:01.500000",
        "ts": "2024-02-29T12:00:01.500000",
        "tz": "2024-02-29T10:00:01.500000Z",
        "by": base64.b64encode(ALL_BYTES).decode(),
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "txt": LONG_TEXT,
        "j": '{"b": 2,  "a": 1}',
        "jb": '{"a": 1, "b": 2}',
        "iv": "1 day 02:00:00",
        "arr": "{1,2,3}",
        "ch": "ab   ",
    } == records[0]
    # The instant itself: 12:00:01.5 at +02:00 is 10:00:01.5 UTC.
    instant = datetime.datetime.fromisoformat(records[0]["tz"].replace("Z", "+00:00"))
    assert datetime.datetime(2024, 2, 29, 10, 0, 1, 500_000, tzinfo=datetime.UTC) == instant
    assert 25_000 == len(records[0]["txt"])
    nulls = {k: v for k, v in records[1].items() if k not in ("id", "b", "s", "i", "bi", "d", "r", "f")}
    assert set(nulls.values()) == {None}
    assert (False, 32767, 2147483647, -9223372036854775808, "-0.5000000000", "NaN", "NaN") == tuple(
        records[1][k] for k in ("b", "s", "i", "bi", "d", "r", "f")
    )
    assert (None, "0.0000000000", "Infinity", "Infinity") == tuple(records[2][k] for k in ("b", "d", "r", "f"))
    # Decimals as plain strings with the column's scale, never in exponent form ("0E-10", "1.000E-7").
    assert ("0.0000001000", "-Infinity", "-Infinity") == (records[3]["d"], records[3]["r"], records[3]["f"])


@pytest.fixture
def maria_types() -> Iterator[str]:
    name = unique("bh_types")
    conn = admin(MARIA)
    cur = conn.cursor()
    cur.execute(
        f"""CREATE TABLE {name} (
            id int PRIMARY KEY, n int, b bit(1), ti tinyint, si smallint, i int, bi bigint,
            ubi bigint unsigned, d decimal(30, 10), r float, f double, dt date, t time, t6 time(6),
            ts datetime(6), tz timestamp(6) NULL, vb varbinary(300), bl blob, txt longtext, ch char(5), js json
        ) CHARACTER SET utf8mb4"""
    )
    # TIMESTAMP is stored in UTC: written at +02:00, 12:00:01.5 is 10:00:01.5 UTC.
    cur.execute("SET time_zone = '+02:00'")
    cur.execute(
        f"""INSERT INTO {name} VALUES (1, NULL, b'1', -128, -32768, -2147483648, 9223372036854775807,
            18446744073709551615, 12345678901234567890.0123456789, 1.5, 0.1, '2024-02-29', '12:00:01.5',
            '12:00:01.5', '2024-02-29 12:00:01.5', '2024-02-29 12:00:01.5', ?, ?,
            CONVERT(X'{LONG_TEXT.encode().hex()}' USING utf8mb4), 'ab', '{{"a": 1}}')""",
        ALL_BYTES,
        b"\x00\x01\x02",
    )
    cur.execute(
        f"""INSERT INTO {name} (id, b, ti, si, i, bi, ubi, d) VALUES
            (2, b'0', 127, 32767, 2147483647, -9223372036854775808, 0, -0.5),
            (3, NULL, NULL, NULL, NULL, NULL, NULL, 0),
            (4, NULL, NULL, NULL, NULL, NULL, NULL, 0.0000001)"""
    )
    try:
        yield name
    finally:
        cur.execute(f"DROP TABLE IF EXISTS {name}")
        conn.close()


async def test_mariadb_types_have_their_exact_json_form(plugin: SqlPlugin, maria_types: str) -> None:
    """Each MariaDB type arrives in the JSON form rows.py documents, value for value."""
    records = await run(plugin, MARIA, f"SELECT * FROM {maria_types} ORDER BY id")
    assert 4 == len(records)
    assert {
        "id": 1,
        "n": None,
        "b": True,
        "ti": -128,
        "si": -32768,
        "i": -2147483648,
        "bi": 9223372036854775807,
        "ubi": 18446744073709551615,
        "d": "12345678901234567890.0123456789",
        "r": 1.5,
        "f": 0.1,
        "dt": "2024-02-29",
        # MariaDB Connector/ODBC returns TIME without its fractional seconds (even TIME(6)):
        # '12:00:01.5' arrives as 12:00:01. A known driver limit (docs/plugins/sql.md).
        "t": "12:00:01",
        "t6": "12:00:01",
        "ts": "2024-02-29T12:00:01.500000",
        "tz": "2024-02-29T10:00:01.500000Z",
        "vb": base64.b64encode(ALL_BYTES).decode(),
        "bl": "AAEC",
        "txt": LONG_TEXT,
        # MariaDB strips CHAR(n)'s trailing spaces on read (no PAD_CHAR_TO_FULL_LENGTH).
        "ch": "ab",
        "js": '{"a": 1}',
    } == records[0]
    instant = datetime.datetime.fromisoformat(records[0]["tz"].replace("Z", "+00:00"))
    assert datetime.datetime(2024, 2, 29, 10, 0, 1, 500_000, tzinfo=datetime.UTC) == instant
    assert {
        "id": 2,
        "b": False,
        "ti": 127,
        "si": 32767,
        "i": 2147483647,
        "bi": -9223372036854775808,
        "ubi": 0,
        "d": "-0.5000000000",
    } == {k: v for k, v in records[1].items() if v is not None}
    # Decimals as plain strings with the column's scale, never in exponent form ("0E-10", "1.000E-7").
    assert ("0.0000000000", "0.0000001000") == (records[2]["d"], records[3]["d"])


# --- parameters, column names, row limits ----------------------------------------------


async def test_parameters_are_bound_not_spliced(plugin: SqlPlugin, db: str) -> None:
    """str, int, float, bool and None are bound with ?; quotes in a string stay data."""
    text = "hé'; DROP TABLE x; --\"😀"
    if db == "pg":
        # An untyped ? is text to PostgreSQL: the casts give each value its type.
        query = (
            "SELECT CAST(? AS text) AS s, CAST(? AS bigint) AS i, CAST(? AS float8) AS f, "
            "CAST(? AS boolean) AS b, CAST(? AS text) AS n"
        )
    else:
        query = "SELECT ? AS s, ? AS i, ? AS f, ? AS b, ? AS n"
    records = await run(plugin, DATABASES[db], query, [text, 9_007_199_254_740_993, 1.25, True, None])
    # MariaDB has no boolean type: a bound True is the integer 1.
    assert [{"s": text, "i": 9_007_199_254_740_993, "f": 1.25, "b": True if db == "pg" else 1, "n": None}] == records


async def test_parameters_filter_rows(plugin: SqlPlugin, pg_types: str) -> None:
    """Bound values compare against typed columns."""
    query = f"SELECT id FROM {pg_types} WHERE b = ? AND i = ? AND txt = ? AND f = ?"
    assert [{"id": 1}] == await run(plugin, PG, query, [True, -2147483648, LONG_TEXT, 0.1])
    assert [] == await run(plugin, PG, query, [False, -2147483648, LONG_TEXT, 0.1])


async def test_an_integer_parameter_beyond_int64_fails_the_job_cleanly(plugin: SqlPlugin, maria_types: str) -> None:
    """18446744073709551615 (BIGINT UNSIGNED max) as a parameter either finds its row or fails
    the job with invalid_params; a raw driver exception (OverflowError) must not leave the plugin,
    or the agent reports it as plugin_crashed."""
    query = f"SELECT id FROM {maria_types} WHERE ubi = ?"
    try:
        records = await run(plugin, MARIA, query, [18446744073709551615])
    except JobError as exc:
        assert "invalid_params" == exc.code, exc
    else:
        assert [{"id": 1}] == records


async def test_duplicate_column_names_get_suffixes(plugin: SqlPlugin, db: str) -> None:
    records = await run(plugin, DATABASES[db], "SELECT 1 AS x, 2 AS x, 3 AS y, 4 AS x")
    assert [{"x": 1, "x_2": 2, "y": 3, "x_3": 4}] == records
    assert ["x", "x_2", "y", "x_3"] == list(records[0])


@pytest.mark.parametrize(
    ("job_max", "profile_max", "expected"),
    [(3, None, 3), (None, 4, 4), (5, 2, 2), (2, 5, 2), (0, None, 0), (None, None, 10)],
)
async def test_max_rows_the_smaller_of_job_and_profile_wins(
    plugin: SqlPlugin, db: str, job_max: int | None, profile_max: int | None, expected: int
) -> None:
    ten = "SELECT 1 AS n UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5"
    query = f"SELECT n FROM ({ten} UNION ALL SELECT n + 5 FROM ({ten}) a) b ORDER BY n"
    profile = {} if profile_max is None else {"max_rows": profile_max}
    records = await run(plugin, DATABASES[db], query, job_max_rows=job_max, **profile)
    assert [{"n": n} for n in range(1, expected + 1)] == records
    # The session stays usable after a result was abandoned part-way.
    assert [{"one": 1}] == await run(plugin, DATABASES[db], "SELECT 1 AS one", **profile)


async def test_empty_result_gives_no_records(plugin: SqlPlugin, db: str, scratch: str) -> None:
    assert [] == await run(plugin, DATABASES[db], f"SELECT x FROM {scratch}")


async def test_statement_without_result_set_gives_rows_affected_and_commits(
    plugin: SqlPlugin, db: str, scratch: str
) -> None:
    cs = DATABASES[db]
    inserted = await run(plugin, cs, f"INSERT INTO {scratch} (x) VALUES (1), (2), (3)", read_only=False)
    assert [{"rows_affected": 3}] == inserted
    assert [{"rows_affected": 2}] == await run(
        plugin,
        cs,
        f"UPDATE {scratch} SET x = x + 10 WHERE x >= ?",
        [2],
        read_only=False,
    )
    # Committed: another session sees it.
    assert 3 == count_rows(db, scratch)
    assert 1 + 12 + 13 == int(scalar(cs, f"SELECT sum(x) FROM {scratch}"))


async def test_insert_returning_on_a_read_write_profile_is_committed(plugin: SqlPlugin, db: str, scratch: str) -> None:
    """A write with a result set (INSERT ... RETURNING) on read_only = false is committed too,
    not rolled back when the session goes back to the pool after the job reported success."""
    records = await run(plugin, DATABASES[db], f"INSERT INTO {scratch} (x) VALUES (5) RETURNING x", read_only=False)
    assert [{"x": 5}] == records
    assert 1 == count_rows(db, scratch)


async def test_data_modifying_cte_on_a_read_write_profile(plugin: SqlPlugin) -> None:
    """PostgreSQL's WITH ... INSERT ... RETURNING on read_only = false returns and commits its row."""
    table = unique("bh_w")
    conn = admin(PG)
    conn.cursor().execute(f"CREATE TABLE {table} (x int)")
    try:
        query = f"WITH d AS (INSERT INTO {table} (x) VALUES (7) RETURNING x) SELECT x FROM d"
        assert [{"x": 7}] == await run(plugin, PG, query, read_only=False)
        assert 1 == int(scalar(PG, f"SELECT count(*) FROM {table}"))
    finally:
        conn.cursor().execute(f"DROP TABLE IF EXISTS {table}")
        conn.close()


# --- errors --------------------------------------------------------------------------------

SYNTAX_STATE = {"pg": "42601", "maria": "42000"}
MISSING_TABLE_STATE = {"pg": "42P01", "maria": "42S02"}


async def test_syntax_error_is_sql_error_with_sqlstate(plugin: SqlPlugin, db: str) -> None:
    error = await failure(plugin, DATABASES[db], "SELECT 1 +")
    assert isinstance(error, SourceError)
    assert ("sql_error", False) == (error.code, error.retryable)
    assert f"SQLSTATE {SYNTAX_STATE[db]}" in error.message, error.message


async def test_missing_table_is_sql_error_with_sqlstate(plugin: SqlPlugin, db: str) -> None:
    table = unique("bh_missing")
    error = await failure(plugin, DATABASES[db], f"SELECT * FROM {table}")
    assert "sql_error" == error.code
    assert f"SQLSTATE {MISSING_TABLE_STATE[db]}" in error.message, error.message
    assert table in error.message


@pytest.mark.parametrize(
    "statement",
    ["INSERT INTO {t} (x) VALUES (1)", "DELETE FROM {t}", "CREATE TABLE {t}_2 (y int)", "DROP TABLE {t}"],
)
async def test_write_on_read_only_profile_is_refused(plugin: SqlPlugin, db: str, scratch: str, statement: str) -> None:
    """read_only defaults to true: a statement that does not start with a reading word is refused
    before it reaches the driver (the database's own refusals: tests/integration/test_sql_read_only.py)."""
    error = await failure(plugin, DATABASES[db], statement.format(t=scratch))
    assert ("policy_denied", False) == (error.code, error.retryable)
    assert error.message.startswith("read_only = true: a read-only job runs a statement that starts with")
    assert 0 == count_rows(db, scratch)  # the table is still there, and empty


async def test_data_modifying_cte_on_read_only_profile_is_refused_as_read_only(plugin: SqlPlugin) -> None:
    table = unique("bh_w")
    conn = admin(PG)
    conn.cursor().execute(f"CREATE TABLE {table} (x int)")
    try:
        # Not INSERT: the read-only check refuses INTO before the database sees it.
        query = f"WITH d AS (DELETE FROM {table} RETURNING x) SELECT x FROM d"
        error = await failure(plugin, PG, query)
        assert 0 == int(scalar(PG, f"SELECT count(*) FROM {table}"))
        assert ("read_only", True) == (error.code, "SQLSTATE 25006" in error.message), error.message
    finally:
        conn.cursor().execute(f"DROP TABLE IF EXISTS {table}")
        conn.close()


async def test_read_only_session_survives_a_job_that_turns_it_read_write(plugin: SqlPlugin) -> None:
    """A job that sets its PostgreSQL session's default read-write (set_config, in a SELECT) does
    not leave a writable session in the pool: the next write, on the same plugin, connection name
    and (pool_size = 1) slot, is refused by the database."""
    cs = PG
    first = await run(
        plugin, cs, "SELECT set_config('default_transaction_read_only', 'off', false) AS s", name="ro", pool_size=1
    )
    assert [{"s": "off"}] == first
    table = unique("bh_w")
    conn = admin(PG)
    conn.cursor().execute(f"CREATE TABLE {table} (x int)")
    try:
        query = f"WITH d AS (DELETE FROM {table} RETURNING x) SELECT x FROM d"
        error = await failure(plugin, cs, query, name="ro", pool_size=1)
        assert ("read_only", True) == (error.code, "SQLSTATE 25006" in error.message), error.message
    finally:
        conn.cursor().execute(f"DROP TABLE IF EXISTS {table}")
        conn.close()
    # And the pool still serves reads.
    assert [{"one": 1}] == await run(plugin, cs, "SELECT 1 AS one", name="ro", pool_size=1)


MULTI_STATEMENT_SCRIPT = r"""
import asyncio, json, sys
from bridgehead.core.errors import JobError
from bridgehead.sdk import Credential
from bridgehead.sdk.testing import run_plugin
from bridgehead.plugins.sql import SqlPlugin

async def main():
    plugin = SqlPlugin()
    out = []
    try:
        for query in ("SELECT 1 AS a; SELECT 2 AS b", "SELECT 3 AS c"):
            try:
                out.append(await run_plugin(plugin, {"connection": "m", "query": query},
                    profile={"connection_string": sys.argv[1], "read_only": False},
                    credential=Credential(username="root"),
                    timeout_s=20))
            except JobError as exc:
                out.append(exc.code)
            print(json.dumps(out), flush=True)
    finally:
        await plugin.aclose()

asyncio.run(main())
"""


def test_mariadb_multi_statement_text_fails_its_job_and_the_plugin_carries_on() -> None:
    """Two statements in one text on a read-write profile are refused by MariaDB (multi-statements
    are off); that job fails with sql_error and the next job on the same connection runs. Run in a child process:
    if the plugin hangs, only the child is killed."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", MULTI_STATEMENT_SCRIPT, MARIA],
            capture_output=True,
            text=True,
            timeout=scaled(45),
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired as exc:
        printed = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout
        pytest.fail(f"the plugin hung after a multi-statement error (printed so far: {printed or 'nothing'!r})")
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr[-3000:]
    assert ["sql_error", [{"c": 3}]] == json.loads(lines[-1]), result.stderr[-3000:]


# --- connecting: credentials, servers, drivers -----------------------------------------


MARIA_PASSWORD = "right"  # noqa: S105 - the test account's password, made and dropped by the fixture


@pytest.fixture
def maria_user() -> Iterator[str]:
    """A MariaDB account bh_pw_test with password 'right' and SELECT on test.*."""
    with mariadb_account("bh_pw_test", MARIA_PASSWORD) as user:
        yield user


async def test_wrong_password_on_mariadb_is_auth_failed_and_not_echoed(plugin: SqlPlugin, maria_user: str) -> None:
    wrong = "Wr0ng-pw-5c1e77"
    right = Credential(username=maria_user, password=MARIA_PASSWORD)
    good = await run(plugin, MARIA, "SELECT CURRENT_USER() AS u", credential=right)
    assert [{"u": f"{maria_user}@%"}] == good
    error = await failure(
        plugin, MARIA, "SELECT 1", credential=Credential(username=maria_user, password=wrong), name="wrong"
    )
    assert ("auth_failed", False) == (error.code, error.retryable), error.message
    assert "28000" in error.message
    assert wrong not in error.message
    assert wrong not in str(error)
    assert wrong not in repr(error.args)


async def test_unknown_postgresql_role_is_auth_failed(plugin: SqlPlugin) -> None:
    role = unique("bh_no_role")
    error = await failure(plugin, PG, "SELECT 1", credential=Credential(username=role))
    assert ("auth_failed", False) == (error.code, error.retryable), f"{error.code}: {error.message}"
    assert role in error.message


async def test_server_not_listening_is_source_unavailable_and_retryable(plugin: SqlPlugin, db: str) -> None:
    port = free_port()  # bound and released: nothing listens there now
    cs = DATABASES[db].replace("Port=5432", f"Port={port}").replace("Port=3306", f"Port={port}")
    assert str(port) in cs
    started = time.monotonic()
    error = await failure(plugin, cs, "SELECT 1", connect_timeout_s=5)
    assert ("source_unavailable", True) == (error.code, error.retryable), f"{error.code}: {error.message}"
    assert time.monotonic() - started < scaled(10)


async def test_unknown_odbc_driver_is_odbc_driver_missing(plugin: SqlPlugin) -> None:
    error = await failure(plugin, "Driver={Bridgehead No Such Driver 9};Server=127.0.0.1", "SELECT 1")
    assert ("odbc_driver_missing", False) == (error.code, error.retryable)
    assert "Bridgehead No Such Driver 9" in error.message


# --- the pool ------------------------------------------------------------------------------


def _backends(application_name: str) -> int:
    return int(scalar(PG, "SELECT count(*) FROM pg_stat_activity WHERE application_name = ?", application_name))


async def test_twenty_concurrent_jobs_share_at_most_pool_size_connections() -> None:
    """20 jobs at once on pool_size = 2 never hold more than 2 server sessions; aclose ends them."""
    app = unique("bh_pool")
    cs = f"{PG};pqopt={{application_name={app}}}"
    sql = SqlPlugin()
    peak = 0
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, await asyncio.to_thread(_backends, app))
            await asyncio.sleep(0.02)  # the sampling period of a measurement, not a wait for an event

    sampler = asyncio.create_task(sample())
    try:
        assert 0 == _backends(app)
        query = "SELECT CAST(? AS int) AS i FROM (SELECT pg_sleep(0.2)) s"
        results = await asyncio.gather(*(run(sql, cs, query, [i], name="pool", pool_size=2) for i in range(20)))
        assert [[{"i": i}] for i in range(20)] == results
        sampling = False
        await sampler
        assert 1 <= peak <= 2, f"peak of {peak} server sessions for pool_size = 2"
        assert 1 <= _backends(app) <= 2  # pooled, not closed after each job
    finally:
        sampling = False
        await sampler
        await sql.aclose()
    await wait_until_async(lambda: 0 == _backends(app), 5, "aclose() to end the pool's server sessions")


async def test_aclose_right_after_a_job_closes_its_connection_without_errors(caplog: pytest.LogCaptureFixture) -> None:
    """aclose() while the last job's session is still on its way back to the pool: that session
    is closed, and nothing fails in the event loop's callbacks."""
    app = unique("bh_close")
    cs = f"{PG};pqopt={{application_name={app}}}"
    sql = SqlPlugin()
    try:
        assert [{"one": 1}] == await run(sql, cs, "SELECT 1 AS one", name="close")
    finally:
        await sql.aclose()
    await wait_until_async(lambda: 0 == _backends(app), 5, "aclose() to end the job's server session")
    # aclose waited for the plugin's threads to finish, so whatever they handed to the loop is
    # already queued: a few turns of the loop run it (and anything it schedules in turn).
    for _ in range(10):
        await asyncio.sleep(0)
    loop_errors = [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert [] == loop_errors


# --- profile validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({}, "give exactly one of connection_string, dsn or jdbc_url (got none of them)"),
        (
            {"connection_string": PG, "dsn": "hr"},
            "give exactly one of connection_string, dsn or jdbc_url (got connection_string and dsn)",
        ),
        (
            {"dsn": "hr", "jdbc_url": "jdbc:postgresql://db:5432/hr"},
            "give exactly one of connection_string, dsn or jdbc_url (got dsn and jdbc_url)",
        ),
        (
            {"connection_string": PG + ";PWD=hunter2-secret"},
            "connection_string holds a secret (PWD=...); put it in a [credentials.NAME] table",
        ),
        (
            {"connection_string": PG + ";Password={hunter2-secret}"},
            "connection_string holds a secret (Password=...)",
        ),
        (
            {"connection_string": PG + ";UID=root", "credential": "pg"},
            "connection_string names the user (UID=...) and so does the profile's credential",
        ),
    ],
)
def test_profile_validation_errors(profile: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.convert({"plugin": "sql", **profile}, SqlProfile)
    assert message in str(info.value)
    assert "hunter2-secret" not in str(info.value)


def test_a_valid_profile_converts() -> None:
    profile = msgspec.convert({"plugin": "sql", "connection_string": PG, "credential": "pg"}, SqlProfile)
    assert (True, 300.0, 4, 1000) == (profile.read_only, profile.query_timeout_s, profile.pool_size, profile.fetch_size)
