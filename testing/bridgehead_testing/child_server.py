"""``ChildServer``: a real server the tests run as their own child process (slapd, sshd).

The server runs in the foreground with its output appended to a log file (kept across
restarts, so ``log_tail(since=offset)`` reads one start's lines). ``start`` waits until
``probe`` says it answers, and picks new ports if another process took one between
``free_port()`` and the server binding it (a race the suite lost now and then). Subclasses
give the command line, the probe and how to pick ports; ``stop`` terminates and reaps the
process, and a server that needs more (sshd's sessions) overrides it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Self

from bridgehead_testing.harness import scaled, terminate


class PortTaken(Exception):
    """The server lost the race for a port picked by free_port(); pick again."""


class ChildServer:
    name = "server"
    error: type[Exception] = RuntimeError
    log_file: Path

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0

    # --- what a subclass gives -----------------------------------------------------------

    def argv(self) -> list[str]:
        raise NotImplementedError

    def probe(self, offset: int) -> str:
        """'' once the server answers; otherwise why not (shown if it never does)."""
        raise NotImplementedError

    def pick_new_ports(self) -> None:
        raise NotImplementedError

    def before_spawn(self) -> None:
        """Called before each spawn (sshd rewrites its config with the current port)."""

    def address(self) -> str:
        raise NotImplementedError

    # --- shared --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def log_tail(self, lines: int = 40, since: int = 0) -> str:
        """The last ``lines`` of the server's log, from byte offset ``since`` on."""
        try:
            with self.log_file.open("rb") as f:
                f.seek(since)
                text = f.read().decode(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def start(self, timeout: float = 15) -> Self:
        if self.running:
            return self
        started = time.monotonic()
        for attempt in range(3):
            try:
                self._spawn_and_wait(timeout)
            except PortTaken:
                if attempt == 2:
                    raise self.error(f"{self.name} could not bind its ports three times:\n{self.log_tail()}") from None
                self.pick_new_ports()
                continue
            except BaseException:
                self.stop()
                raise
            self.start_seconds = time.monotonic() - started
            return self
        raise AssertionError("unreachable")

    def _spawn_and_wait(self, timeout: float) -> None:
        self.before_spawn()
        with self.log_file.open("ab") as log:
            offset = log.tell()
            self._proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + scaled(timeout)
        last = "no attempt"
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                tail = self.log_tail(since=offset)
                if "Address already in use" in tail:
                    raise PortTaken
                raise self.error(f"{self.name} exited {code} during start; log {self.log_file}:\n{tail}")
            last = self.probe(offset)
            if not last:
                return
            time.sleep(0.02)
        raise self.error(
            f"{self.name} did not answer on {self.address()} within {scaled(timeout):g} s (last: {last}); "
            f"log {self.log_file}:\n{self.log_tail(since=offset)}"
        )

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (each of these servers' orderly shutdown), then SIGKILL if it has not exited
        within ``timeout`` (scaled); reap it. Idempotent."""
        proc, self._proc = self._proc, None
        terminate(proc, timeout)

    def restart(self) -> Self:
        """Stop and start again, on the same ports if they are still free."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
