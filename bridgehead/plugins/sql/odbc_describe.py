"""The database's type name of each result column (``SQLColAttribute(SQL_DESC_TYPE_NAME)``).

pyodbc's ``cursor.description`` gives Python types only, and PostgreSQL's ``timestamp`` and
``timestamptz`` (MariaDB's ``datetime`` and ``timestamp``) both arrive as ``datetime``: without
the type name a record could not say which values are instants. pyodbc does not expose the
statement handle, so this reads it from the cursor object, as ``ctypes`` allows, and asks the
ODBC driver manager directly.

That relies on pyodbc's ``Cursor`` layout (``PyObject_HEAD; Connection* cnxn; HSTMT hstmt``,
unchanged since pyodbc 2). The layout is checked on every call: the word before the handle
must be the address of ``cursor.connection``. If it is not (a pyodbc that changed it, or not
CPython), this returns ``None`` and records lose the offset, never the data; a wrong handle is
never passed to the driver manager, which does not validate handles and would crash.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
import sys
from typing import Any

log = logging.getLogger("bridgehead.plugins.sql")

_SQL_DESC_TYPE_NAME = 14
_SQL_SUCCESS_WITH_INFO = 1
_POINTER = ctypes.sizeof(ctypes.c_void_p)
_CNXN_OFFSET = 2 * _POINTER  # after ob_refcnt and ob_type
_HSTMT_OFFSET = 3 * _POINTER
_BUFFER_CHARS = 128

_col_attribute: Any = None
_warned = False


def _load() -> Any:
    global _col_attribute
    if _col_attribute is None:
        name = "odbc32" if sys.platform == "win32" else (ctypes.util.find_library("odbc") or "libodbc.so.2")
        # pyodbc has loaded this library already; loading it again returns the same instance,
        # so the statement handle below is valid in it.
        library = ctypes.WinDLL(name) if sys.platform == "win32" else ctypes.CDLL(name)  # type: ignore[attr-defined]
        fn = library.SQLColAttributeW
        fn.argtypes = [
            ctypes.c_void_p,
            ctypes.c_ushort,
            ctypes.c_ushort,
            ctypes.c_void_p,
            ctypes.c_short,
            ctypes.POINTER(ctypes.c_short),
            ctypes.c_void_p,
        ]
        fn.restype = ctypes.c_short
        _col_attribute = fn
    return _col_attribute


def _statement_handle(cursor: Any) -> int | None:
    if platform.python_implementation() != "CPython":
        return None
    address = id(cursor)
    if ctypes.c_void_p.from_address(address + _CNXN_OFFSET).value != id(cursor.connection):
        return None
    return ctypes.c_void_p.from_address(address + _HSTMT_OFFSET).value


def column_type_names(cursor: Any) -> list[str] | None:
    """The type name of each column of ``cursor``'s current result set, or ``None``."""
    global _warned
    description = cursor.description
    if description is None:
        return None
    try:
        handle = _statement_handle(cursor)
        fn = _load() if handle else None
    except (OSError, AttributeError):
        handle, fn = None, None
    if not handle or fn is None:
        if not _warned:
            _warned = True
            log.warning("cannot read column type names through ODBC; timestamps with time zone lose their offset")
        return None
    names = []
    encoding = "utf-32-le" if ctypes.sizeof(ctypes.c_wchar) == 4 and sys.platform != "linux" else "utf-16-le"
    for column in range(1, len(description) + 1):
        buffer = ctypes.create_string_buffer(_BUFFER_CHARS * 4)
        length = ctypes.c_short(0)
        rc = fn(handle, column, _SQL_DESC_TYPE_NAME, buffer, len(buffer), ctypes.byref(length), None)
        if rc not in (0, _SQL_SUCCESS_WITH_INFO):
            names.append("")
            continue
        names.append(buffer.raw[: max(0, min(length.value, len(buffer)))].decode(encoding, "replace"))
    return names
