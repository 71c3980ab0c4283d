"""A read-only sql profile changes nothing, whatever the query's text: real PostgreSQL and MariaDB.

Each trick runs in-process (``run_plugin``) on a read-only profile, and then the tables, the
catalog, a sequence and the file system are read back over a separate plain connection: they
must be as before. The same text then runs on a read-write profile of the same database, to
prove the trick is real (it writes there, or at least runs). MariaDB is reached with
multi-statements enabled in the connection string, so the fence is Bridgehead's, not the
driver's default. A database that is not running fails these tests; nothing is skipped.
"""

# The SQL built with f-strings below interpolates only names and paths these tests make.
# ruff: noqa: S608

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyodbc
import pytest
from bridgehead_testing.databases import MARIA as MARIA_TEST
from bridgehead_testing.databases import PG
from bridgehead_testing.databases import admin as root_connection
from bridgehead_testing.harness import scaled

from bridgehead.core.errors import JobError
from bridgehead.plugins.sql import SqlPlugin
from bridgehead.plugins.sql.statements import Lexing, statement_count
from bridgehead.sdk import Credential
from bridgehead.sdk.testing import run_plugin

# OPTION=67108864 is MariaDB Connector/ODBC's MULTI_STATEMENTS flag: off by default, on here.
MARIA = MARIA_TEST + ";OPTION=67108864"
DATABASES = {"pg": PG, "maria": MARIA}
ROOT_USER = Credential(username="root")


def admin(db: str) -> Any:
    """A plain root connection of the test itself (autocommit), to set up and inspect."""
    return root_connection(DATABASES[db])


@dataclass
class World:
    """One test's objects: a table of three rows, a sequence, a writing function and procedure."""

    db: str
    t: str  # the table; every other object's name starts with it
    marker: Path  # a file that a server-side program or OUTFILE would create
    data_file: Path  # rows for LOAD DATA

    def sql(self, template: str) -> str:
        return template.format(t=self.t, marker=self.marker, data=self.data_file)


PG_SETUP = [
    "CREATE TABLE {t} (id int PRIMARY KEY, v text)",
    "INSERT INTO {t} VALUES (1, 'one'), (2, 'two'), (3, 'three')",
    "CREATE SEQUENCE {t}_seq",
    "CREATE FUNCTION {t}_ins() RETURNS int LANGUAGE plpgsql AS $$ "
    "BEGIN INSERT INTO {t} VALUES (90, 'f'); RETURN 1; END $$",
    "CREATE PROCEDURE {t}_proc() LANGUAGE plpgsql AS $$ BEGIN INSERT INTO {t} VALUES (91, 'p'); END $$",
]
PG_TEARDOWN = [
    "DROP TABLE IF EXISTS {t}, {t}_copy, {t}_tmp",
    "DROP SEQUENCE IF EXISTS {t}_seq",
    "DROP FUNCTION IF EXISTS {t}_ins()",
    "DROP PROCEDURE IF EXISTS {t}_proc()",
]
MARIA_SETUP = [
    "CREATE TABLE {t} (id int PRIMARY KEY, v varchar(20)) ENGINE=InnoDB",
    "INSERT INTO {t} VALUES (1, 'one'), (2, 'two'), (3, 'three')",
    "CREATE SEQUENCE {t}_seq NOCACHE",
    "CREATE FUNCTION {t}_ins() RETURNS int MODIFIES SQL DATA BEGIN INSERT INTO {t} VALUES (90, 'f'); RETURN 1; END",
    "CREATE PROCEDURE {t}_proc() MODIFIES SQL DATA BEGIN INSERT INTO {t} VALUES (91, 'p'); END",
]
MARIA_TEARDOWN = [
    "DROP TABLE IF EXISTS {t}, {t}_copy",
    "DROP SEQUENCE IF EXISTS {t}_seq",
    "DROP FUNCTION IF EXISTS {t}_ins",
    "DROP PROCEDURE IF EXISTS {t}_proc",
]


