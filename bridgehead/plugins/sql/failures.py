"""pyodbc errors turned into job errors that carry the SQLSTATE and the driver's own words.

Codes (``error.code`` of the failed job):

    source_unavailable  08xxx, 57P0x: cannot connect, or the connection dropped (retryable)
    auth_failed         28xxx: wrong user name or password
    read_only           25006: a write on a read-only session
    query_timeout       HYT00, 57014 after our timeout: the statement ran past query_timeout_s
    unsupported_type    a column of an ODBC type pyodbc cannot read
    odbc_driver_missing IM002 / 01000 file not found: the driver named is not installed
    sql_error           anything else the database refused (syntax, missing table, ...)

Driver messages are wrapped in vendor tags and call names (``[unixODBC][ma-3.1.15]...
(1146) (SQLExecDirectW)``); those are trimmed so that the message says what went wrong.
"""

from __future__ import annotations

import re
from typing import Any

from bridgehead.sdk import JobError, SourceError, SourceUnavailable

_TAGS = re.compile(r"^(\s*\[[^\]]*\])+\s*")
_CALL = re.compile(r"\s*\((SQL\w+)\)\s*$")
_NATIVE = re.compile(r"\s*\(-?\d+\)\s*$")
_NOISE = re.compile(r";?\s*Error while (executing the query|preparing parameters)(\s*\(\d+\))?", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_MAX_MESSAGE = 2000
_UNSUPPORTED_TYPE = re.compile(r"ODBC SQL type (-?\d+) is not yet supported.*column-index=(\d+)", re.DOTALL)


def sqlstate_and_text(exc: BaseException) -> tuple[str, str]:
    """The SQLSTATE (or "") and the driver's message, cleaned, of a pyodbc error."""
    args: tuple[Any, ...] = getattr(exc, "args", ())
    state, text = "", str(exc)
    if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        state, text = args[0], args[1]
    elif len(args) == 1 and isinstance(args[0], str):
        text = args[0]
    # Several diagnostic records are joined by pyodbc with "; "; each gets the same cleaning.
    parts = []
    for part in re.split(r";\s*(?=\[)", text):
        part = _TAGS.sub("", part)
        part = _CALL.sub("", part)
        while _NATIVE.search(part):  # some drivers append the native code twice: "(8) (8)"
            part = _NATIVE.sub("", part)
        part = _NOISE.sub("", part)
        part = _SPACE.sub(" ", part).strip(" ;")
        if part and part not in parts:
            parts.append(part)
    cleaned = "; ".join(parts) or type(exc).__name__
    if len(state) != 5:
        state = ""
    return state, cleaned[:_MAX_MESSAGE]


def job_error(exc: BaseException, *, doing: str, columns: list[str] | None = None) -> JobError:
    """A ``JobError`` for a pyodbc error raised while ``doing`` (e.g. "running the query")."""
    state, text = sqlstate_and_text(exc)
    where = f"SQLSTATE {state}: " if state else ""
    message = f"{doing}: {where}{text}"
    unsupported = _UNSUPPORTED_TYPE.search(text)
    if unsupported is not None:
        odbc_type, index = int(unsupported.group(1)), int(unsupported.group(2))
        name = columns[index] if columns is not None and 0 <= index < len(columns) else f"#{index + 1}"
        return SourceError(
            f"{doing}: column {name!r} has ODBC SQL type {odbc_type}, which pyodbc cannot read; "
            "cast it to text in the query (CAST(col AS VARCHAR(...)))",
            code="unsupported_type",
        )
    cls = state[:2]
    if state == "IM002" or "file not found" in text.lower() or "can't open lib" in text.lower():
        hint = " (is the ODBC driver installed and named in odbcinst.ini?)"
        return SourceError(message + hint, code="odbc_driver_missing")
    if cls == "28" or "password authentication failed" in text or "access denied for user" in text.lower():
        return SourceError(message, code="auth_failed")
    lowered = text.lower()
    if "role" in lowered and "does not exist" in lowered:
        return SourceError(message, code="auth_failed")
    if "database" in lowered and "does not exist" in lowered:
        return SourceError(message, code="sql_error")
    if cls == "08" or state in ("57P01", "57P02", "57P03", "HYT01") or "can't connect to" in lowered:
        return SourceUnavailable(message)
    if state == "25006" or "readonly database" in text:  # SQLite's query_only says HY000
        return SourceError(message, code="read_only")
    if state == "HYT00":
        return SourceError(message, code="query_timeout")
    return SourceError(message, code="sql_error")


def connection_lost(exc: BaseException) -> bool:
    """Whether the connection that raised ``exc`` must not be used again."""
    state, _text = sqlstate_and_text(exc)
    return state[:2] in ("08", "57", "HY") or state == ""
