"""The README's first command: the demo runs every kind of job and stops cleanly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bridgehead_testing.harness import scaled

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_runs_rest_sql_and_ldap_jobs_and_stops_cleanly() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=scaled(180),
        cwd=ROOT,
    )
    out = done.stdout
    assert 0 == done.returncode, out[-3000:] + done.stderr[-3000:]
    blocks = {block.split("\n", 1)[0]: block for block in out.split("\n▶ ")[1:]}
    assert len(blocks) == 14, list(blocks)

    def state(prefix: str) -> str:
        (block,) = [b for title, b in blocks.items() if title.startswith(prefix)]
        return block.split("\n")[1]

    assert "state=succeeded" in state("All users")
    assert "state=succeeded" in state("SQL: all 5,000 rows") and "records=5000" in state("SQL: all 5,000 rows")
    assert "state=failed" in state("SQL: a write on the read-only profile")
    assert "records=40" in state("LDAP over LDAPS")
    assert "records=40" in state("LDAP sync, first run")
    assert "records=2" in state("LDAP sync, next run")
    assert "sync=done: inserted=5000 updated=0 ignored=0 errors=0" in state("ServiceNow: HR staff")
    assert "sync=done: inserted=0 updated=0 ignored=5000 errors=0" in state("ServiceNow: the same import again")
    assert "sync=done: inserted=39 " in state("ServiceNow: directory users")
    # The records are shown as the sandbox holds them, each with the sys_id it gave.
    assert 10 == len(re.findall(r"sys_id=[0-9a-f]{32}", out)), out[-3000:]
    assert "All stopped cleanly" in out
