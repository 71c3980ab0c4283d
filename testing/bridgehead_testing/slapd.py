"""A real OpenLDAP server (Debian's ``slapd``) on loopback for integration tests.

``Slapd`` writes a throw-away ``slapd.conf``, a private CA and server certificate, and an mdb
database under one work directory, bulk-loads entries with ``slapadd`` before start (an order of
magnitude faster than LDAP adds for 10,000 entries), runs ``slapd`` in the foreground as a child
process on two free loopback ports (plain/StartTLS and ldaps), and always stops it.

The pytest fixtures ``slapd_server`` (session scope, 10,000 people and a 5,000-member group,
read-only by convention) and ``slapd`` (a small fresh server per test, for tests that write, stop
or restart) are in tests/integration/conftest.py, the entries they load in ``ldap_data``; this
module needs no pytest, so that the demo (scripts/demo.py) starts its directory with it too.
"""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from bridgehead_testing.child_server import ChildServer
from bridgehead_testing.harness import free_port, scaled
from bridgehead_testing.ldap_data import DEFAULT_SUFFIX, READER_PASSWORD, Entry, to_ldif
from bridgehead_testing.pki import write_test_pki

with warnings.catch_warnings():
    # ldap3 2.9.1 imports names pyasn1 >= 0.6.1 has deprecated (tagMap, typeMap); the warning is
    # raised once, at import, and under pytest's "error" filter it would fail collection.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="ldap3")
    import ldap3
    from ldap3.core.exceptions import LDAPBindError, LDAPException

SLAPD = Path("/usr/sbin/slapd")
SLAPADD = Path("/usr/sbin/slapadd")
MODULE_DIR = Path("/usr/lib/ldap")
SCHEMA_DIR = Path("/etc/ldap/schema")
# Order matters: cosine needs core; inetorgperson and nis need cosine.
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")

ADMIN_PASSWORD = "admin-secret"  # noqa: S105 - a throw-away test server's credentials
# A plain search by a non-root client stops at SOFT_SIZE_LIMIT entries, and asking for more does
# not help (hard = soft), so clients must page; a paged search may page through everything, with
# pages of any size. (A bare "sizelimit 500" would cap paged searches at 500 in total as well:
# size.prtotal defaults to the hard limit.) Pass another ``sizelimit`` line to Slapd to change it.
SOFT_SIZE_LIMIT = 500
SIZE_LIMITS = f"size.soft={SOFT_SIZE_LIMIT} size.hard=soft size.pr=unlimited size.prtotal=unlimited"


User = Literal["admin", "reader", "anonymous"]
Transport = Literal["plain", "starttls", "ldaps"]
GetInfo = Literal["NO_INFO", "DSA", "SCHEMA", "ALL"]


class SlapdError(RuntimeError):
    pass


