"""A real HTTP CONNECT proxy (Debian's ``tinyproxy``) on loopback for integration tests.

``Tinyproxy`` writes a config under one work directory and runs ``/usr/bin/tinyproxy -d`` as a
child process on a free loopback port: it listens on and connects out from 127.0.0.1 only,
admits clients from 127.0.0.1 only, tunnels CONNECT only to ``connect_ports``, and asks for
``BasicAuth`` when given a user and password. It logs at ``Info`` (every ``Connect`` and
``Request`` line included) to ``tinyproxy.log``, which ``connect_requests`` reads to show
what went through it.

Two tinyproxy 1.11 behaviours the tests rely on:

* without any ``ConnectPort`` line every port may be tunnelled, and ``ConnectPort 0`` disables
  CONNECT altogether, so the ports are listed explicitly (at least one is required);
* with ``BasicAuth``, a request without credentials gets ``407 Proxy Authentication Required``
  but one with wrong credentials gets ``401 Unauthorized``.

No root needed. A missing tinyproxy raises ``TinyproxyError``: the tests that need it fail, they
never skip. This module needs no pytest, so that scripts can start a proxy with it too.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from pathlib import Path

from bridgehead_testing.child_server import ChildServer, PortTaken
from bridgehead_testing.harness import free_port

TINYPROXY = Path("/usr/bin/tinyproxy")


class TinyproxyError(RuntimeError):
    pass


class Tinyproxy(ChildServer):
    """One tinyproxy process with its own config, log and port under ``workdir``."""

    host = "127.0.0.1"
    name = "tinyproxy"
    error = TinyproxyError

    def __init__(
        self, workdir: Path, *, connect_ports: Sequence[int], basic_auth: tuple[str, str] | None = None
    ) -> None:
        """Pick a port and remember the settings; the config is written at each start."""
        if not TINYPROXY.exists():
            raise TinyproxyError(f"tinyproxy is not installed ({TINYPROXY}): apt-get install tinyproxy")
        if not connect_ports or 0 in connect_ports:
            raise ValueError("give the ports CONNECT may reach: none means all to tinyproxy, and 0 means none")
        workdir = workdir.resolve()
        # tinyproxy.conf takes quoted strings without escapes, and BasicAuth splits on whitespace.
        if '"' in str(workdir) or any(re.search(r'[\s"]', part) for part in basic_auth or ()):
            raise ValueError("tinyproxy.conf cannot take these paths or credentials as they are")
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.connect_ports = tuple(connect_ports)
        self.basic_auth = basic_auth
        self.config_file = workdir / "tinyproxy.conf"
        self.log_file = workdir / "tinyproxy.log"
        self.pid_file = workdir / "tinyproxy.pid"
        # Picked now so that the URL is known before start; see before_spawn.
        self.port = free_port()
        super().__init__()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, without credentials."""
        return f"http://{self.host}:{self.port}"

    def config_lines(self) -> list[str]:
        lines = [
            f"Port {self.port}",
            f"Listen {self.host}",
            f"Bind {self.host}",
            f"Allow {self.host}",
            *(f"ConnectPort {port}" for port in self.connect_ports),
            f'LogFile "{self.log_file}"',
            # Info, not Connect: the refused CONNECTs ("Refused CONNECT method on port N") and the
            # tunnels' "Established connection" lines are logged at Info.
            "LogLevel Info",
            # Written by tinyproxy only when it daemonizes; named so that it never uses the
            # system service's /run/tinyproxy.
            f'PidFile "{self.pid_file}"',
            "Timeout 600",
            "MaxClients 100",
        ]
        if self.basic_auth is not None:
            lines.append(f"BasicAuth {self.basic_auth[0]} {self.basic_auth[1]}")
        return lines

    # -- process --

    def argv(self) -> list[str]:
        return [str(TINYPROXY), "-d", "-c", str(self.config_file)]

    def before_spawn(self) -> None:
        # tinyproxy says only "Could not create listening sockets" when its port is taken (the
        # reason stays in a log buffer it never flushes), so the race is checked here instead.
        try:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tinyproxy binds
                s.bind((self.host, self.port))
        except OSError:
            raise PortTaken from None
        self.config_file.write_text("\n".join(self.config_lines()) + "\n")

    def pick_new_ports(self) -> None:
        self.port = free_port()

    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def probe(self, offset: int) -> str:
        """'' once our tinyproxy logged that it accepts connections and answers on its port."""
        # The log line (with our pid) comes first: a proxy answering could be another test's that
        # got the port while ours failed to bind it. The statistics page request is no CONNECT, so
        # it adds no line that connect_requests counts.
        assert self._proc is not None
        if f"[{self._proc.pid}]: Starting main loop" not in self.log_tail(lines=1000, since=offset):
            return "no 'Starting main loop' in the log yet"
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                sock.sendall(b"GET http://tinyproxy.stats/ HTTP/1.0\r\n\r\n")
                head = sock.makefile("rb").read(4096)
        except OSError as exc:
            return repr(exc)
        return "" if head.startswith(b"HTTP/1.") and b"tinyproxy" in head else f"answer {head[:200]!r}"

    # -- what went through --

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def connect_requests(self, port: int | None = None) -> list[str]:
        """The ``host:port`` of every CONNECT request so far (also refused ones), oldest first."""
        targets = re.findall(r"Request \(file descriptor \d+\): CONNECT (\S+) HTTP/", self.log_text())
        return [t for t in targets if port is None or t.endswith(f":{port}")]

    def tunnels(self) -> int:
        """How many connections tinyproxy established to a target, CONNECT tunnels included."""
        return self.log_text().count("Established connection to host")
