"""The read-only check's lexers (bridgehead/plugins/sql/statements.py): where statements end, as each
server reads them."""

from __future__ import annotations

import time

import pytest

from bridgehead.core.errors import PolicyDenied
from bridgehead.plugins.sql.statements import Lexing, check_read_only, statement_count

PG = Lexing("postgresql", backslash_escapes=False)
PG_ESCAPES = Lexing("postgresql", backslash_escapes=True)
MARIA = Lexing("mariadb", backslash_escapes=True, double_quote_escapes=True)
MARIA_NO_ESCAPES = Lexing("mariadb", backslash_escapes=False)
SQLITE = Lexing("standard", backslash_escapes=False)


@pytest.mark.parametrize(
    ("lexing", "text", "count"),
    [
        (PG, "SELECT 1", 1),
        (PG, "SELECT 1;", 1),
        (PG, "SELECT 1;;  -- done", 1),
        (PG, "SELECT 1; DELETE FROM t", 2),
        (PG, "SELECT ';' ; DELETE FROM t", 2),
        (PG, "SELECT 'it''s;'", 1),
        (PG, "SELECT $$;$$", 1),
        (PG, "SELECT $$;$$; DELETE FROM t", 2),
        (PG, "SELECT $a$ $$ ; $a$", 1),
        (PG, "SELECT $a$ ; $A$ ; $a$", 1),  # tags are case-sensitive: $A$ does not close $a$
        (PG, "SELECT foo$$; DELETE FROM t; $$", 3),  # $ continues an identifier: no quote
        (PG, "SELECT \u00a0$$; DELETE FROM t; $$", 3),  # U+00A0 is an identifier character, not space
        (PG, "SELECT $1$$; DELETE FROM t; $$", 1),  # a parameter, then a dollar quote
        (PG, "SELECT 1 /* ; */", 1),
        (PG, "SELECT 1 /* /* */ ; DELETE FROM t; */", 1),  # comments nest
        (PG, "SELECT 1 /* /* */ ; */; DELETE FROM t", 2),
        (PG, "SELECT 1 -- ;\n", 1),
        (PG, "SELECT 1 -- x\r; DELETE FROM t", 2),  # a carriage return ends the comment
        (PG, "SELECT 1--x\n; DELETE FROM t", 2),
        (PG, "SELECT 1 +/* ; */ 2", 1),
        (PG, "SELECT 'a\\'; DELETE FROM t; --'", 2),  # standard_conforming_strings: \\ is plain
        (PG_ESCAPES, "SELECT 'a\\'; DELETE FROM t; --'", 1),
        (PG, "SELECT E'a\\'; DELETE FROM t; --'", 1),
        (PG, "SELECT e'a\\\\'; DELETE FROM t; --'", 2),
        (PG, "SELECT xE'a\\'; DELETE FROM t; --'", 2),  # E only starts a string as a token of its own
        (PG, 'SELECT "a;b"', 1),
        (PG, 'SELECT "a"";b"', 1),
        (PG, "SELECT 'unterminated ; DELETE FROM t", 1),
        (MARIA, "SELECT `a;b`", 1),
        (MARIA, "SELECT `a``;b`", 1),
        (MARIA, "SELECT 'a\\'; DELETE FROM t; #'", 1),
        (MARIA_NO_ESCAPES, "SELECT 'a\\'; DELETE FROM t; #'", 2),
        (MARIA, 'SELECT "a\\"; DELETE FROM t; #"', 1),
        (MARIA, "SELECT 1 # ;\n", 1),
        (MARIA, "SELECT 1 # x\r; DELETE FROM t", 1),  # only a line feed ends a # comment
        (MARIA, "SELECT 1 -- ;\n", 1),
        (MARIA, "SELECT 1 --\t;", 1),
        (MARIA, "SELECT 1--1; DELETE FROM t", 2),  # -- needs a space after it
        (MARIA, "SELECT 1 /* /* */ ; DELETE FROM t; */", 3),  # comments do not nest
        (MARIA, "SELECT $$;$$", 2),  # no dollar quotes
        (SQLITE, "SELECT [a'] ; DELETE FROM t; --']", 2),
        (SQLITE, 'SELECT `a;b`, [c;d], "e;f"', 1),
    ],
)
def test_statement_count(lexing: Lexing, text: str, count: int) -> None:
    """Each text holds the number of statements the server would see."""
    assert count == statement_count(text, lexing)