class Slapd(ChildServer):
    """One slapd process with its own config, database, CA and ports under ``workdir``.

    Load data with ``load()`` before ``start()``; after start, use ``connection()``/``connected()``
    or the ``add``/``modify``/``delete`` helpers (as the rootdn).
    """

    host = "127.0.0.1"
    name = "slapd"
    error = SlapdError

    def __init__(self, workdir: Path, *, suffix: str = DEFAULT_SUFFIX, sizelimit: str = SIZE_LIMITS) -> None:
        """Write the CA, certificates and slapd.conf under ``workdir``; nothing runs yet.

        ``sizelimit`` is the value of slapd's ``sizelimit`` directive for non-root clients.
        """
        missing = [str(p) for p in (SLAPD, SLAPADD, MODULE_DIR / "back_mdb.so") if not p.exists()]
        if missing:
            raise SlapdError(f"OpenLDAP is not installed ({', '.join(missing)}): apt-get install slapd ldap-utils")
        self.workdir = workdir
        self._suffix = suffix
        self._sizelimit = sizelimit
        self.db_dir = workdir / "db"
        self.config_file = workdir / "slapd.conf"
        self.log_file = workdir / "slapd.log"
        self.db_dir.mkdir(parents=True, exist_ok=True)
        # Ports are picked now so that URLs are known before start; start() picks new ones only
        # if another process took one in between.
        self.port = free_port()
        self.ldaps_port = free_port()
        super().__init__()
        self._loads = 0
        self._connections: list[ldap3.Connection] = []
        self._admin: ldap3.Connection | None = None
        self.load_seconds = 0.0
        write_test_pki(workdir)
        self._write_config()

    # -- identity and addresses --

    @property
    def suffix(self) -> str:
        return self._suffix

    @property
    def url(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{self.host}:{self.ldaps_port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.pem"

    @property
    def other_ca_file(self) -> Path:
        return self.workdir / "other_ca.pem"

    @property
    def admin_dn(self) -> str:
        return f"cn=admin,{self._suffix}"

    @property
    def admin_password(self) -> str:
        return ADMIN_PASSWORD

    @property
    def reader_dn(self) -> str:
        return f"cn=reader,{self._suffix}"

    @property
    def reader_password(self) -> str:
        return READER_PASSWORD

    def _write_config(self) -> None:
        w = self.workdir
        includes = "\n".join(f"include {SCHEMA_DIR / s}.schema" for s in SCHEMAS)
        self.config_file.write_text(
            f"""\
# Generated by tests/slapd.py for one test server; not a production configuration.
{includes}

modulepath {MODULE_DIR}
moduleload back_mdb

# Kept out of /run/slapd, which belongs to the system service.
pidfile "{w / "slapd.pid"}"
argsfile "{w / "slapd.args"}"

TLSCACertificateFile "{w / "ca.pem"}"
TLSCertificateFile "{w / "server.pem"}"
TLSCertificateKeyFile "{w / "server.key"}"

# Frontend ACLs: anyone may read the root DSE and the schema, as clients discover
# naming contexts, controls and attribute syntaxes there (ldap3 does so on bind by default).
access to dn.base="" by * read
access to dn.base="cn=Subschema" by * read

database mdb
suffix "{self._suffix}"
rootdn "{self.admin_dn}"
rootpw {ADMIN_PASSWORD}
directory "{self.db_dir}"
maxsize {1 << 30}
# Test data need no durability; without fsync each online write is much faster.
dbnosync

index objectClass,entryUUID eq
index modifyTimestamp eq
index uid,mail eq
index member eq

# Applies to everyone but the rootdn; see SIZE_LIMITS in tests/slapd.py.
sizelimit {self._sizelimit}

access to attrs=userPassword
    by self read
    by anonymous auth
    by * none
access to *
    by dn.exact="{self.reader_dn}" read
    by self read
    by * none
"""
        )

    # -- data --

    def load(self, entries: Iterable[Entry] | str) -> None:
        """Bulk-load entries (or LDIF text) with ``slapadd -q``; only while stopped.

        slapadd adds the operational attributes an online add would get (entryUUID, entryCSN,
        createTimestamp, modifyTimestamp, creatorsName, ...); ``-q`` only skips consistency checks
        and the write-ahead sync, and is safe on a database nobody else has open.
        """
        if self.running:
            raise SlapdError("load() uses slapadd, which needs slapd stopped")
        started = time.monotonic()
        self._loads += 1
        path = self.workdir / f"load-{self._loads:03d}.ldif"
        with path.open("w", encoding="utf-8") as f:
            if isinstance(entries, str):
                f.write(entries)
            else:
                f.writelines(to_ldif(entries))
        result = subprocess.run(
            [str(SLAPADD), "-f", str(self.config_file), "-q", "-l", str(path)],
            capture_output=True,
            text=True,
            timeout=scaled(300),
        )
        if result.returncode != 0:
            raise SlapdError(f"slapadd -l {path} exited {result.returncode}:\n{result.stderr[-4000:]}")
        self.load_seconds += time.monotonic() - started

    # -- process --

    def argv(self) -> list[str]:
        listen = f"ldap://{self.host}:{self.port}/ ldaps://{self.host}:{self.ldaps_port}/"
        # "-d none", not "-d 0": both keep slapd in the foreground, but at level 0 it prints
        # nothing at all, not even why it refused to start; "none" prints exactly the
        # unconditional messages (errors, "slapd starting", shutdown).
        return [str(SLAPD), "-d", "none", "-h", listen, "-f", str(self.config_file)]

    def pick_new_ports(self) -> None:
        self.port, self.ldaps_port = free_port(), free_port()

    def address(self) -> str:
        return self.url

    def probe(self, offset: int) -> str:
        """'' once slapd accepts a rootdn bind on both ports (ldaps with our CA), else why not."""
        for transport in ("plain", "ldaps"):
            try:
                conn = self._open("admin", transport, self.ca_file, "NO_INFO", connect_timeout=1, receive_timeout=1)
            except LDAPException as exc:
                return f"{transport}: {exc!r}"
            self._close(conn)
        return ""

    def stop(self, timeout: float = 10) -> None:
        """Terminate slapd and reap it; kill it if it does not exit in time. Idempotent."""
        self.close_connections()
        super().stop(timeout)  # SIGTERM is slapd's orderly shutdown: it closes mdb cleanly

    # -- clients --

    def connection(
        self,
        user: User = "admin",
        *,
        transport: Transport = "plain",
        ca_file: Path | None = None,
        get_info: GetInfo = "SCHEMA",
        password: str | None = None,
        **kwargs: Any,
    ) -> ldap3.Connection:
        """A bound ``ldap3.Connection``; ``stop()`` closes it if the caller did not.

        TLS (``starttls`` on the plain port, or ``ldaps``) requires a certificate that chains to
        ``ca_file`` (default ``ca.pem``) and names 127.0.0.1. Failures raise ldap3's exceptions:
        LDAPSocketOpenError (refused, or ldaps handshake), LDAPStartTLSError, LDAPBindError.
        ``password`` overrides the user's (to test a failed bind); extra keyword arguments go to
        ``ldap3.Connection``.
        """
        ca = ca_file or self.ca_file
        conn = self._open(user, transport, ca, get_info, connect_timeout=5, password=password, **kwargs)
        self._connections.append(conn)
        return conn

    def _open(
        self,
        user: User,
        transport: Transport,
        ca_file: Path,
        get_info: GetInfo,
        connect_timeout: float,
        password: str | None = None,
        **kwargs: Any,
    ) -> ldap3.Connection:
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(ca_file))
        ldaps = transport == "ldaps"
        port = self.ldaps_port if ldaps else self.port
        server = ldap3.Server(
            self.host, port, use_ssl=ldaps, tls=tls, get_info=get_info, connect_timeout=connect_timeout
        )
        who, default_password = {
            "admin": (self.admin_dn, ADMIN_PASSWORD),
            "reader": (self.reader_dn, READER_PASSWORD),
            "anonymous": (None, None),
        }[user]
        kwargs.setdefault("receive_timeout", int(scaled(60)))
        # Opened step by step rather than with auto_bind: when auto_bind fails inside the
        # constructor, the socket ldap3 opened is never closed, and its ResourceWarning at garbage
        # collection fails some later test under pytest's "error" filter.
        conn = ldap3.Connection(server, who, password or default_password, auto_bind=ldap3.AUTO_BIND_NONE, **kwargs)
        untyped: Any = conn  # types-ldap3 leaves open/start_tls/bind unannotated
        try:
            with warnings.catch_warnings():
                # ldap3 2.9.1 matches the host name with ssl.match_hostname, which warns since
                # Python 3.10; under pytest's "error" filter that warning becomes an exception
                # ldap3 reports as a TLS failure. The match itself still runs.
                warnings.filterwarnings("ignore", "ssl.match_hostname", DeprecationWarning)
                untyped.open(read_server_info=False)
                if transport == "starttls":
                    untyped.start_tls(read_server_info=False)
            if not untyped.bind():
                raise LDAPBindError(f"bind as {who or 'anonymous'} failed: {conn.result}")
        except BaseException:
            self._close(conn)
            raise
        return conn

    @contextlib.contextmanager
    def connected(self, user: User = "admin", **kwargs: Any) -> Iterator[ldap3.Connection]:
        """``connection()`` that is unbound on leaving the block.

        (ldap3's own ``with conn:`` leaves an already-bound connection open.)
        """
        conn = self.connection(user, **kwargs)
        try:
            yield conn
        finally:
            self._close(conn)

    def _close(self, conn: ldap3.Connection) -> None:
        sock = conn.socket
        with contextlib.suppress(LDAPException, OSError):
            if not conn.closed:
                conn.unbind()
        if sock is not None:
            # A failed open or TLS handshake leaves conn "closed" with its socket still open.
            sock.close()
        with contextlib.suppress(ValueError):
            self._connections.remove(conn)

    def close_connections(self) -> None:
        for conn in list(self._connections):
            self._close(conn)
        self._admin = None

    def _admin_conn(self) -> ldap3.Connection:
        if self._admin is None or self._admin.closed:
            self._admin = self.connection("admin", get_info="NO_INFO")
        return self._admin

    @staticmethod
    def _check(conn: ldap3.Connection, ok: bool, what: str) -> None:
        if not ok:
            raise SlapdError(f"{what} failed: {conn.result}")

    def add(self, dn: str, attributes: Mapping[str, Any]) -> None:
        """Add one entry as the rootdn; ``attributes`` must include objectClass."""
        conn = self._admin_conn()
        attrs = dict(attributes)
        object_class = attrs.pop("objectClass")
        # types-ldap3 leaves add/modify/delete unannotated.
        ok = conn.add(dn, object_class, attrs)  # type: ignore[no-untyped-call]
        self._check(conn, ok, f"add {dn}")

    def modify(self, dn: str, changes: Mapping[str, Any]) -> None:
        """Modify as the rootdn; ``changes`` in ldap3's form, ``{attr: [(MODIFY_REPLACE, [values])]}``."""
        conn = self._admin_conn()
        ok = conn.modify(dn, dict(changes))  # type: ignore[no-untyped-call]
        self._check(conn, ok, f"modify {dn}")

    def replace(self, dn: str, attr: str, values: Sequence[str | bytes]) -> None:
        self.modify(dn, {attr: [(ldap3.MODIFY_REPLACE, list(values))]})

    def delete(self, dn: str) -> None:
        conn = self._admin_conn()
        ok = conn.delete(dn)  # type: ignore[no-untyped-call]
        self._check(conn, ok, f"delete {dn}")
