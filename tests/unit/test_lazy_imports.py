"""Loading every built-in plugin, as an agent does at start, imports none of their client
libraries: they come with a plugin's first job. That keeps an idle agent within the memory
goal of DESIGN.md (bench/idle_rss.py measures it; each library is several MB)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("paramiko", "ldap3", "pyodbc", "pypsrp", "aiohttp", "requests")

PROBE = """
import json, sys
from importlib.metadata import entry_points
import bridgehead.agent.service
plugins = {ep.name: ep.load() for ep in entry_points(group="bridgehead.plugins")}
print(json.dumps({"plugins": sorted(plugins), "loaded": [m for m in HEAVY if m in sys.modules]}))
"""


def test_loading_the_plugins_imports_no_client_library() -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{PROBE}"], capture_output=True, text=True, check=True, timeout=60
    )
    result = json.loads(done.stdout)
    assert {"echo", "rest", "sql", "ldap", "ssh", "powershell"} <= set(result["plugins"])
    assert [] == result["loaded"]
