"""PostgreSQL going away is survived (issue 19): a control plane on a PostgreSQL server of the
test's own (``pg_server``; the shared server other tests use is never stopped), real agents, and
a stream of jobs that are NOT safe to repeat: each one's statement inserts a row, tagged with
the job's idempotency key, into a table of this test's own on the shared PostgreSQL server,
then returns a few rows. That table is the witness of what ran, whatever our side answers.

The store's server is stopped for 10 s mid-run and started again (or killed, and its
synchronous standby promoted in its place: a failover). The node stops answering (it
acknowledges nothing it cannot persist), waits for the database, and re-executes itself (same
pid); the agents back off, reconnect and re-send what was not acknowledged; the submitter
retries with its idempotency keys. Then every job has ended once, its records are visible once,
and its statement ran once. Nobody restarted anything but the database.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable, Iterator

import asyncpg
import pytest
from bridgehead_testing.databases import PG, PG_WRITE_PROFILE, admin
from bridgehead_testing.harness import Agent, Api, ControlPlane, scaled, urlopen, wait_connected, wait_until
from bridgehead_testing.pg_server import PgServer

AgentFactory = Callable[..., Agent]

ROWS = 20  # records per job
JOBS = 40
OUTAGE_S = 10.0

PROFILES = PG_WRITE_PROFILE


@pytest.fixture
def store_server() -> Iterator[PgServer]:
    """The control plane's PostgreSQL, to stop at will, with a database ``bh`` for the store."""
    with PgServer() as pg:
        pg.start()
        _execute(pg, "CREATE DATABASE bh")
        yield pg


def _execute(pg: PgServer, sql: str) -> None:
    _fetch(pg, sql)


def _fetch(pg: PgServer, sql: str) -> object:
    async def run() -> object:
        conn = await asyncpg.connect(pg.url(), timeout=10)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture
def witness() -> Iterator[str]:
    """A table on the shared server: one row per run of a job's statement."""
    name = f"bh_outage_{secrets.token_hex(4)}"
    conn = admin(PG)
    conn.cursor().execute(f"CREATE TABLE {name} (id serial PRIMARY KEY, tag text NOT NULL)")
    try:
        yield name
    finally:
        conn.cursor().execute(f"DROP TABLE IF EXISTS {name}")
        conn.close()


def runs_by_tag(table: str) -> dict[str, int]:
    conn = admin(PG)
    try:
        rows = conn.cursor().execute(f"SELECT tag, count(*) FROM {table} GROUP BY tag").fetchall()  # noqa: S608
        return {str(tag): int(count) for tag, count in rows}
    finally:
        conn.close()


def statement(table: str, tag: str) -> str:
    """Insert the run's row, take a moment (so that jobs are running when the store goes),
    then return ROWS rows. The insert is committed after the rows were sent (the plugin's
    read-write mode), so a row means a run that finished."""
    # (Our own table and tag, not input: the S608s are for queries built from input.)
    run = f"WITH run AS (INSERT INTO {table} (tag) VALUES ('{tag}') RETURNING id), "  # noqa: S608
    pause = "pause AS (SELECT pg_sleep(0.3)) "
    rows = f"SELECT g AS n FROM generate_series(1, {ROWS}) AS g CROSS JOIN run CROSS JOIN pause ORDER BY g"  # noqa: S608
    return run + pause + rows


def store_config(pg: PgServer) -> str:
    return f'[store]\nbackend = "postgresql"\ndatabase = "{pg.url("bh")}"\n'


