"""Rows to JSON records, and driver errors to job errors: the sql plugin's pure parts."""

from __future__ import annotations

import datetime
import decimal
import math
import uuid

import msgspec
import pytest

from bridgehead.plugins.sql.failures import job_error, sqlstate_and_text
from bridgehead.plugins.sql.rows import Column, RowEncoder, unique_names


def decode(records: list[bytes]) -> list[dict[str, object]]:
    return [msgspec.json.decode(r) for r in records]


def test_each_python_type_has_its_documented_json_form() -> None:
    columns = [
        Column("n", int, "int8"),
        Column("d", decimal.Decimal, "numeric"),
        Column("ts", datetime.datetime, "timestamp"),
        Column("tz", datetime.datetime, "timestamptz", utc=True),
        Column("day", datetime.date, "date"),
        Column("t", datetime.time, "time"),
        Column("b", bytearray, "bytea"),
        Column("u", uuid.UUID, "uuid"),
        Column("f", bool, "bool"),
        Column("s", str, "text"),
    ]
    row = (
        2**64 - 1,
        decimal.Decimal("12345678901234567890.0123456789"),
        datetime.datetime(2024, 2, 29, 12, 0, 1, 500000),
        datetime.datetime(2024, 2, 29, 10, 0, 1),
        datetime.date(2024, 2, 29),
        datetime.time(12, 0, 1, 250000),
        bytearray(b"\x00\xff"),
        uuid.UUID("A1A2A3A4-0000-0000-0000-00000000000F"),
        True,
        'é\n"',
    )
    [record] = decode(RowEncoder(columns).encode([row]))
    assert record == {
        "n": 18446744073709551615,
        "d": "12345678901234567890.0123456789",
        "ts": "2024-02-29T12:00:01.500000",
        "tz": "2024-02-29T10:00:01Z",
        "day": "2024-02-29",
        "t": "12:00:01.250000",
        "b": "AP8=",
        "u": "a1a2a3a4-0000-0000-0000-00000000000f",
        "f": True,
        "s": 'é\n"',
    }


def test_the_array_form_has_the_same_records() -> None:
    """encode_array (what the plugin streams) gives exactly the records encode does."""
    columns = [
        Column("n", int, "int8"),
        Column("d", decimal.Decimal, "numeric"),
        Column("tz", datetime.datetime, "timestamptz", utc=True),
        Column("x", float, "float8"),
        Column("s", str, "text"),
    ]
    rows = [
        (1, decimal.Decimal("12.50"), datetime.datetime(2024, 2, 29, 10, 0, 1), 0.5, "a"),
        (2, None, None, math.nan, None),
        (3, decimal.Decimal("-0.00"), datetime.datetime(2024, 3, 1), -math.inf, 'é\n"'),
    ]
    encoder = RowEncoder(columns)
    array = encoder.encode_array(rows)
    assert encoder.encode(rows) == array.records()
    assert 3 == array.count


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (decimal.Decimal("0.0000001000"), "0.0000001000"),  # str() gives "1.000E-7"
        (decimal.Decimal("1E+2"), "100"),
        (decimal.Decimal("0E-7"), "0.0000000"),
    ],
)
def test_decimals_never_take_exponent_form_in_the_array(value: decimal.Decimal, expected: str) -> None:
    """Where str() would write an exponent, the array is encoded again with plain digits."""
    encoder = RowEncoder([Column("d", decimal.Decimal, "numeric"), Column("s", str, "text")])
    rows = [(decimal.Decimal("12.50"), "x"), (value, "y")]
    assert decode(encoder.encode_array(rows).records()) == [{"d": "12.50", "s": "x"}, {"d": expected, "s": "y"}]


def test_text_that_looks_like_an_exponent_is_kept_as_it_is() -> None:
    """A text value with "E-" in it (which makes the encoder check its decimals again) is unchanged."""
    encoder = RowEncoder([Column("d", decimal.Decimal, "numeric"), Column("s", str, "text")])
    rows = [(decimal.Decimal("1.5"), "1E-5 and E+"), (None, "E-")]
    expected = [{"d": "1.5", "s": "1E-5 and E+"}, {"d": None, "s": "E-"}]
    assert decode(encoder.encode_array(rows).records()) == expected


