"""systemd's notify protocol (``sd_notify(3)``), in pure Python: no libsystemd needed.

A service of ``Type=notify`` tells systemd how it is doing with one datagram per message on
the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract
namespace):

    READY=1        started: systemd considers the unit active from now on
    STATUS=text    one line shown by ``systemctl status``
    WATCHDOG=1     still alive; with ``WatchdogSec=`` set, a service silent for that long is
                   killed (SIGABRT) and, with ``Restart=on-failure``, started again
    STOPPING=1     shutting down (a graceful drain has begun)

``Notifier.from_environment()`` reads the variables systemd sets; without ``NOTIFY_SOCKET``
(not under systemd, or Windows) every method is a no-op. Nothing here raises into the caller:
a service must never fail because its supervisor went away, so a send that fails is logged
once and dropped.

``keep_watchdog(notifier, healthy)`` pings at half the interval systemd asked for, but only
while ``healthy()`` holds: a wedged service stops pinging and systemd restarts it. It runs on
the service's own event loop, so a blocked loop stops the pings too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Callable, Mapping

from bridgehead.core.redact import REDACTOR

log = logging.getLogger("bridgehead.sdnotify")

# A STATUS longer than this is cut: systemctl shows one line, and a datagram stays small.
MAX_STATUS_CHARS = 200
# systemd reads the socket at once; a send that cannot go within this long means systemd
# itself is stuck, and the caller (an event loop) must not wait on it any longer.
SEND_TIMEOUT_S = 1.0


def one_line(text: str) -> str:
    """``text`` as a single STATUS line: secrets masked as in a log line (any local user may
    run ``systemctl status``), whitespace runs folded, cut to ``MAX_STATUS_CHARS``."""
    line = " ".join(REDACTOR.redact(text).split())
    return line if len(line) <= MAX_STATUS_CHARS else line[: MAX_STATUS_CHARS - 3] + "..."


def socket_address(value: str) -> str | bytes | None:
    """The address ``NOTIFY_SOCKET`` names: a filesystem path, or (``@name``) a name in the
    Linux abstract namespace, which starts with a NUL byte on the wire. None if unusable."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # systemd only ever sets these two forms (vsock: not supported here)


class Notifier:
    """Sends notifications to ``address`` (None: a no-op notifier)."""

    def __init__(self, address: str | bytes | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        # The interval systemd expects pings within (None: no watchdog for this process).
        self.watchdog_interval_s = watchdog_usec / 1_000_000 if watchdog_usec and address is not None else None
        self._socket: socket.socket | None = None
        self._failed = False  # a failure is logged once, not at every ping
        self._last_status: str | None = None

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str] | None = None,
        pid: int | None = None,
        frozen: bool | None = None,
    ) -> Notifier:
        """The notifier systemd's variables describe (``os.environ`` by default).

        ``WATCHDOG_PID`` names the process the watchdog is meant for; libsystemd ignores the
        watchdog in any other. Not so in a PyInstaller one-file binary (``frozen``): it runs as
        a bootloader parent, which systemd knows as the main PID, and a Python child that does
        the work and sends the messages (the unit says ``NotifyAccess=all``, see
        ``service_units``); after a self-update's exec there is one more bootloader between
        them. The watchdog is then this process's to keep whatever PID the variable names.
        The variables stay in the environment: child processes of jobs get an allow-listed
        environment of their own, so they never see them."""
        env = os.environ if environ is None else environ
        address = socket_address(env.get("NOTIFY_SOCKET", ""))
        if address is None:
            return cls(None)
        try:
            usec = int(env.get("WATCHDOG_USEC", "0"))
        except ValueError:
            usec = 0
        meant_for = env.get("WATCHDOG_PID", "")
        is_frozen = getattr(sys, "frozen", False) if frozen is None else frozen
        if meant_for and not is_frozen and meant_for != str(os.getpid() if pid is None else pid):
            usec = 0
        return cls(address, usec if usec > 0 else None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``KEY=value`` each) as one datagram; True if it was sent."""
        if self.address is None:
            return False
        try:
            if self._socket is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.settimeout(SEND_TIMEOUT_S)
                self._socket = sock
            self._socket.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify systemd on %r: %s (further failures are not logged)", self.address, exc)
            self._failed = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *self._status_field(status))

    def status(self, text: str) -> bool:
        """Set the STATUS line; the same line twice in a row is sent once."""
        fields = self._status_field(text)
        return self.notify(*fields) if fields else False

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *self._status_field(status))

    def _status_field(self, text: str | None) -> list[str]:
        if text is None or self.address is None:
            return []
        line = one_line(text)
        if line == self._last_status:
            return []
        self._last_status = line
        return [f"STATUS={line}"]

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


async def keep_watchdog(notifier: Notifier, healthy: Callable[[], bool]) -> None:
    """Ping systemd's watchdog at half its interval while ``healthy()`` holds; returns at once
    if there is no watchdog. Half the interval leaves a whole half for one late wake-up."""
    interval = notifier.watchdog_interval_s
    if interval is None:
        return
    was_fine = True
    while True:
        try:
            fine = healthy()
        except Exception:  # noqa: BLE001 - a broken predicate means unhealthy, never a dead pinger
            log.exception("health check for the watchdog failed")
            fine = False
        if fine:
            notifier.watchdog()
        elif was_fine:
            log.error(
                "unhealthy: no longer pinging systemd's watchdog, which restarts the service after %g s", interval
            )
        was_fine = fine
        await asyncio.sleep(interval / 2)
