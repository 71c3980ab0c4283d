"""An ``sql`` profile: its ODBC driver (or DSN) is registered with unixODBC, its server's port
answers, and a login works, through the sql plugin's own ``Pool``: the connect, the session
setup and the read-only check a job's first connection goes through."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from bridgehead.agent.doctor.findings import Finding, credential_ref, fail, ok, skip
from bridgehead.agent.doctor.reach import reach_all
from bridgehead.agent.doctor.runner import Chain, connection_chain
from bridgehead.agent.doctor.threads import in_thread
from bridgehead.plugins.sql import odbc_string
from bridgehead.plugins.sql.params import SqlProfile
from bridgehead.plugins.sql.pool import Pool
from bridgehead.sdk import Credential, JobError

_HOST_KEYS = ("server", "servername", "host", "hostname", "address")
# Default ports by what the driver's name contains (lower case).
_DEFAULT_PORTS = {"postgres": 5432, "maria": 3306, "mysql": 3306, "sql server": 1433, "oracle": 1521}
INSTALL_DRIVER = (
    "install the driver's package (odbc-postgresql, odbc-mariadb, msodbcsql18, ...) or name a registered "
    "driver in Driver= ('odbcinst -q -d' lists them)"
)
# What to do about a failed login, by the sql plugin's error code (bridgehead/plugins/sql/failures.py).
_LOGIN_ADVICE = {
    "auth_failed": "check the user and password of {credential}, and that the account may log in from here",
    "odbc_driver_missing": INSTALL_DRIVER,
    "source_unavailable": "check that the database server runs and accepts connections from this machine",
    "policy_denied": "connect with an account that can only read and set read_only = false",
    "read_only": "the session could not be made read-only: connect with an account that can only read",
}


def _import_pyodbc() -> Any:
    import pyodbc

    return pyodbc


def check_driver(profile: SqlProfile) -> Finding:
    """Blocking (unixODBC reads odbcinst.ini): run it in a thread."""
    try:
        pyodbc = _import_pyodbc()
    except ImportError as exc:
        return fail(f"pyodbc cannot load: {exc}", "install unixODBC (apt-get install unixodbc)")
    pairs = odbc_string.parse(profile.base_connection_string())
    driver, dsn = odbc_string.get(pairs, "driver"), odbc_string.get(pairs, "dsn")
    if driver is not None:
        if "/" in driver:  # a driver given by the path of its library
            if Path(driver).is_file():
                return ok(f"ODBC driver library {driver} is there")
            return fail(f"ODBC driver library {driver} does not exist", INSTALL_DRIVER)
        registered: list[str] = list(pyodbc.drivers())
        if any(name.lower() == driver.lower() for name in registered):
            return ok(f"ODBC driver {driver!r} is registered with unixODBC")
        return fail(
            f"ODBC driver {driver!r} is not registered with unixODBC (registered: {', '.join(registered) or 'none'})",
            INSTALL_DRIVER,
        )
    if dsn is not None:
        sources: dict[str, str] = dict(pyodbc.dataSources())
        found = {name.lower(): (name, source) for name, source in sources.items()}.get(dsn.lower())
        if found is None:
            return fail(
                f"data source {dsn!r} is not defined (known: {', '.join(sources) or 'none'})",
                "define it in /etc/odbc.ini or ~/.odbc.ini ('odbcinst -q -s' lists them)",
            )
        return ok(f"data source {found[0]!r} uses driver {found[1]!r}")
    return skip("the connection string names no Driver or DSN")


def server_address(profile: SqlProfile) -> tuple[str, int] | str:
    """(host, port) the connection string points at, or why it cannot be told."""
    pairs = odbc_string.parse(profile.base_connection_string())
    if odbc_string.get(pairs, "dsn") is not None:
        return "the server is set in the DSN (odbc.ini); the login below reaches it"
    host = next((v for k in _HOST_KEYS if (v := odbc_string.get(pairs, k))), None)
    if host is None:
        return "the connection string names no Server or Host"
    host = host.removeprefix("tcp:")
    port_text = odbc_string.get(pairs, "port")
    if "," in host:  # SQL Server's "host,port"
        host, port_text = host.split(",", 1)
    host = host.split("\\", 1)[0]  # SQL Server's "host\instance"
    if port_text and port_text.strip().isdigit():
        return host, int(port_text)
    driver = (odbc_string.get(pairs, "driver") or "").lower()
    port = next((p for word, p in _DEFAULT_PORTS.items() if word in driver), None)
    if port is None:
        return f"no Port= and no default port known for driver {driver!r}; the login below reaches it"
    return host, port


class SqlProbe:
    def __init__(self, name: str, profile: SqlProfile, credential: Credential | None, timeout_s: float) -> None:
        self.name = name
        # One connection, given up on within doctor's timeout (the driver takes whole seconds).
        self.profile = msgspec.structs.replace(
            profile, pool_size=1, connect_timeout_s=min(profile.connect_timeout_s, max(timeout_s, 1.0))
        )
        self.credential = credential
        self.pool: Pool | None = None

    def chain(self) -> Chain:
        return connection_chain(self, self.close)

    async def driver(self) -> Finding:
        return await in_thread(check_driver, self.profile)

    async def reach(self) -> Finding:
        address = server_address(self.profile)
        if isinstance(address, str):
            return skip(address)
        return await reach_all([address])

    async def login(self) -> Finding:
        self.pool = pool = Pool(self.name, self.profile, self.credential, _import_pyodbc())
        try:
            session = await pool.acquire(self.profile.connect_timeout_s)
        except JobError as exc:
            advice = _LOGIN_ADVICE.get(exc.code, "check the connection string and the database's log")
            return fail(exc.message, advice.format(credential=credential_ref(self.profile.credential)))
        user = self.credential.username if self.credential is not None else None
        as_user = f" as {user}" if user else ""
        mode = "read-only session" if self.profile.read_only else "read-write session"
        pool.release(session)
        return ok(f"logged in{as_user}: {session.dialect.name}, {mode}")

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()
