"""A run that is not safe to repeat starts only once its acceptance is durable in the journal
(``Runner._run``, ``journaled_first``): a crash or power loss before that leaves a run that never
started, not one the agent forgot while the control plane offers it again. A run safe to
repeat starts at once. The journal is real (SQLite WAL); its flush is held by the test."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from bridgehead.agent.config import load_config
from bridgehead.agent.journal import Journal
from bridgehead.agent.runner import Runner
from bridgehead.agent.stream import SpoolBudget
from bridgehead.plugins.echo import EchoParams, EchoPlugin
from bridgehead.protocol import Accept, Offer
from bridgehead.sdk import JobContext, NoProfile


class Witness(EchoPlugin):
    """The echo plugin, declared not safe to repeat, noting when its run begins."""

    name = "witness"
    safe_to_repeat = False
    started: asyncio.Event

    async def run(self, ctx: JobContext[NoProfile], params: EchoParams) -> None:
        self.started.set()
        await super().run(ctx, params)


async def test_an_unsafe_run_waits_for_the_journal_flush_and_a_safe_one_does_not(tmp_path: Path) -> None:
    config_file = tmp_path / "agent.toml"
    config_file.write_text(
        f'[agent]\nname = "a1"\ndata_dir = "{tmp_path / "data"}"\n\n[control]\nurls = ["https://127.0.0.1:1"]\n'
    )
    config = load_config(config_file)
    (tmp_path / "data").mkdir()
    journal = Journal(tmp_path / "data" / "journal.db", durable=True)
    flush = threading.Event()
    flushing = threading.Event()
    assert journal._wal_sync is not None  # noqa: SLF001 - the test holds the real flush

    def held_flush(fd: int) -> None:
        flushing.set()
        flush.wait(10)

    journal._wal_sync._sync_data = held_flush  # noqa: SLF001
    unsafe, safe = Witness(), EchoPlugin()
    unsafe.started = asyncio.Event()
    runner = Runner(
        config,
        {"witness": unsafe, "echo": safe},
        {},
        journal,
        SpoolBudget(1 << 20),
        wake=lambda: None,
        on_slot_freed=lambda _attempt: None,
    )
    offer = Offer(job_id="j1", attempt=1, plugin="witness", params={"records": [{"n": 1}]}, timeout_s=30, agent="a1")
    accepted = runner.admit(offer)
    assert isinstance(accepted, Accept) and accepted.safe_to_repeat is False
    await asyncio.to_thread(flushing.wait, 5)  # the run asked for the flush ...
    await asyncio.sleep(0.2)
    assert not unsafe.started.is_set()  # ... and has not begun while it is held
    # A safe job admitted meanwhile runs to its end without waiting for the disk.
    safe_offer = Offer(job_id="j2", attempt=1, plugin="echo", params={"records": [{"n": 2}]}, timeout_s=30, agent="a1")
    assert isinstance(runner.admit(safe_offer), Accept)
    safe_task = runner.attempts[("j2", 1)].task
    assert safe_task is not None
    await asyncio.wait_for(asyncio.shield(safe_task), 5)
    assert not unsafe.started.is_set()
    flush.set()
    await asyncio.wait_for(unsafe.started.wait(), 5)  # the flush done, the unsafe run begins
    # What it waited for is on disk: the job is in the journal, read by another connection.
    reader = sqlite3.connect(tmp_path / "data" / "journal.db")
    try:
        assert ("j1", 1) in set(reader.execute("SELECT job_id, attempt FROM jobs").fetchall())
    finally:
        reader.close()
    unsafe_task = runner.attempts[("j1", 1)].task
    assert unsafe_task is not None
    await asyncio.wait_for(asyncio.shield(unsafe_task), 5)
    journal.close()
