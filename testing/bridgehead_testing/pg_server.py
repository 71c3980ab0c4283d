"""A private PostgreSQL server for the tests that take PostgreSQL away: ``PgServer`` runs
``initdb`` into a directory of its own, runs ``postgres`` on a free loopback port, and can stop
it (a fast shutdown, as ``pg_ctl stop -m fast`` or ``systemctl stop`` does), start it again on
the same port and data, or kill it with SIGKILL (the postmaster and every backend, as an OOM
kill of the whole service would). ``PgServer(replica_of=primary)`` is a streaming standby of
another, which ``promote()`` makes a primary and ``move_to(port)`` gives the old primary's
address: a failover. The shared server the other tests use (``postgres.POSTGRES_URL``) is
never touched.

The server trusts every local connection, and its superuser is ``root`` as on the shared
server, so ``url()`` needs no password. Run as root (CI's containers), ``postgres`` refuses to
start, so it runs as the ``postgres`` system user (``setpriv``, which execs in place: the pid
we hold is the postmaster's) in a directory that user owns; the directory is made under /tmp
rather than a test's tmp_path, which is private to root.

``fsync=off``: every outage here is a process stopped or killed, never the machine, and what
a killed server wrote is in the page cache; flushing it to disk would only slow the tests.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Self

from bridgehead_testing.child_server import ChildServer
from bridgehead_testing.harness import free_port, scaled
from bridgehead_testing.processes import descendants

SERVICE_USER = "postgres"  # Debian's postgresql package makes it
# "... ready to accept connections", or "... read-only connections" for a standby.
READY = "database system is ready to accept"


class PgServerError(RuntimeError):
    pass


def binaries() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "postgres").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        raise PgServerError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: apt-get install postgresql")
    return found[-1]


class PgServer(ChildServer):
    """One ``postgres`` of the test's own: ``start()``, ``stop()`` (fast), ``start()`` again,
    ``kill9()``; ``cleanup()`` (or leaving the ``with`` block) stops it and removes its files."""

    host = "127.0.0.1"
    name = "postgres"
    error = PgServerError

    def __init__(self, port: int | None = None, *, replica_of: PgServer | None = None) -> None:
        """A new cluster (``initdb``), or a streaming standby of the running ``replica_of``
        (``pg_basebackup -R``: it follows the primary until ``promote()``)."""
        super().__init__()
        self.bin = binaries()
        self.root = Path(tempfile.mkdtemp(prefix="bh-pg-"))
        self.data = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self.port = port or free_port()
        self._started_once = False
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVICE_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]
        if replica_of is None:
            # (initdb's pg_hba.conf trusts loopback for replication too: standbys need nothing more.)
            self._run(
                "initdb",
                *("--pgdata", str(self.data), "--username", "root", "--auth", "trust"),
                *("--encoding", "UTF8", "--locale", "C", "--no-sync"),
            )
        else:
            self._run(
                "pg_basebackup",
                *("--host", self.host, "--port", str(replica_of.port), "--username", "root"),
                *("--pgdata", str(self.data), "--write-recovery-conf", "--wal-method", "stream"),
                *("--checkpoint=fast", "--no-sync"),
            )

    def _run(self, program: str, *args: str) -> None:
        """One of the server's programs, as the user the server runs as."""
        result = subprocess.run(
            [*self._as_user, str(self.bin / program), *args],
            capture_output=True,
            text=True,
            timeout=scaled(120),
            cwd=self.root,
        )
        if result.returncode != 0:
            raise PgServerError(f"{program} exited {result.returncode}: {result.stderr or result.stdout}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://root@{self.host}:{self.port}/{database}"

    # --- ChildServer -----------------------------------------------------------------------

    def argv(self) -> list[str]:
        return [
            *self._as_user,
            str(self.bin / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-k",
            str(self.root),  # its Unix socket here, not in the shared server's /var/run/postgresql
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=100",
        ]

    def probe(self, offset: int) -> str:
        return "" if READY in self.log_tail(lines=1000, since=offset) else "not ready yet"

    def pick_new_ports(self) -> None:
        if self._started_once:  # a restart must keep its address: clients reconnect to it
            raise PgServerError(f"port {self.port} was taken while the server was down:\n{self.log_tail()}")
        self.port = free_port()

    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30) -> Self:
        super().start(timeout)
        self._started_once = True
        return self

    def promote(self) -> None:
        """Make a standby the primary (``pg_ctl promote``, waiting until it takes writes)."""
        self._run("pg_ctl", "promote", "--pgdata", str(self.data), "--wait")

    def move_to(self, port: int) -> None:
        """Serve on ``port`` from the next start (a failover moving the primary's address)."""
        if self.running:
            raise PgServerError("stop the server before moving it")
        self.port = port

    # --- outages ---------------------------------------------------------------------------

    def stop(self, timeout: float = 30) -> None:
        """A fast shutdown (SIGINT): clients are disconnected, open transactions rolled back,
        the data checkpointed. (SIGTERM would wait for every client to leave.) Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            self._kill_tree(proc)

    def kill9(self) -> None:
        """SIGKILL the postmaster and all its backends at once: the next start recovers from
        the WAL. (Killing the postmaster alone would leave backends holding its shared memory,
        and the next start would refuse until they noticed and left.)"""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._kill_tree(proc)

    @staticmethod
    def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
        children = descendants(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()

    def cleanup(self) -> None:
        """Stop the server (SIGKILL: nothing of it is kept) and remove its directory."""
        self.kill9()
        shutil.rmtree(self.root, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
