"""Control-plane nodes started one after another on one database, for the tests of deliveries
and schedules across nodes.

The first node publishes its identity (CA and signing keys) in the database; each later one
gets the first's files copied into its data dir before it starts (the way docs/operations.md
gives for adding a node), so no start races the identity: the harness's ``ca-cert`` call,
made while a node starts, would otherwise make a CA of its own in an empty data dir."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from bridgehead_testing.harness import ControlPlane

# What a node's identity is made of, relative to its data dir.
IDENTITY_FILES = ("tls/ca.key", "tls/ca.pem")
IDENTITY_DIRS = ("signing",)


class NodeGroup:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[ControlPlane] = []

    def start(self, **kwargs: Any) -> ControlPlane:
        """A node more (``kwargs``: as ``ControlPlane``'s, its ``[store]`` in ``extra_config``)."""
        workdir = self.root / f"node-{len(self.nodes)}"
        workdir.mkdir(parents=True)
        node = ControlPlane(workdir, **kwargs)
        if self.nodes:
            first = self.nodes[0].data_dir
            for name in IDENTITY_FILES:
                (node.data_dir / name).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                shutil.copy2(first / name, node.data_dir / name)
            for name in IDENTITY_DIRS:
                shutil.copytree(first / name, node.data_dir / name)
        self.nodes.append(node)  # before start: a start that fails half-way still gets stopped
        return node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
