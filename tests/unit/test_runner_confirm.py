"""A run not safe to repeat, offered with ``confirm_follows`` (sent at the control plane's
commit, before its flush), starts only once ``confirmed``: else a power loss on the control
plane could forget an attempt that already ran and offer the job again. A run safe to repeat
starts at once, and a cancel reaches a run still waiting. The journal is real (SQLite WAL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

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

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def run(self, ctx: JobContext[NoProfile], params: EchoParams) -> None:
        self.started.set()
        await super().run(ctx, params)


class Counted(EchoPlugin):
    """The echo plugin (safe to repeat), noting when its run begins."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def run(self, ctx: JobContext[NoProfile], params: EchoParams) -> None:
        self.started.set()
        await super().run(ctx, params)


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[Runner]:
    config_file = tmp_path / "agent.toml"
    config_file.write_text(
        f'[agent]\nname = "a1"\ndata_dir = "{tmp_path / "data"}"\n\n[control]\nurls = ["https://127.0.0.1:1"]\n'
    )
    (tmp_path / "data").mkdir()
    journal = Journal(tmp_path / "data" / "journal.db", durable=True)
    runner = Runner(
        load_config(config_file),
        {"witness": Witness(), "echo": Counted()},
        {},
        journal,
        SpoolBudget(1 << 20),
        wake=lambda: None,
        on_slot_freed=lambda _attempt: None,
    )
    yield runner
    await runner.stop_all("shutdown")
    journal.close()


def offer(job_id: str, plugin: str, confirm_follows: bool = True) -> Offer:
    return Offer(
        job_id=job_id,
        attempt=1,
        plugin=plugin,
        params={"records": [{"n": 1}]},
        timeout_s=30,
        agent="a1",
        confirm_follows=confirm_follows,
    )


def started(runner: Runner, plugin: str) -> asyncio.Event:
    event = runner.plugins[plugin].started  # type: ignore[union-attr]
    assert isinstance(event, asyncio.Event)
    return event


async def test_an_unsafe_run_waits_for_the_confirm(runner: Runner) -> None:
    accepted = runner.admit(offer("j1", "witness"))
    assert isinstance(accepted, Accept) and accepted.safe_to_repeat is False
    attempt = runner.attempts[("j1", 1)]
    await runner.journal.make_durable()  # premise: what the run waits for first is done ...
    await asyncio.sleep(0.2)
    assert not started(runner, "witness").is_set(), "a run not safe to repeat began before its confirm"
    assert attempt.task is not None and not attempt.task.done()
    attempt.confirmed.set()  # what the agent does on Confirm, or on a welcome that continues it
    await asyncio.wait_for(started(runner, "witness").wait(), 5)
    await asyncio.wait_for(asyncio.shield(attempt.task), 5)
    assert attempt.stream.completion is not None and attempt.stream.completion.status == "succeeded"


async def test_a_safe_run_starts_without_a_confirm(runner: Runner) -> None:
    accepted = runner.admit(offer("j2", "echo"))
    assert isinstance(accepted, Accept) and accepted.safe_to_repeat is True
    await asyncio.wait_for(started(runner, "echo").wait(), 5)
    assert not runner.attempts[("j2", 1)].confirmed.is_set()  # premise: none came


async def test_an_offer_without_the_flag_is_confirmed_by_itself(runner: Runner) -> None:
    runner.admit(offer("j3", "witness", confirm_follows=False))
    await asyncio.wait_for(started(runner, "witness").wait(), 5)


async def test_a_cancel_reaches_a_run_waiting_for_its_confirm(runner: Runner) -> None:
    runner.admit(offer("j4", "witness"))
    attempt = runner.attempts[("j4", 1)]
    await asyncio.sleep(0.1)
    runner.cancel(("j4", 1), "cancel")
    assert attempt.task is not None
    await asyncio.wait_for(asyncio.shield(attempt.task), 5)
    assert not started(runner, "witness").is_set()
    assert attempt.stream.completion is not None and attempt.stream.completion.status == "cancelled"
