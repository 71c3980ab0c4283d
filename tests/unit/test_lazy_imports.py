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
import bridgehead.agent.service
from bridgehead.agent.plugin_loader import load_plugins
plugins = load_plugins()
print(json.dumps({"plugins": sorted(plugins), "loaded": [m for m in HEAVY if m in sys.modules]}))
"""


def test_loading_the_plugins_imports_no_client_library() -> None:
    """The agent's own loader instantiates every built-in without importing a client library."""
    done = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{PROBE}"], capture_output=True, text=True, check=True, timeout=60
    )
    result = json.loads(done.stdout)
    assert {"echo", "rest", "sql", "ldap", "ssh", "powershell"} <= set(result["plugins"])
    assert [] == result["loaded"]
