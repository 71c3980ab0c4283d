"""Unit tests of bridgehead.plugins.sql.odbc_string: ODBC connection string quoting, building and parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridgehead.plugins.sql import odbc_string


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("abc", "abc"),
        ("", ""),
        ("a b", "a b"),  # inner spaces are fine
        (r"host\instance,1433", r"host\instance,1433"),
        ("//db:1521/svc.example", "//db:1521/svc.example"),
        ("a;b", "{a;b}"),
        ("a=b", "{a=b}"),
        ("{x", "{{x}"),
        ("x}", "{x}}}"),
        ("a}b{c", "{a}}b{c}"),
        ("}}", "{}}}}}"),
        (" lead", "{ lead}"),
        ("trail ", "{trail }"),
        ("\tx", "{\tx}"),
        ("x\n", "{x\n}"),
    ],
)
def test_quote(value: str, quoted: str) -> None:
    assert odbc_string.quote(value) == quoted


def test_quote_refuses_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        odbc_string.quote("a\x00b")


@pytest.mark.parametrize(
    ("pairs", "text"),
    [
        ([], ""),
        ([("Server", "h"), ("Port", "5432")], "Server=h;Port=5432"),
        ([("DSN", "cmdb")], "DSN=cmdb"),
        ([("Driver", "PostgreSQL Unicode"), ("Server", "h")], "Driver={PostgreSQL Unicode};Server=h"),
        ([("DRIVER", "x}y")], "DRIVER={x}}y}"),  # Driver is always braced, whatever its case
        ([("Database", "a;b"), ("pqopt", "sslrootcert=/ca.pem")], "Database={a;b};pqopt={sslrootcert=/ca.pem}"),
        ([("Trusted_Connection", "yes"), ("App Name", " x ")], "Trusted_Connection=yes;App Name={ x }"),
        ([("A", ""), ("A", "2")], "A=;A=2"),
    ],
)
def test_build(pairs: list[tuple[str, str]], text: str) -> None:
    assert odbc_string.build(pairs) == text


@pytest.mark.parametrize("key", ["", " A", "A ", "A;B", "A=B", "{A}", "A}", "K\u00e9", "A-B", "A.B", "A\tB"])
def test_build_refuses_bad_keys(key: str) -> None:
    with pytest.raises(ValueError, match="must be letters, digits, underscores and inner spaces"):
        odbc_string.build([(key, "v")])


@pytest.mark.parametrize("pairs", [[("Server", "a\x00")], [("Driver", "a\x00")]])
def test_build_refuses_nul_values(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError, match="NUL"):
        odbc_string.build(pairs)


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        ("", []),
        (";", []),
        ("A=1", [("A", "1")]),
        ("A=1;", [("A", "1")]),
        (";;A=1;; ;B=2;", [("A", "1"), ("B", "2")]),
        (" A = 1 ; b=2", [("A", "1"), ("b", "2")]),
        ("App Name=x", [("App Name", "x")]),
        ("A=b=c", [("A", "b=c")]),
        ("A=x{y", [("A", "x{y")]),
        ("A=", [("A", "")]),
        ("A=  ;B=x", [("A", ""), ("B", "x")]),
        ("A={}", [("A", "")]),
        ("A={x;y};B=2", [("A", "x;y"), ("B", "2")]),
        ("A={a}}b}", [("A", "a}b")]),
        ("A={}}}", [("A", "}")]),
        ("A={ x };B=2", [("A", " x "), ("B", "2")]),
        ("A= {x} ;B=2", [("A", "x"), ("B", "2")]),
        ("A={x=y};", [("A", "x=y")]),
        (
            "Driver={ODBC Driver 18 for SQL Server};Server=tcp:h,1433;Encrypt=yes",
            [("Driver", "ODBC Driver 18 for SQL Server"), ("Server", "tcp:h,1433"), ("Encrypt", "yes")],
        ),
        ("a=1;A=2", [("a", "1"), ("A", "2")]),
    ],
)
def test_parse(text: str, pairs: list[tuple[str, str]]) -> None:
    assert odbc_string.parse(text) == pairs


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("PWD={s3cr3t", ["'PWD'", "character 5", "never closed"]),
        ("A=1;PWD={s3cr3t;B=2", ["'PWD'", "character 9", "never closed"]),
        ("A=1;s3cr3t;B=2", ["part 2", "character 5", "no '='"]),
        ("s3cr3t", ["part 1", "character 1", "no '='"]),
        ("A=1;=s3cr3t", ["part 2", "no key before '='"]),
        ("PWD={s3c}r3t;B=2", ["'PWD'", "followed by more text", "character 10"]),
    ],
)
def test_parse_errors_name_the_place_not_the_value(text: str, fragments: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        odbc_string.parse(text)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message
    # Values may be passwords: no piece of one may reach a message (and so the logs).
    assert "s3c" not in message
    assert "r3t" not in message


def test_get_is_case_insensitive_and_takes_the_last() -> None:
    pairs = [("Server", "a"), ("DATABASE", "one"), ("database", "two"), ("App Name", "x")]
    assert odbc_string.get(pairs, "database") == "two"
    assert odbc_string.get(pairs, "SERVER") == "a"
    assert odbc_string.get(pairs, "app name") == "x"
    assert odbc_string.get(pairs, "Port") is None
    assert odbc_string.get([], "Port") is None


_KEYS = st.from_regex(r"\A[A-Za-z0-9_]([A-Za-z0-9_ ]*[A-Za-z0-9_])?\Z")
_VALUES = st.text(alphabet=st.characters(blacklist_characters="\x00"))


@given(st.lists(st.tuples(_KEYS, _VALUES), max_size=8))
def test_parse_reads_back_what_build_writes(pairs: list[tuple[str, str]]) -> None:
    assert odbc_string.parse(odbc_string.build(pairs)) == pairs


@given(_VALUES)
def test_a_quoted_value_reads_back_unchanged(value: str) -> None:
    assert odbc_string.parse("K=" + odbc_string.quote(value) + ";L=1") == [("K", value), ("L", "1")]
