"""A node's name: stable for its data dir, so a node that restarts takes back what it held
(its running attempts, its deliveries) instead of waiting for another to declare it dead."""

from __future__ import annotations

import re
import secrets
import socket
from pathlib import Path

from bridgehead.core.files import write_private

NODE_ID_FILE = "node-id"
_VALID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def node_id(data_dir: Path) -> str:
    """``HOST-XXXXXX``, made on first start and kept in ``DIR/node-id``."""
    path = data_dir / NODE_ID_FILE
    try:
        found = path.read_text().strip()
    except FileNotFoundError:
        found = ""
    if _VALID.match(found):
        return found
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:48] or "node"
    made = f"{host}-{secrets.token_hex(3)}"
    write_private(path, made.encode())
    return made
