"""What differs between databases behind ODBC: streaming options, session setup, read-only.

``read_only = true`` is enforced by the database session and transaction, and the text of a
read-only job must first be one statement that only reads (statements.py). A read-only job is
never committed: its transaction is rolled back when it ends, whatever happened.

    PostgreSQL       SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY, and SET TRANSACTION
                     READ ONLY at the start of each job (a job's own SET is undone by the rollback)
    MariaDB/MySQL    SET SESSION TRANSACTION READ ONLY, and START TRANSACTION READ ONLY at the
                     start of each job (session variables are not transactional in MariaDB)
    SQLite           PRAGMA query_only = ON
    Oracle           SET TRANSACTION READ ONLY at the start of each job
    others           not enforceable: a read-only profile is refused with a clear error

Before a pooled connection is reused its read-only state is read back from the server; a
connection whose job managed to change it is closed, not reused.

Streaming: psqlODBC reads a whole result set into memory unless ``UseDeclareFetch`` makes it
use a server-side cursor; MariaDB Connector/ODBC does the same unless ``NO_CACHE`` is set.
Both are set here, so memory stays bounded whatever the size of the result.

One PostgreSQL statement cannot run in a server-side cursor: a ``WITH`` holding ``INSERT``,
``UPDATE`` or ``DELETE`` (``DECLARE CURSOR`` refuses it, SQLSTATE 0A000). psqlODBC picks the
cursor by the statement's first word, so such a statement is run again behind a leading
comment, which psqlODBC does not read past: it then runs as written and its result (the
rows it returned, rarely many) is buffered by the driver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Dialect:
    name: str
    # Connection-string keys that make the driver stream rather than buffer a result set.
    stream_options: Callable[[int], list[tuple[str, str]]] = lambda _fetch_size: []
    # Run once on a new connection, in autocommit mode so that they outlive a rollback.
    session_setup: tuple[str, ...] = ()
    read_only_setup: tuple[str, ...] = ()
    # Run at the start of each job's transaction on a read-only profile.
    read_only_begin: tuple[str, ...] = ()
    # One value back: truthy when the session is read-only. Doubles as the health check.
    read_only_check: str | None = None
    health_check: str = "SELECT 1"
    read_only_enforced: bool = False
    # How the server lexes a text, for the one-statement check of a read-only job (statements.py).
    syntax: str = "standard"
    # Column type names (lowercase) whose values are instants, given in the session's UTC.
    utc_type_names: frozenset[str] = field(default_factory=frozenset)
    # After a result is abandoned part-way, is the connection safe to reuse? With a
    # streaming MySQL result it is not until every remaining row has been read.
    reuse_after_partial_read: bool = True
    # A statement the streaming cursor refuses: (SQLSTATE, words of the message) that say so,
    # and the prefix that makes the driver run it without the cursor.
    uncursorable: tuple[str, str] | None = None
    uncursored_prefix: str = ""

    def needs_uncursored_retry(self, state: str, text: str) -> bool:
        if self.uncursorable is None:
            return False
        refused_state, refused_words = self.uncursorable
        return state == refused_state and refused_words in text


def _postgres_stream(fetch_size: int) -> list[tuple[str, str]]:
    # BoolsAsChar=0: booleans as SQL_BIT (True/False), not the strings "1"/"0".
    return [("UseDeclareFetch", "1"), ("Fetch", str(fetch_size)), ("BoolsAsChar", "0")]


POSTGRESQL = Dialect(
    name="postgresql",
    stream_options=_postgres_stream,
    session_setup=("SET TIME ZONE 'UTC'",),
    read_only_setup=("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",),
    read_only_begin=("SET TRANSACTION READ ONLY",),
    read_only_check="SELECT current_setting('default_transaction_read_only') = 'on'",
    read_only_enforced=True,
    syntax="postgresql",
    utc_type_names=frozenset({"timestamptz", "timestamp with time zone"}),
    uncursorable=("0A000", "DECLARE CURSOR must not contain data-modifying statements"),
    uncursored_prefix="/* bridgehead: data-modifying WITH, run without a cursor */\n",
)

MARIADB = Dialect(
    name="mariadb",
    stream_options=lambda _fetch_size: [("NO_CACHE", "1")],
    session_setup=("SET time_zone = '+00:00'",),
    read_only_setup=("SET SESSION TRANSACTION READ ONLY",),
    read_only_begin=("START TRANSACTION READ ONLY",),
    read_only_check="SELECT @@session.tx_read_only",
    read_only_enforced=True,
    syntax="mariadb",
    utc_type_names=frozenset({"timestamp"}),
    reuse_after_partial_read=False,
)

SQLITE = Dialect(
    name="sqlite",
    read_only_setup=("PRAGMA query_only = ON",),
    read_only_check="PRAGMA query_only",
    read_only_enforced=True,
)

ORACLE = Dialect(
    name="oracle",
    read_only_begin=("SET TRANSACTION READ ONLY",),
    health_check="SELECT 1 FROM DUAL",
    read_only_enforced=True,
)

SQLSERVER = Dialect(name="sqlserver")
GENERIC = Dialect(name="odbc")

# Substrings of a driver's name or library file, lowercased, in the order they are tried.
_BY_DRIVER = (
    (("psqlodbc", "postgres"), POSTGRESQL),
    (("maodbc", "myodbc", "mariadb", "mysql"), MARIADB),
    (("sqlite",), SQLITE),
    (("sqora", "oracle"), ORACLE),
    (("msodbcsql", "sql server", "sqlncli", "tdsodbc", "freetds"), SQLSERVER),
)


def dialect_for(driver: str) -> Dialect:
    """The dialect of a driver, from its name or library file (``SQL_DRIVER_NAME``)."""
    lowered = driver.lower()
    for needles, dialect in _BY_DRIVER:
        if any(n in lowered for n in needles):
            return dialect
    return GENERIC
