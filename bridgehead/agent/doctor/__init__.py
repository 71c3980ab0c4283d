"""``bridgehead-agent doctor``: is this agent able to work, and if not, what to fix.

    config       read exactly as ``run`` reads it (config_check)
    identity     enrolled, complete, readable, the configured name (identity_check)
    certificate  the client certificate's window
    data_dir     there, the user's own, private, writable, with room (disk_check)
    control ...  per control URL: dns, tcp or proxy, tls, clock (control, http_head)
    connection   per profile: driver, reach, login (profiles, reach, probe_*)

diagnose puts them in order. Each check runs under one timeout; independent checks run at
once (runner), blocking calls in daemon threads that cannot delay the exit (threads). The
rows come out as a table with advice under each failure, or as JSON (table); the exit code
is 1 if any check failed, else 0. Every text is passed through the secret redactor (findings).
"""

from __future__ import annotations

import asyncio

from bridgehead.agent.doctor.diagnose import diagnose
from bridgehead.agent.doctor.findings import Result, Row
from bridgehead.agent.doctor.table import exit_code, render_json, render_table
from bridgehead.core.eventloop import loop_factory

DEFAULT_TIMEOUT_S = 5.0

__all__ = ["DEFAULT_TIMEOUT_S", "Result", "Row", "diagnose", "run_doctor"]


def run_doctor(config_path: str, timeout_s: float = DEFAULT_TIMEOUT_S, as_json: bool = False) -> int:
    """Run every check, print the rows, and return the exit code."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        rows = runner.run(diagnose(config_path, timeout_s))
    print(render_json(rows) if as_json else render_table(rows), flush=True)
    return exit_code(rows)
