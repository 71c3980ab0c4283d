"""What a service manager needs from either program, whatever the platform.

    ServiceController        install / start / stop / remove / status of one service:
                             systemd (``core.service_linux``), or the Windows service control
                             manager (``agent.windows_service``, Windows only)
    DrainOnStop              a stop request from the service manager, made on any thread,
                             turned into the graceful drain SIGTERM starts
    add_service_commands     ``PROG service install|uninstall|remove|start|stop|status``

The Windows side cannot run here; it is kept to the pywin32 calls, and everything it relies
on that can run on Linux lives in this module and is tested here.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bridgehead.core.errors import BridgeheadError
from bridgehead.core.redact import RedactingFilter


class ServiceError(BridgeheadError):
    """A service could not be installed, started, stopped, removed or queried."""

    exit_code = 1


class ServiceController(Protocol):
    """One service of the platform's service manager. Each method returns the lines to print."""

    def install(self, start: bool) -> list[str]: ...

    def start(self) -> list[str]: ...

    def stop(self) -> list[str]: ...

    def remove(self) -> list[str]: ...

    def status(self) -> tuple[bool, list[str]]:
        """(installed and, where it can be told, running; what to print)."""
        ...


def program_path(command: str, given: str | None = None) -> tuple[str, bool]:
    """The absolute path a service manager should start ``command`` by, and whether it is a
    frozen (PyInstaller) binary: ``given`` (``--executable``: the same program installed
    elsewhere), else that binary itself, else the console script beside this Python (a
    virtualenv's bin/ or Scripts\\), else the one on PATH. Symlinks are kept, not resolved: a
    self-update that swaps the file a link points to must not be pinned past."""
    if given is not None:
        if not (os.path.isfile(given) and os.access(given, os.X_OK)):
            raise ServiceError(f"--executable {given}: not an executable file")
        return os.path.abspath(given), bool(getattr(sys, "frozen", False))
    if getattr(sys, "frozen", False):
        return os.path.abspath(sys.executable), True
    suffix = ".exe" if sys.platform == "win32" else ""
    beside = Path(sys.executable).parent / f"{command}{suffix}"
    if beside.is_file():
        return os.path.abspath(beside), False
    found = shutil.which(command)
    if found is None:
        raise ServiceError(f"cannot find the {command} command: install the package (pip install .) first")
    return os.path.abspath(found), False


class DrainOnStop:
    """Connects a service manager's stop request to the running service's ``stop()``.

    The program calls ``attach(service.stop)`` from its event loop once the service exists; the
    service manager calls ``request_stop()`` from its own thread (Windows runs ``SvcStop`` on
    the service control dispatcher's thread). The stop then runs on the event loop, exactly as
    the SIGTERM handler does it. A stop requested before ``attach`` is not lost: the service
    stops as soon as it is attached. ``log_handler`` (the Windows event log) is added to the
    root logger, behind the same secret-masking filter as the console, when attached."""

    def __init__(self, log_handler: logging.Handler | None = None) -> None:
        self.log_handler = log_handler
        self._lock = threading.Lock()
        self._target: tuple[asyncio.AbstractEventLoop, Callable[[], None]] | None = None
        self.requested = threading.Event()

    def attach(self, stop: Callable[[], None]) -> None:
        """Called on the service's running event loop."""
        if self.log_handler is not None:
            self.log_handler.addFilter(RedactingFilter())
            logging.getLogger().addHandler(self.log_handler)
        loop = asyncio.get_running_loop()
        with self._lock:
            self._target = (loop, stop)
            early = self.requested.is_set()
        if early:
            stop()

    def request_stop(self) -> None:
        """Any thread: begin the graceful drain (idempotent)."""
        with self._lock:
            self.requested.set()
            target = self._target
        if target is not None:
            loop, stop = target
            try:
                loop.call_soon_threadsafe(stop)
            except RuntimeError:  # the loop has closed: the service has stopped already
                pass


def add_service_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    controller: Callable[[argparse.Namespace], ServiceController],
    install_options: Callable[[argparse.ArgumentParser], None],
    host: Callable[[], int] | None = None,
) -> None:
    """Add ``service ACTION``; ``controller(args)`` makes the platform's controller from the
    parsed options (``install_options`` adds the program's own to ``install``). ``host``: the
    entry point a service manager starts (Windows), as ``service host``."""
    p = sub.add_parser("service", help="install, start, stop, remove or inspect the system service")
    actions = p.add_subparsers(dest="service_action", required=True)
    install = actions.add_parser("install", help="install the service (and its user), enable and start it")
    install_options(install)
    install.add_argument("--no-start", action="store_true", help="install and enable, but do not start it now")
    helps = {
        "uninstall": "stop, disable and remove the service (its user and data dir stay)",
        "remove": "the same as uninstall",
        "start": "start the installed service",
        "stop": "stop it: a graceful drain, as SIGTERM",
        "status": "is it installed, is it running, and what it says (exit 3 if not installed or not running)",
    }
    for action, text in helps.items():
        actions.add_parser(action, help=text)
    for parser in actions.choices.values():
        parser.add_argument(
            "--unit-dir",
            help="Linux: where the systemd unit goes (default /etc/systemd/system; another dir is never enabled)",
        )
    if host is not None:
        actions.add_parser("host", help="what the Windows service manager runs (not for a console)")
        p.set_defaults(func=lambda args: host() if args.service_action == "host" else _run(controller(args), args))
    else:
        p.set_defaults(func=lambda args: _run(controller(args), args))


def _run(controller: ServiceController, args: argparse.Namespace) -> int:
    action = args.service_action
    if action == "install":
        lines = controller.install(start=not args.no_start)
    elif action == "start":
        lines = controller.start()
    elif action == "stop":
        lines = controller.stop()
    elif action in ("uninstall", "remove"):
        lines = controller.remove()
    else:
        ok, lines = controller.status()
        print("\n".join(lines))
        return 0 if ok else 3
    print("\n".join(lines))
    return 0
