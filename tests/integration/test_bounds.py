"""Bounded everything (DESIGN invariant 7), where the other suites leave a bound unobserved:
the ssh plugin runs at most ``max_sessions`` commands on one host at once.

(The server's own MaxSessions is no witness: the plugin waits out its refusals, so only what
the commands themselves see shows the bound.)
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bridgehead_testing.harness import scaled
from bridgehead_testing.sshd import Sshd, TestUser, make_client_key

from bridgehead.plugins.ssh import SshPlugin
from bridgehead.sdk import Credential
from bridgehead.sdk.testing import run_plugin


async def test_ssh_runs_at_most_max_sessions_commands_on_a_host_at_once(
    sshd: Sshd, test_user: TestUser, tmp_path: Path
) -> None:
    """Six commands at once with max_sessions = 2: each marks itself running in a shared
    directory, waits, and counts the marks; no command ever sees more than two."""
    private, public = make_client_key(tmp_path / "id_ed25519")
    sshd.add_authorized_key(test_user.name, public)
    # The test user (not us) runs the commands: a directory it may write, under /tmp.
    active = Path(tempfile.mkdtemp(prefix=f"bh-active-{uuid.uuid4().hex[:6]}-"))
    active.chmod(0o777)
    profile: dict[str, Any] = {
        "host": sshd.host,
        "port": sshd.port,
        "host_key": sshd.host_key_fingerprint(),
        "credential": "c",
        "allow_shell": True,
        "max_sessions": 2,
    }
    # Long enough that commands holding a session at once overlap on a loaded machine.
    command = f"touch {active}/$$; sleep {scaled(0.5):g}; ls {active} | wc -l; rm {active}/$$"
    plugin = SshPlugin()
    try:
        key = Credential(username=test_user.name, private_key_file=str(private))
        runs = [
            run_plugin(plugin, {"connection": "box", "command": command}, profile=profile, credential=key)
            for _ in range(6)
        ]
        results = await asyncio.gather(*runs)
    finally:
        await plugin.aclose()
        for leftover in active.iterdir():
            leftover.unlink()
        active.rmdir()
    seen = [int(records[0]["stdout"]) for records in results]
    # Premise: commands did run side by side (so a third would have been seen).
    assert 2 == max(seen), seen
