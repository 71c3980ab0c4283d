"""A throwaway copy of this machine's root filesystem, for tests that install packages.

    with ThrowawayRoot(tmp_path / "root") as root:
        root.put("/tmp/pkg.deb", deb_bytes)
        root.run("dpkg", "-i", "/tmp/pkg.deb")
        root.path("/etc/passwd").read_text()

How: ``unshare --mount`` makes a private mount namespace; in it, a tmpfs holds the upper and
work layers of an overlayfs whose lower layer is ``/`` (the tmpfs is another filesystem, so
the layers do not overlap, as overlayfs requires), and the merged tree gets ``/dev``, ``/proc``
and ``/sys`` bound in and a fresh ``/tmp``. A holder process chrooted there keeps the namespace
alive; commands enter it with ``nsenter --mount --root``. Every write lands in the tmpfs, which
vanishes with the namespace: this machine's files, users and dpkg database are never touched.

Only mounts are isolated: processes, users' ids and the network are shared, so a program
started inside reaches a server the test runs on loopback, and its ``/proc/PID`` is readable
from here. Needs root (CAP_SYS_ADMIN) and a kernel with overlayfs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from bridgehead_testing.harness import scaled

# Runs in the new mount namespace ($1: the empty folder to build in). The holder says "ready"
# only once chrooted: before that, its /proc/PID/root is this machine's / and ``put`` would
# write there. It then waits on its standard input: when the test (the pipe's writer) ends,
# even killed, the holder ends, and with the last process in the namespace its mounts and the
# tmpfs go.
_SETUP = r"""
set -eu
mount -t tmpfs -o mode=0755 bridgehead-throwaway "$1"
mkdir "$1/upper" "$1/work" "$1/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$1/upper,workdir=$1/work" "$1/root"
for fs in dev proc sys; do mount --rbind "/$fs" "$1/root/$fs"; done
mount -t tmpfs -o mode=1777 bridgehead-throwaway-tmp "$1/root/tmp"
exec chroot "$1/root" /bin/sh -c 'echo "ready $$"; read -r _ || true'
"""
# What a command inside gets: none of this process's environment (its virtualenv, its variables).
_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


class ThrowawayRoot:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.holder: subprocess.Popen[str] | None = None
        self.pid = 0  # the holder's process, chrooted in the throwaway root

    def start(self) -> ThrowawayRoot:
        if os.geteuid() != 0:
            raise AssertionError("a throwaway root needs root (mount namespaces, overlayfs): run the tests as root")
        mountpoint = self.workdir / "mnt"
        mountpoint.mkdir(parents=True, exist_ok=True)
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--fork", "--", "/bin/sh", "-c", _SETUP, "sh"]
            + [str(mountpoint)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None and self.holder.stderr is not None
        line = self.holder.stdout.readline()  # the holder's first word, or EOF if setup failed
        if not line.startswith("ready "):
            _, err = self.holder.communicate(timeout=scaled(10))
            self.holder = None
            raise AssertionError(f"cannot make a throwaway root (unshare + overlayfs): {err.strip()}")
        self.pid = int(line.split()[1])
        # The overlay is a filesystem of its own: if this were still the machine's /, every
        # write through ``path`` would land on the machine.
        if os.stat(self.path("/")).st_dev == os.stat("/").st_dev:
            self.stop()
            raise AssertionError("the throwaway root's holder is not in the overlay; refusing to go on")
        return self

    def stop(self) -> None:
        if self.holder is None:
            return
        try:
            self.holder.communicate(timeout=scaled(10))  # closes its stdin: the holder's cue to end
        except subprocess.TimeoutExpired:
            self.holder.kill()
            self.holder.communicate()
        self.holder = None

    def __enter__(self) -> ThrowawayRoot:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def command(self, *argv: str) -> list[str]:
        """``argv`` as a command that runs inside the root (as root, working directory ``/``)."""
        assert self.pid, "start() first"
        return ["nsenter", f"--target={self.pid}", "--mount", "--root", "--wd", "--", *argv]

    def run(
        self, *argv: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the root; with ``check``, a non-zero exit fails the test with its output."""
        result = subprocess.run(
            self.command(*argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=scaled(timeout),
            env=_ENV,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{argv} exited {result.returncode} in the throwaway root:\n{result.stdout}{result.stderr}"
            )
        return result

    def popen(self, *argv: str, stdout: IO[Any] | int | None = None, umask: int = 0o022) -> subprocess.Popen[bytes]:
        """Start a command inside the root, output to ``stdout``. nsenter execs it (no fork), so
        the process's id is the command's."""
        return subprocess.Popen(self.command(*argv), stdout=stdout, stderr=subprocess.STDOUT, env=_ENV, umask=umask)

    def path(self, inside: str) -> Path:
        """A path inside the root, as seen from here (through the holder's ``/proc/PID/root``).
        Absolute symbolic links inside would resolve against this machine's root: read files."""
        assert self.pid, "start() first"
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")

    def put(self, inside: str, data: bytes, mode: int = 0o644) -> str:
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        os.chmod(target, mode)
        return inside
