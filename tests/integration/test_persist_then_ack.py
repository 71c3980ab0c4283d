"""Persist, then acknowledge, through real crashes (DESIGN invariants 1 and 3), with a job
that is NOT safe to repeat: a read-write SQL job whose statement inserts a row into a real
PostgreSQL table each time it runs, then returns its rows. The table is the witness of what
ran; a lost journal, an acknowledgement before the write, or a rerun shows there, whatever
our side answers.

Each crash is a SIGKILL the process sends itself at a named crash point
(``bridgehead.core.crash_points``), so it lands at the exact moment under test rather than
whenever a ``kill -9`` from outside happens to arrive. Each test first proves its premise:
the process died of SIGKILL at that point, and the job was not over when it did.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Callable, Iterator

import pytest
from bridgehead_testing.databases import PG, PG_WRITE_PROFILE, admin
from bridgehead_testing.harness import Agent, Api, ControlPlane, scaled, wait_connected

AgentFactory = Callable[..., Agent]
CRASH = "BRIDGEHEAD_CRASH_AT"

PROFILES = (
    PG_WRITE_PROFILE
    + """
# Small batches and a small window: records go out paced by the acknowledgements (the rest
# wait in the spool), so a job of a few thousand records sees many separate acks.
[limits]
batch_records = 100
window_records = 200
"""
)


@pytest.fixture
def runs_table() -> Iterator[str]:
    """A sequence the job's statement advances once each time it runs. A sequence, not a
    table: ``nextval`` is not undone when the run's transaction is rolled back (as it is when
    the agent dies mid-query), so it counts every run that started."""
    name = f"bh_runs_{secrets.token_hex(4)}"
    conn = admin(PG)
    conn.cursor().execute(f"CREATE SEQUENCE {name}")
    try:
        yield name
    finally:
        conn.cursor().execute(f"DROP SEQUENCE IF EXISTS {name}")
        conn.close()


def runs(sequence: str) -> int:
    conn = admin(PG)
    try:
        row = conn.cursor().execute(f"SELECT last_value, is_called FROM {sequence}").fetchone()  # noqa: S608
        return int(row[0]) if row[1] else 0
    finally:
        conn.close()


def once_query(sequence: str, rows: int) -> str:
    """Advance the sequence once (the run), then return ``rows`` rows numbered 1..rows. (A
    CTE with a volatile function is evaluated once, never inlined into the join.)"""
    run = f"WITH run AS (SELECT nextval('{sequence}') AS id) "
    return run + f"SELECT g AS n FROM generate_series(1, {rows}) AS g CROSS JOIN run ORDER BY g"  # noqa: S608


def submit_once(api: Api, table: str, rows: int) -> str:
    job = api.submit("sql", {"connection": "pg_write", "query": once_query(table, rows)}, max_attempts=3)
    return str(job["id"])


def numbers(api: Api, job_id: str) -> list[int]:
    return [int(r["n"]) for r in api.records(job_id)]


def crashed_at(proc_owner: Agent | ControlPlane, point: str) -> None:
    """The premise: the process died of SIGKILL, at ``point``."""
    assert proc_owner.proc is not None
    code = proc_owner.proc.wait(timeout=scaled(30))
    assert code == -signal.SIGKILL, f"exited {code}, not killed at {point}: {proc_owner.log_text()[-2000:]}"
    assert f"crash point {point}" in proc_owner.log_text()


def test_agent_killed_right_after_an_ack_fails_the_job_once_and_keeps_its_records(
    control: ControlPlane, agent_factory: AgentFactory, runs_table: str
) -> None:
    """The agent dies right after the control plane acknowledged records of a job not safe to
    repeat. Restarted, it reports the attempt lost: the job fails with ``agent_lost`` rather
    than running again (the table has one run), and keeps every acknowledged record, once."""
    agent = agent_factory(control, extra=PROFILES, env={CRASH: "agent.after_ack_received"})
    api = control.api()
    wait_connected(api, [agent.name])
    job_id = submit_once(api, runs_table, 200_000)
    crashed_at(agent, "agent.after_ack_received")
    before = api.job(job_id)
    assert (before["state"], runs(runs_table)) == ("running", 1), before
    acked = before["record_count"]
    assert acked >= 1

    agent.env = {k: v for k, v in agent.env.items() if k != CRASH}
    agent.start()
    done = api.wait_done(job_id, timeout=60)
    assert (done["state"], done["error"]["code"], done["attempt"]) == ("failed", "agent_lost", 1), done
    assert runs(runs_table) == 1, "the job ran again"
    kept = numbers(api, job_id)
    assert kept == list(range(1, len(kept) + 1)) and len(kept) >= acked, (len(kept), acked)


def test_agent_killed_before_reporting_completion_delivers_the_finished_job_once(
    control: ControlPlane, agent_factory: AgentFactory, runs_table: str
) -> None:
    """The agent dies after the job finished and its journal was made durable, before the
    completion left. Restarted, it re-sends what was not acknowledged and the completion from
    its journal: the job succeeds with every record once, and the statement ran once."""
    rows = 3_000
    agent = agent_factory(control, extra=PROFILES, env={CRASH: "agent.before_complete_sent"})
    api = control.api()
    wait_connected(api, [agent.name])
    job_id = submit_once(api, runs_table, rows)
    crashed_at(agent, "agent.before_complete_sent")
    assert (api.job(job_id)["state"], runs(runs_table)) == ("running", 1)

    agent.env = {k: v for k, v in agent.env.items() if k != CRASH}
    agent.start()
    done = api.wait_done(job_id, timeout=60)
    assert (done["state"], done["attempt"], done["record_count"]) == ("succeeded", 1, rows), done
    assert runs(runs_table) == 1, "the job ran again"
    assert numbers(api, job_id) == list(range(1, rows + 1))


def test_control_plane_killed_right_after_an_ack_loses_no_acknowledged_record(
    control_factory: Callable[..., ControlPlane], agent_factory: AgentFactory, runs_table: str
) -> None:
    """The control plane dies right after acknowledging a batch of records (its third ack),
    and restarts on the same data dir. The agent, which dropped what was acknowledged, resumes
    from the last acknowledged sequence: the job succeeds with every record once, in order,
    and the statement ran once."""
    rows = 3_000
    control = control_factory(heartbeat_s=1.0)
    agent = agent_factory(control, extra=PROFILES)
    api = control.api()
    wait_connected(api, [agent.name])
    # Restart with the crash point armed (the first start made the CA, tokens and the agent).
    control.stop()
    control.env = {**os.environ, CRASH: "control.after_ack_sent:3"}
    control.start()
    api = control.api()
    wait_connected(api, [agent.name])
    job_id = submit_once(api, runs_table, rows)
    crashed_at(control, "control.after_ack_sent")
    assert runs(runs_table) == 1

    control.env = None
    control.start()
    api = control.api()
    done = api.wait_done(job_id, timeout=60)
    assert (done["state"], done["attempt"], done["record_count"]) == ("succeeded", 1, rows), done
    assert runs(runs_table) == 1, "the job ran again"
    assert numbers(api, job_id) == list(range(1, rows + 1))
