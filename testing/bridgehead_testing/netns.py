"""A network namespace the test makes, joined to this host by veth pairs ("links"), whose
links can be cut: a real network partition, not a proxy. Link ``i`` has ``10.N.i.1`` on the
host side and ``10.N.i.2`` in the namespace; a process started under ``wrapper`` runs in the
namespace and reaches the host's servers bound to ``host_ip(i)`` only through link ``i``.

Cutting a link sets its host end down: packets are dropped both ways and open TCP
connections see nothing at all (no FIN, no RST), as when a router between two sites dies.
Needs root (CI runs as root); without it the test fails, it does not skip.
"""

from __future__ import annotations

import os
import secrets
import subprocess


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {result.stderr.strip()} (network namespaces need root)")


class Namespace:
    def __init__(self, links: int) -> None:
        if os.geteuid() != 0:
            raise AssertionError("this test makes a network namespace and needs root (CI runs as root)")
        self.name = f"bh{secrets.token_hex(3)}"
        self.net = 100 + secrets.randbelow(150)  # 10.N.0.0/16, unlikely to clash with another test's
        self.links = links
        _ip("netns", "add", self.name)
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
            for i in range(links):
                host, inside = self._ends(i)
                _ip("link", "add", host, "type", "veth", "peer", "name", inside)
                _ip("link", "set", inside, "netns", self.name)
                _ip("addr", "add", f"{self.host_ip(i)}/24", "dev", host)
                _ip("link", "set", host, "up")
                _ip("-n", self.name, "addr", "add", f"10.{self.net}.{i}.2/24", "dev", inside)
                _ip("-n", self.name, "link", "set", inside, "up")
        except BaseException:
            self.close()
            raise

    def _ends(self, i: int) -> tuple[str, str]:
        return f"{self.name}h{i}", f"{self.name}n{i}"

    def host_ip(self, i: int) -> str:
        return f"10.{self.net}.{i}.1"

    @property
    def wrapper(self) -> list[str]:
        """The command prefix that runs a program in the namespace."""
        return ["ip", "netns", "exec", self.name]

    def cut(self, i: int) -> None:
        _ip("link", "set", self._ends(i)[0], "down")

    def heal(self, i: int) -> None:
        _ip("link", "set", self._ends(i)[0], "up")

    def close(self) -> None:
        """Remove the namespace; its veth pairs go with it."""
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
        for i in range(self.links):
            subprocess.run(["ip", "link", "del", self._ends(i)[0]], capture_output=True, check=False)