@pytest.mark.parametrize(
    ("syntax", "text"),
    [
        ("postgresql", "SELECT ';' AS a, $$;$$ AS b, \"c;\" /* ; /* ; */ */ -- ;\n;"),
        ("postgresql", "(SELECT 1) UNION (SELECT 2)"),
        ("postgresql", "with x as (select 1) select * from x"),
        ("postgresql", "VALUES (1)"),
        ("postgresql", "TABLE t"),
        ("postgresql", "SHOW search_path"),
        ("postgresql", "EXPLAIN SELECT 1"),
        ("postgresql", "SELECT 'into'"),
        ("mariadb", "SELECT ';', `;`, \"b;\" # ;\n -- ;\n;"),
        ("mariadb", "DESCRIBE t"),
        ("mariadb", "SELECT 1 /*+ hint */"),
        ("standard", "SELECT 1 FROM dual"),
    ],
)
def test_one_reading_statement_passes(syntax: str, text: str) -> None:
    """A single statement that starts with a reading word is let through."""
    assert None is check_read_only(text, syntax)


@pytest.mark.parametrize(
    ("syntax", "text", "reason"),
    [
        ("postgresql", "SELECT 1; DELETE FROM t", "the query holds more than one statement"),
        ("postgresql", "; SELECT 1", "the query starts with ';'"),
        ("postgresql", "-- nothing\n", "the query holds no statement"),
        ("postgresql", "SELECT 'a\\'; DELETE FROM t; --'", "the query holds more than one statement"),
        ("postgresql", "COMMIT", "a read-only job runs a statement that starts with one of"),
        ("postgresql", "set default_transaction_read_only = off", "a read-only job runs a statement"),
        ("postgresql", "DO $$ BEGIN NULL; END $$", "a read-only job runs a statement"),
        ("postgresql", "COPY (SELECT 1) TO PROGRAM 'id'", "a read-only job runs a statement"),
        ("postgresql", "/* SELECT */ CALL p()", "a read-only job runs a statement"),
        ("postgresql", "SELECT * INTO t2 FROM t", "SELECT ... INTO"),
        ("postgresql", "WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x", "SELECT ... INTO"),
        ("mariadb", "SELECT * FROM t INTO OUTFILE '/tmp/x'", "SELECT ... INTO"),
        ("mariadb", "/*! DELETE FROM t */", "the query holds a MariaDB executable comment"),
        ("mariadb", "SELECT 1 /*!50000 , f() */", "the query holds a MariaDB executable comment"),
        ("mariadb", "SELECT 1 /*M!100000 , f() */", "the query holds a MariaDB executable comment"),
        ("mariadb", "HANDLER t OPEN", "a read-only job runs a statement"),
        ("mariadb", "SELECT 'a\\'' AS s; DELETE FROM t", "the query holds more than one statement"),
    ],
)
def test_refused(syntax: str, text: str, reason: str) -> None:
    """Several statements, a statement that does not read, INTO or executable comments are refused."""
    with pytest.raises(PolicyDenied) as info:
        check_read_only(text, syntax)
    assert info.value.message.startswith(f"read_only = true: {reason}"), info.value.message


def test_a_text_that_is_one_statement_under_only_one_reading_is_refused() -> None:
    """MariaDB reads 'a\\' as an unterminated string, or under NO_BACKSLASH_ESCAPES as a string and then more SQL."""
    with pytest.raises(PolicyDenied) as info:
        check_read_only("SELECT 'a\\'; DELETE FROM t; #'", "mariadb")
    assert "when backslashes in quoted strings are read in one of the ways server settings allow" in info.value.message


def test_mariadb_quotes_are_read_with_and_without_escapes_each_on_its_own() -> None:
    """One statement when both quotes take escapes or neither does, two under ANSI_QUOTES alone: refused."""
    text = r'SELECT "\" ' + r"'\'' ; DELETE FROM t; -- " + '"'  # noqa: S608 - a constant
    readings = ((True, True), (False, False), (True, False))
    counts = [statement_count(text, Lexing("mariadb", single, double)) for single, double in readings]
    assert [1, 1, 2] == counts
    with pytest.raises(PolicyDenied):
        check_read_only(text, "mariadb")


def test_a_megabyte_query_is_lexed_in_well_under_a_second() -> None:
    """Lexing is linear: the largest query a job may send takes a fraction of a second."""
    text = "SELECT " + ", ".join(f"'v{n}' AS c{n}, \"q{n}\" /* c */" for n in range(40_000))
    assert len(text) > 1_000_000
    started = time.perf_counter()
    check_read_only(text, "postgresql")
    assert time.perf_counter() - started < 5.0