def state(world: World) -> dict[str, Any]:
    """What a trick could change, read over a plain connection: rows, catalog, sequence, files."""
    conn = admin(world.db)
    cur = conn.cursor()
    t, like = world.t, world.t + "%"
    try:
        if world.db == "pg":
            rows = cur.execute(
                f"SELECT count(*), coalesce(md5(string_agg(id || ':' || v, ',' ORDER BY id)), '') FROM {t}"
            ).fetchone()
            # pg_class holds every session's temporary tables too.
            relations = cur.execute(
                "SELECT coalesce(string_agg(relname || ':' || relkind::text || relpersistence::text, ',' "
                "ORDER BY relname), '') FROM pg_class WHERE relname LIKE ?",
                like,
            ).fetchone()[0]
            routines = cur.execute(
                "SELECT coalesce(string_agg(proname, ',' ORDER BY proname), '') FROM pg_proc WHERE proname LIKE ?",
                like,
            ).fetchone()[0]
            sequence = str(cur.execute(f"SELECT last_value || ':' || is_called FROM {t}_seq").fetchone()[0])
        else:
            rows = cur.execute(
                f"SELECT count(*), coalesce(md5(group_concat(concat(id, ':', v) ORDER BY id)), '') FROM {t}"
            ).fetchone()
            relations = cur.execute(
                "SELECT coalesce(group_concat(concat(table_name, ':', table_type) ORDER BY table_name), '') "
                "FROM information_schema.tables WHERE table_schema = 'test' AND table_name LIKE ?",
                like,
            ).fetchone()[0]
            routines = cur.execute(
                "SELECT coalesce(group_concat(routine_name ORDER BY routine_name), '') "
                "FROM information_schema.routines WHERE routine_schema = 'test' AND routine_name LIKE ?",
                like,
            ).fetchone()[0]
            sequence = str(cur.execute(f"SELECT next_not_cached_value FROM {t}_seq").fetchone()[0])
    finally:
        conn.close()
    return {
        "rows": (int(rows[0]), str(rows[1])),
        "relations": relations,
        "routines": routines,
        "sequence": sequence,
        "marker": world.marker.exists(),
    }