class Submitter(threading.Thread):
    """Submits the stream, one job every ``interval_s``, each under its idempotency key and
    retried until the control plane takes it (it refuses connections while it recovers)."""

    def __init__(self, api: Api, table: str, count: int, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.table = table
        self.count = count
        self.interval_s = interval_s
        self.jobs: dict[str, str] = {}  # tag (= idempotency key) -> job id
        self.retries = 0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(self.count):
                tag = f"{self.table}-{i}"
                self.jobs[tag] = self._submit(tag)
                time.sleep(self.interval_s)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failure = exc

    def _submit(self, tag: str) -> str:
        body = {
            "plugin": "sql",
            "params": {"connection": "pg_write", "query": statement(self.table, tag)},
            "idempotency_key": tag,
            "max_attempts": 3,  # the policy still never repeats a run not safe to repeat
        }
        deadline = time.monotonic() + scaled(120)
        while True:
            try:
                status, answer = self.api.request("POST", "/api/v1/jobs", body)
            except OSError:  # refused or cut while the node recovers
                status, answer = 0, None
            if status in (200, 201):
                return str(answer["id"])
            if time.monotonic() > deadline:
                raise AssertionError(f"{tag} not taken in time: {status} {answer}")
            self.retries += 1
            time.sleep(0.2)


def through_an_outage(
    control: ControlPlane, agent_factory: AgentFactory, witness: str, outage: Callable[[], None]
) -> None:
    """Two agents and the stream of jobs; ``outage()`` mid-run; then nothing lost or doubled,
    and the node serving again by itself, in the same process (it re-executed itself)."""
    pid = control.proc.pid if control.proc else 0
    agents = [agent_factory(control, name=f"agent-{i}", extra=PROFILES, max_concurrent_jobs=4) for i in (1, 2)]
    api = control.api()
    wait_connected(api, [a.name for a in agents])

    submitter = Submitter(api, witness, JOBS, interval_s=0.4)
    submitter.start()
    # Mid-run: some jobs done, some running, more to come.
    wait_until(lambda: len(runs_by_tag(witness)) >= 5, 60, "the first jobs to run")
    outage()

    submitter.join(timeout=scaled(180))
    assert submitter.failure is None, submitter.failure
    assert len(submitter.jobs) == JOBS
    assert submitter.retries > 0, "the outage was not seen by the submitter"
    api = control.api()
    done = {tag: api.wait_done(job_id, timeout=120) for tag, job_id in submitter.jobs.items()}

    # The node came back by itself: same process (execv), serving.
    assert control.proc is not None and control.proc.poll() is None and control.proc.pid == pid
    assert "restarting (exec" in control.log_text()
    # One job per idempotency key, and every job ended.
    assert len(set(submitter.jobs.values())) == JOBS
    ran = runs_by_tag(witness)
    for tag, job in done.items():
        if job["state"] == "succeeded":
            # Its statement ran once, its records are there once, in order.
            assert (1, 1) == (ran.get(tag, 0), job["attempt"]), (tag, job, ran.get(tag))
            assert list(range(1, ROWS + 1)) == [int(r["n"]) for r in api.records(job["id"])], tag
        else:
            # Only a run the policy would not repeat may end failed, and it says why.
            assert job["state"] == "failed" and job["error"]["code"] == "agent_lost", job
            assert ran.get(tag, 0) <= 1, (tag, job)
    assert set(ran) <= set(done), "a statement ran for a job nobody submitted"
    succeeded = sum(job["state"] == "succeeded" for job in done.values())
    assert succeeded >= JOBS - 8, f"only {succeeded} of {JOBS} succeeded: {done}"


def waiting(control: ControlPlane, what: str = "is not usable") -> None:
    """The node noticed (its next write failed) and waits, serving nothing: it acknowledges
    nothing it could not persist."""
    wait_until(lambda: what in control.log_text(), 15, f"the node to log {what!r}")


def test_postgresql_stopped_for_10_s_mid_run_loses_and_doubles_nothing(
    store_server: PgServer,
    control_factory: Callable[..., ControlPlane],
    agent_factory: AgentFactory,
    witness: str,
) -> None:
    control = control_factory(heartbeat_s=1.0, extra_config=store_config(store_server))

    def outage() -> None:
        store_server.stop()
        down_at = time.monotonic()
        waiting(control)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        store_server.start()

    through_an_outage(control, agent_factory, witness, outage)


def test_a_failover_to_a_synchronous_standby_loses_and_doubles_nothing(
    store_server: PgServer,
    control_factory: Callable[..., ControlPlane],
    agent_factory: AgentFactory,
    witness: str,
) -> None:
    """The primary is killed; its synchronous standby (every commit the node waited for is on
    it too) takes its address, and the node waits while it is still read-only, until it is
    promoted: the failover as a cluster manager (Patroni, a floating address) does it."""
    with PgServer(replica_of=store_server) as standby:
        standby.start()
        _execute(store_server, "ALTER SYSTEM SET synchronous_standby_names = '*'")
        _execute(store_server, "SELECT pg_reload_conf()")
        wait_until(
            lambda: _fetch(store_server, "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"),
            30,
            "the standby to be synchronous",
        )
        control = control_factory(heartbeat_s=1.0, extra_config=store_config(store_server))

        def failover() -> None:
            store_server.kill9()
            waiting(control)
            standby.stop()
            standby.move_to(store_server.port)
            standby.start()
            waiting(control, "read-only standby")
            standby.promote()

        through_an_outage(control, agent_factory, witness, failover)


def test_a_node_started_while_postgresql_is_down_comes_up_once_it_is_up(
    store_server: PgServer, control_factory: Callable[..., ControlPlane], agent_factory: AgentFactory
) -> None:
    """It waits (one log line per attempt), neither exiting nor listening, and serves once the
    database answers: no supervisor and no human needed."""
    control = control_factory(heartbeat_s=1.0, extra_config=store_config(store_server))
    agent = agent_factory(control)
    control.stop()
    store_server.stop()

    starting = threading.Thread(target=control.start, daemon=True)
    starting.start()
    wait_until(lambda: control.log_text().count("is not usable") >= 3, 30, "three attempts logged")
    assert control.proc is not None and control.proc.poll() is None, "it gave up"
    with pytest.raises(OSError):  # not even listening while it cannot answer
        urlopen(control.url + "/healthz", timeout=1)
    store_server.start()
    starting.join(timeout=scaled(60))
    assert not starting.is_alive()
    api = control.api()
    wait_connected(api, [agent.name])
    job = api.submit("echo", {"count": 3})
    assert ("succeeded", 3) == (lambda d: (d["state"], d["record_count"]))(api.wait_done(job["id"]))


def test_sigterm_ends_the_wait_for_postgresql(
    store_server: PgServer, control_factory: Callable[..., ControlPlane]
) -> None:
    """A node waiting for its database after a failed write still stops when told to, as if
    killed by the signal (a clean stop to systemd), within a second or so."""
    control = control_factory(heartbeat_s=1.0, extra_config=store_config(store_server))
    store_server.stop()
    wait_until(lambda: "is not usable" in control.log_text(), 15, "the node to wait for PostgreSQL")
    assert control.proc is not None
    started = time.monotonic()
    control.proc.terminate()
    assert -15 == control.proc.wait(timeout=scaled(10))
    assert time.monotonic() - started < scaled(3)
    assert "stopped (signal 15) while waiting for PostgreSQL" in control.log_text()


def test_database_wait_bounds_the_wait_and_then_it_fails_stop_with_70(
    store_server: PgServer, control_factory: Callable[..., ControlPlane]
) -> None:
    """``--database-wait 2``: for whoever prefers the service manager to restart the node."""
    control = control_factory(heartbeat_s=1.0, extra_config=store_config(store_server))
    control.stop()
    control.serve_args = ["--database-wait", "2"]
    control.start()
    store_server.stop()
    assert control.proc is not None
    assert 70 == control.proc.wait(timeout=scaled(20))
    assert "--database-wait is over" in control.log_text()
