"""The journal keeps what the plugin said of each attempt at admission (safe to repeat or
not), so that after a restart the hello can say it of an attempt whose accept may never have
reached the control plane (``HeldJob.safe_to_repeat``; tests/unit/dispatch/test_dispatcher_held.py
shows what the control plane does with it)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bridgehead.agent.journal import Journal


def test_the_flag_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = Journal(path, durable=False)
    journal.add_job("safe", 1, "echo", 1.0, True)
    journal.add_job("unsafe", 1, "ssh", 2.0, False)
    journal.close()
    reopened = Journal(path, durable=False)
    try:
        assert {j.job_id: j.safe_to_repeat for j in reopened.jobs()} == {"safe": True, "unsafe": False}
    finally:
        reopened.close()


def test_a_journal_from_before_the_flag_says_it_is_not_known(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE jobs (job_id TEXT NOT NULL, attempt INTEGER NOT NULL, plugin TEXT NOT NULL,"
        " state TEXT NOT NULL, status TEXT, error BLOB, sync_state BLOB, next_seq INTEGER NOT NULL DEFAULT 1,"
        " accepted_at REAL NOT NULL, PRIMARY KEY (job_id, attempt));"
        "INSERT INTO jobs (job_id, attempt, plugin, state, accepted_at) VALUES ('old', 1, 'ssh', 'running', 1.0);"
    )
    old.commit()
    old.close()
    journal = Journal(path, durable=False)
    try:
        (job,) = journal.jobs()
        assert (job.job_id, job.state, job.safe_to_repeat) == ("old", "running", None)
    finally:
        journal.close()