def test_nulls_stay_null_in_columns_that_are_fixed() -> None:
    columns = [Column("tz", datetime.datetime, "timestamptz", utc=True), Column("x", float, "float8")]
    rows = [(None, None), (datetime.datetime(2024, 1, 1), 1.5)]
    assert decode(RowEncoder(columns).encode(rows)) == [
        {"tz": None, "x": None},
        {"tz": "2024-01-01T00:00:00Z", "x": 1.5},
    ]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([math.nan, 1.0, None], ["NaN", 1.0, None]),
        ([math.inf, -math.inf, 0.0], ["Infinity", "-Infinity", 0.0]),
        ([1e308, 1e308], [1e308, 1e308]),  # their sum overflows: still finite values
        ([0.5, -0.25], [0.5, -0.25]),
    ],
)
def test_non_finite_floats_become_strings(values: list[float | None], expected: list[object]) -> None:
    encoder = RowEncoder([Column("x", float, "float8")])
    assert [r["x"] for r in decode(encoder.encode([(v,) for v in values]))] == expected


def test_duplicate_and_odd_column_names() -> None:
    assert unique_names(["x", "x", "x_2", "", ""]) == ["x", "x_2", "x_2_2", "", "_2"]
    encoder = RowEncoder([Column("?column?", int, ""), Column("?column?", int, ""), Column("a b", int, "")])
    assert decode(encoder.encode([(1, 2, 3)])) == [{"?column?": 1, "?column?_2": 2, "a b": 3}]


def test_no_rows_give_no_records() -> None:
    assert RowEncoder([Column("x", float, "float8")]).encode([]) == []
    assert RowEncoder([Column("x", float, "float8")]).encode_array([]).records() == []


class FakeOdbcError(Exception):
    """Shaped as pyodbc raises them: args = (SQLSTATE, message). (A driver is not needed to
    test the text clean-up; the integration tests check the same against real servers.)"""


@pytest.mark.parametrize(
    ("state", "text", "code", "message"),
    [
        (
            "42S02",
            "[42S02] [ma-3.1.15]Table 'test.nope' doesn't exist (1146) (SQLExecDirectW)",
            "sql_error",
            "running: SQLSTATE 42S02: Table 'test.nope' doesn't exist",
        ),
        (
            "42P01",
            '[42P01] ERROR: relation "nope" does not exist;\nError while executing the query (1) (SQLExecDirectW)',
            "sql_error",
            'running: SQLSTATE 42P01: ERROR: relation "nope" does not exist',
        ),
        ("08001", "[08001] could not connect to server: Connection refused", "source_unavailable", None),
        ("28000", "[28000] [ma-3.1.15]Access denied for user 'x'@'localhost'", "auth_failed", None),
        ("25006", "[25006] ERROR: cannot execute INSERT in a read-only transaction", "read_only", None),
        ("IM002", "[IM002] [unixODBC][Driver Manager]Data source name not found", "odbc_driver_missing", None),
    ],
)
def test_driver_errors_keep_sqlstate_and_lose_the_noise(state: str, text: str, code: str, message: str | None) -> None:
    error = job_error(FakeOdbcError(state, text), doing="running")
    assert error.code == code
    assert f"SQLSTATE {state}" in error.message
    assert "SQLExecDirectW" not in error.message and "[ma-3.1.15]" not in error.message
    if message is not None:
        assert error.message == message
    assert error.retryable is (code == "source_unavailable")


def test_unsupported_column_type_names_the_column() -> None:
    exc = FakeOdbcError("HY106", "ODBC SQL type -151 is not yet supported.  column-index=1  type=-151")
    error = job_error(exc, doing="fetching rows", columns=["id", "shape"])
    assert error.code == "unsupported_type"
    assert "'shape'" in error.message and "-151" in error.message


def test_message_without_sqlstate() -> None:
    assert sqlstate_and_text(FakeOdbcError("driver said no")) == ("", "driver said no")