@pytest.fixture(params=sorted(DATABASES))
def db(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_world(db: str) -> Iterator[World]:
    name = f"bh_ro_{uuid.uuid4().hex[:12]}"
    # /tmp, not pytest's tmp_path: the database servers (users postgres, mysql) write the marker.
    world = World(db, name, Path(f"/tmp/{name}_marker"), Path(f"/tmp/{name}_rows.tsv"))
    world.data_file.write_text("70\tloaded\n71\tloaded\n")
    world.data_file.chmod(0o644)
    conn = admin(db)
    try:
        for statement in PG_SETUP if db == "pg" else MARIA_SETUP:
            conn.cursor().execute(world.sql(statement))
        yield world
    finally:
        for statement in PG_TEARDOWN if db == "pg" else MARIA_TEARDOWN:
            conn.cursor().execute(world.sql(statement))
        conn.close()
        for path in (world.marker, world.data_file):
            if path.exists():
                os.unlink(path)  # the marker may belong to postgres or mysql: root removes it


@pytest.fixture
def pg_world() -> Iterator[World]:
    yield from make_world("pg")


@pytest.fixture
def maria_world() -> Iterator[World]:
    yield from make_world("maria")


@pytest.fixture
async def plugin() -> AsyncIterator[SqlPlugin]:
    sql = SqlPlugin()
    try:
        yield sql
    finally:
        await sql.aclose()


async def run(plugin: SqlPlugin, world: World, query: str, *, read_only: bool) -> list[dict[str, Any]]:
    """Run ``query`` as a job; read-only jobs share one pooled connection (pool_size = 1)."""
    return await run_plugin(
        plugin,
        {"connection": f"{world.db}_{'ro' if read_only else 'rw'}", "query": query},
        profile={"connection_string": DATABASES[world.db], "read_only": read_only, "pool_size": 1},
        credential=ROOT_USER,
        timeout_s=scaled(60),
    )


async def outcome(plugin: SqlPlugin, world: World, query: str, *, read_only: bool) -> str:
    """``ok`` or the job's error code."""
    try:
        await run(plugin, world, query, read_only=read_only)
    except JobError as exc:
        return exc.code
    return "ok"


# (trick id, text, code of the read-only job, what the text does on a read-write profile:
#  "writes" = rows, catalog, sequence or a file change; "runs" = the job succeeds)
PG_TRICKS = [
    ("stacked", "SELECT 1 AS one; INSERT INTO {t} VALUES (100, 'x')", "policy_denied", "writes"),
    ("stacked_write_first", "INSERT INTO {t} VALUES (100, 'x'); SELECT 1 AS one", "policy_denied", "writes"),
    ("commit_inside", "COMMIT; INSERT INTO {t} VALUES (101, 'x')", "policy_denied", "writes"),
    (
        "commit_then_read_write",
        "SELECT 1 AS one; COMMIT; SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; DELETE FROM {t}",
        "policy_denied",
        "writes",
    ),
    ("commit_alone", "COMMIT", "policy_denied", "runs"),
    ("set_transaction_read_write", "SET TRANSACTION READ WRITE; UPDATE {t} SET v = 'w'", "policy_denied", "writes"),
    ("set_default_off", "SET default_transaction_read_only = off; DELETE FROM {t}", "policy_denied", "writes"),
    ("set_session_read_write", "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "policy_denied", "runs"),
    ("set_config_default_off", "SELECT set_config('default_transaction_read_only', 'off', false) AS s", "ok", "runs"),
    (
        "set_config_then_write",
        "SELECT set_config('transaction_read_only', 'off', false) AS s, {t}_ins() AS n",
        "sql_error",
        "writes",
    ),
    (
        "set_config_default_then_write",
        "SELECT set_config('default_transaction_read_only', 'off', false) AS s, {t}_ins() AS n",
        "read_only",
        "writes",
    ),
    (
        "cte_insert",
        "WITH x AS (INSERT INTO {t} VALUES (102, 'x') RETURNING *) SELECT * FROM x",
        "policy_denied",
        "writes",
    ),
    ("cte_update", "WITH x AS (UPDATE {t} SET v = 'u' RETURNING *) SELECT * FROM x", "read_only", "writes"),
    ("cte_delete", "WITH x AS (DELETE FROM {t} RETURNING *) SELECT * FROM x", "read_only", "writes"),
    ("function_with_side_effect", "SELECT {t}_ins() AS n", "read_only", "writes"),
    ("nextval", "SELECT nextval('{t}_seq') AS n", "read_only", "writes"),
    ("setval", "SELECT setval('{t}_seq', 500) AS n", "read_only", "writes"),
    ("call", "CALL {t}_proc()", "policy_denied", "writes"),
    ("do_block", "DO $$ BEGIN INSERT INTO {t} VALUES (103, 'x'); END $$", "policy_denied", "writes"),
    ("lock_table", "LOCK TABLE {t}", "policy_denied", "runs"),
    ("copy_to_program", "COPY (SELECT 1) TO PROGRAM 'touch {marker}'", "policy_denied", "writes"),
    (
        "do_copy_to_program",
        "DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {marker}'''; END $$",
        "policy_denied",
        "writes",
    ),
    ("select_into", "SELECT * INTO {t}_copy FROM {t}", "policy_denied", "writes"),
    ("create_table_as", "CREATE TABLE {t}_copy AS SELECT * FROM {t}", "policy_denied", "writes"),
    ("create_temp_table", "CREATE TEMP TABLE {t}_tmp (x int)", "policy_denied", "writes"),
    ("for_update", "SELECT * FROM {t} FOR UPDATE", "read_only", "runs"),
    ("quoted_semicolon", "SELECT ';' AS s ; DELETE FROM {t}", "policy_denied", "writes"),
    ("dollar_quoted_semicolon", "SELECT $$;$$ AS s; DELETE FROM {t}", "policy_denied", "writes"),
    ("tagged_dollar_quote", "SELECT $a$ $$ ; $a$ AS s; DELETE FROM {t}", "policy_denied", "writes"),
    ("block_comment_semicolon", "SELECT 1 AS one /* ; */; DELETE FROM {t}", "policy_denied", "writes"),
    ("nested_comment", "SELECT 1 AS one /* /* */ ; */; DELETE FROM {t}", "policy_denied", "writes"),
    ("line_comment_semicolon", "SELECT 1 AS one -- ;\n; DELETE FROM {t}", "policy_denied", "writes"),
    ("backslash_is_literal", "SELECT 'a\\' AS s; DELETE FROM {t}; -- '", "policy_denied", "writes"),
    ("escape_string", "SELECT E'\\\\' AS s; DELETE FROM {t}; -- '", "policy_denied", "writes"),
    ("leading_semicolon", "; DELETE FROM {t}", "policy_denied", "writes"),
]

MARIA_TRICKS = [
    ("stacked", "SELECT 1 AS one; INSERT INTO {t} VALUES (100, 'x')", "policy_denied", "writes"),
    ("stacked_write_first", "INSERT INTO {t} VALUES (100, 'x'); SELECT 1 AS one", "policy_denied", "writes"),
    # Led by a SELECT: through the plugin, MariaDB runs the rest only after a first result set.
    ("commit_inside", "SELECT 1 AS one; COMMIT; INSERT INTO {t} VALUES (101, 'x')", "policy_denied", "writes"),
    (
        "commit_then_read_write",
        "SELECT 1 AS one; COMMIT; SET SESSION TRANSACTION READ WRITE; DELETE FROM {t}",
        "policy_denied",
        "writes",
    ),
    ("set_session_read_write", "SET SESSION TRANSACTION READ WRITE", "policy_denied", "runs"),
    ("set_tx_read_only", "SELECT 1 AS one; SET tx_read_only = 0; DELETE FROM {t}", "policy_denied", "writes"),
    ("set_statement", "SET STATEMENT tx_read_only = 0 FOR DELETE FROM {t}", "policy_denied", "writes"),
    ("function_with_side_effect", "SELECT {t}_ins() AS n", "read_only", "writes"),
    ("nextval", "SELECT NEXTVAL({t}_seq) AS n", "read_only", "writes"),
    ("call", "CALL {t}_proc()", "policy_denied", "writes"),
    ("do", "DO {t}_ins()", "policy_denied", "writes"),
    ("lock_tables", "LOCK TABLES {t} WRITE", "policy_denied", "runs"),
    ("handler", "HANDLER {t} OPEN", "policy_denied", "runs"),
    ("load_data", "LOAD DATA INFILE '{data}' INTO TABLE {t}", "policy_denied", "writes"),
    ("into_outfile", "SELECT * FROM {t} INTO OUTFILE '{marker}'", "policy_denied", "writes"),
    ("into_outfile_middle", "SELECT * INTO OUTFILE '{marker}' FROM {t}", "policy_denied", "writes"),
    ("into_variable", "SELECT 1 INTO @bh_v", "policy_denied", "runs"),
    ("create_table_as", "CREATE TABLE {t}_copy AS SELECT * FROM {t}", "policy_denied", "writes"),
    ("create_temporary_table", "CREATE TEMPORARY TABLE {t}_tmp (x int)", "policy_denied", "runs"),
    ("for_update", "SELECT * FROM {t} FOR UPDATE", "read_only", "runs"),
    ("executable_comment", "/*! DELETE FROM {t} */", "policy_denied", "writes"),
    ("executable_comment_versioned", "/*!100000 DELETE FROM {t} */", "policy_denied", "writes"),
    ("executable_comment_mariadb", "/*M! DELETE FROM {t} */", "policy_denied", "writes"),
    ("executable_comment_in_select", "SELECT 1 AS one /*!, {t}_ins() */", "policy_denied", "writes"),
    ("quoted_semicolon", "SELECT ';' AS s ; DELETE FROM {t}", "policy_denied", "writes"),
    ("backtick_semicolon", "SELECT 1 AS `;`; DELETE FROM {t}", "policy_denied", "writes"),
    ("block_comment_semicolon", "SELECT 1 AS one /* ; */; DELETE FROM {t}", "policy_denied", "writes"),
    ("hash_comment_semicolon", "SELECT 1 AS one # ;\n; DELETE FROM {t}", "policy_denied", "writes"),
    ("line_comment_semicolon", "SELECT 1 AS one -- ;\n; DELETE FROM {t}", "policy_denied", "writes"),
    ("escaped_quote", "SELECT 'a\\'' AS s; DELETE FROM {t}", "policy_denied", "writes"),
]


async def check_trick(plugin: SqlPlugin, world: World, text: str, expected_code: str, premise: str) -> None:
    query = world.sql(text)
    before = state(world)
    assert expected_code == await outcome(plugin, world, query, read_only=True)
    assert before == state(world)
    # The pooled read-only session is still read-only: the next job cannot write either.
    assert "read_only" == await outcome(plugin, world, world.sql("SELECT {t}_ins() AS n"), read_only=True)
    assert before == state(world)
    # The premise: on a read-write profile the same text does what it says.
    assert "ok" == await outcome(plugin, world, query, read_only=False)
    if premise == "writes":
        assert before != state(world)
    # Now, not at teardown: a read-write session may hold a lock (LOCK TABLES) that DROP would wait on.
    await plugin.aclose()


@pytest.mark.parametrize(("text", "code", "premise"), [t[1:] for t in PG_TRICKS], ids=[t[0] for t in PG_TRICKS])
async def test_postgresql_read_only_profile_changes_nothing(
    plugin: SqlPlugin, pg_world: World, text: str, code: str, premise: str
) -> None:
    """A PostgreSQL trick changes nothing on a read-only profile and is real on a read-write one."""
    await check_trick(plugin, pg_world, text, code, premise)


@pytest.mark.parametrize(("text", "code", "premise"), [t[1:] for t in MARIA_TRICKS], ids=[t[0] for t in MARIA_TRICKS])
async def test_mariadb_read_only_profile_changes_nothing(
    plugin: SqlPlugin, maria_world: World, text: str, code: str, premise: str
) -> None:
    """A MariaDB trick changes nothing on a read-only profile and is real on a read-write one."""
    await check_trick(plugin, maria_world, text, code, premise)


async def test_one_statement_texts_that_hide_nothing_still_run(plugin: SqlPlugin, db: str) -> None:
    """Semicolons inside strings, quoted names and comments, and trailing ones, do not refuse a read."""
    queries = {
        "pg": "SELECT ';' AS a, $$;$$ AS b, $x$ ; $$ $x$ AS c, \"x;\" "
        'FROM (SELECT 1 AS "x;") s /* ; /* ; */ */ -- ;\n;',
        "maria": "SELECT ';' AS a, \"b;\" AS b, `c;` FROM (SELECT 1 AS `c;`) s /* ; */ # ;\n -- ;\n;",
    }
    world = World(db, "unused", Path("/nonexistent"), Path("/nonexistent"))
    records = await run(plugin, world, queries[db], read_only=True)
    expected = {
        "pg": [{"a": ";", "b": ";", "c": " ; $$ ", "x;": 1}],
        "maria": [{"a": ";", "b": "b;", "c;": 1}],
    }
    assert expected[db] == records


async def test_explain_analyze_of_a_write_changes_nothing(plugin: SqlPlugin, pg_world: World) -> None:
    """EXPLAIN ANALYZE runs the statement it explains: on a read-only profile the database refuses its write."""
    before = state(pg_world)
    query = pg_world.sql("EXPLAIN ANALYZE UPDATE {t} SET v = 'e'")
    assert "read_only" == await outcome(plugin, pg_world, query, read_only=True)
    assert before == state(pg_world)


async def test_a_read_only_job_is_rolled_back_not_committed(plugin: SqlPlugin, pg_world: World) -> None:
    """A set_config of the session's default in a read-only job is gone at the next job, on the same backend."""
    first = await run(plugin, pg_world, "SELECT pg_backend_pid() AS pid", read_only=True)
    query = "SELECT set_config('default_transaction_read_only', 'off', false) AS s, pg_backend_pid() AS pid"
    second = await run(plugin, pg_world, query, read_only=True)
    query = "SELECT current_setting('default_transaction_read_only') AS d, pg_backend_pid() AS pid"
    third = await run(plugin, pg_world, query, read_only=True)
    pid = first[0]["pid"]
    # Same backend: had the change been committed, the pool would have closed the connection.
    assert [{"s": "off", "pid": pid}, {"d": "on", "pid": pid}] == second + third


# Texts whose statements are all SELECTs: how many result sets the server sends back through
# the driver is how many statements it read, to compare with the lexer's count.
AGREEMENT_TEXTS = {
    "pg": [
        "SELECT E'\\'; SELECT 2 AS b; --' AS a",
        "SELECT e'\\\\'''; SELECT 2 AS b; --' AS a",
        'SELECT 1 AS "a"";SELECT 2 AS b; --"',
        "SELECT 'it''s; SELECT 2 AS b; --' AS a",
        "SELECT 'a\\' AS a; SELECT 2 AS b; -- '",
        "SELECT U&'\\0041; SELECT 2 AS b; --' AS a",
        "SELECT 1 AS a -- x ; SELECT 2 AS b\n",
        "SELECT 1 AS a -- x\r; SELECT 2 AS b",
        "SELECT $a$ $$ ; SELECT 2 AS b; $a$ AS a",
        "SELECT $$;$$ AS a; SELECT 2 AS b",
        "SELECT 1 AS a /* /* */ ; SELECT 2 AS b; */",
        "SELECT 1 AS a /* /* */ ; */; SELECT 2 AS b",
        "SELECT 1 AS foo$$; SELECT 2 AS b; SELECT 3 AS c -- $$",
    ],
    "maria": [
        "SELECT 'a\\'; SELECT 2 AS b; #' AS a",
        "SELECT 'a\\\\' AS a; SELECT 2 AS b",
        'SELECT "a\\"; SELECT 2 AS b; #" AS a',
        "SELECT 'a''; SELECT 2 AS b; #' AS a",
        "SELECT 1 AS `a;b`",
        "SELECT 1 AS `a``;b`; SELECT 2 AS b",
        "SELECT 1 AS a #x\r; SELECT 2 AS b",
        "SELECT 1 AS a # x\n; SELECT 2 AS b",
        "SELECT 1 AS a -- x\r; SELECT 2 AS b",
        "SELECT 1 AS a --\x01; SELECT 2 AS b",
        "SELECT 1 AS a /* ; SELECT 2 AS b */",
        "SELECT 1 AS a /* /* */ ; SELECT 2 AS b",
        "SELECT 1 AS $$; SELECT 2 AS b",
    ],
}
SERVER_READING = {
    "pg": Lexing("postgresql", backslash_escapes=False),  # standard_conforming_strings = on
    "maria": Lexing("mariadb", backslash_escapes=True, double_quote_escapes=True),  # the default sql_mode
}


def result_sets(db: str, text: str) -> int:
    conn = pyodbc.connect(DATABASES[db] + ";UID=root", autocommit=False, timeout=10)
    try:
        cursor = conn.cursor().execute(text)
        count = 1
        while cursor.nextset():
            count += 1
        return count
    finally:
        conn.rollback()
        conn.close()


@pytest.mark.parametrize(("db", "text"), [(db, text) for db, texts in AGREEMENT_TEXTS.items() for text in texts])
def test_the_lexer_counts_statements_as_the_server_does(db: str, text: str) -> None:
    """Through the real driver, the server runs as many statements as the lexer finds."""
    assert result_sets(db, text) == statement_count(text, SERVER_READING[db])
