"""The PostgreSQL and MariaDB servers the SQL tests and benches use: already running on
127.0.0.1 (scripts/test starts them), database ``test``, ``root`` admitted without a password
over loopback. The connection strings name no user: a test adds its own credential."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyodbc

PG = "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=test"
MARIA = "Driver={MariaDB Unicode};Server=127.0.0.1;Port=3306;Database=test"

# An agent's connection profile ``pg_write``: read-write SQL on PG as root, for jobs whose
# statements change something (not safe to repeat: what ran is witnessed on the server).
PG_WRITE_PROFILE = f"""
[connections.pg_write]
plugin = "sql"
connection_string = "{PG}"
credential = "pg"
read_only = false

[credentials.pg]
username = "root"
"""


def admin(connection_string: str) -> Any:
    """A root connection of the test itself (autocommit), to set up and inspect."""
    return pyodbc.connect(connection_string + ";UID=root", autocommit=True, timeout=10)


@contextmanager
def mariadb_account(user: str, password: str) -> Iterator[str]:
    """A MariaDB account ``user`` with ``password`` and SELECT on test.*, from any host and from
    localhost (MariaDB matches the more specific one), dropped afterwards; yields its name."""
    conn = admin(MARIA)
    cur = conn.cursor()
    try:
        for host in ("%", "localhost"):
            cur.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")
            cur.execute(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
            cur.execute(f"GRANT SELECT ON test.* TO '{user}'@'{host}'")
        yield user
    finally:
        for host in ("%", "localhost"):
            cur.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")
        conn.close()
