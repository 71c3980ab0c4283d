"""Running checks: chains of dependent steps, every step under the same timeout, every chain
at once.

A chain is what must happen in order (resolve a name, then connect, then shake hands); a
failed step ends the chain, and the steps after it are reported as skipped with the reason
(but for those marked ``always``, which do not depend on it). Independent chains (each control URL, each connection
profile, the data_dir) run concurrently, so the whole run takes about as long as its slowest
chain, and no step can take longer than the timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bridgehead.agent.doctor.findings import Finding, Result, Row, fail, skip

log = logging.getLogger("bridgehead.agent.doctor")


@dataclass(frozen=True)
class Step:
    check: str  # the name in the table's first column
    run: Callable[[], Awaitable[Finding]]
    # True: runs even after an earlier step failed (it does not depend on that one); its own
    # failure still stops the steps after it.
    always: bool = False
    # What to do when the step does not answer in time.
    on_timeout: str = "find out why it does not answer (a firewall that drops packets?), or raise --timeout"


@dataclass
class Chain:
    steps: list[Step]
    # Called once the chain is done, whatever happened (closing a connection the steps shared).
    cleanup: Callable[[], Awaitable[None]] | None = None
    rows: list[Row] = field(default_factory=list)


class ConnectionProbe(Protocol):
    """A connection profile's checks, in the order they depend on each other."""

    name: str

    async def driver(self) -> Finding: ...

    async def reach(self) -> Finding: ...

    async def login(self) -> Finding: ...


def connection_chain(probe: ConnectionProbe, cleanup: Callable[[], Awaitable[None]] | None = None) -> Chain:
    """driver, then reach (run even when the driver is missing: it says whether the server is
    up at all), then login."""
    label = f"connection {probe.name}"
    return Chain(
        [
            Step(f"{label} driver", probe.driver),
            Step(f"{label} reach", probe.reach, always=True),
            Step(f"{label} login", probe.login),
        ],
        cleanup=cleanup,
    )


def constant(finding: Finding) -> Callable[[], Awaitable[Finding]]:
    """A step whose finding is known already (a configuration fault found while building it)."""

    async def found() -> Finding:
        return finding

    return found


async def run_step(step: Step, timeout_s: float) -> Row:
    try:
        async with asyncio.timeout(timeout_s):
            finding = await step.run()
    except TimeoutError:
        finding = fail(f"no answer within {timeout_s:g} s", step.on_timeout)
    except Exception as exc:  # noqa: BLE001 - a bug in one check must not hide the other checks' results
        log.debug("check %s raised", step.check, exc_info=True)
        finding = fail(f"the check itself failed: {type(exc).__name__}: {exc}", "report this as a bug in doctor")
    return Row.of(step.check, finding)


async def run_chain(chain: Chain, timeout_s: float) -> list[Row]:
    blocked_by = ""
    try:
        for step in chain.steps:
            if blocked_by and not step.always:
                chain.rows.append(Row.of(step.check, skip(f"not checked: {blocked_by} failed")))
                continue
            row = await run_step(step, timeout_s)
            chain.rows.append(row)
            if row.result is Result.FAIL and not blocked_by:
                blocked_by = step.check
    finally:
        if chain.cleanup is not None:
            try:
                async with asyncio.timeout(timeout_s):
                    await chain.cleanup()
            except Exception:  # noqa: BLE001 - closing what a check opened: nothing left to report
                log.debug("cleaning up after %s", chain.steps[0].check if chain.steps else "a chain", exc_info=True)
    return chain.rows


async def run_chains(chains: Sequence[Chain], timeout_s: float) -> list[Row]:
    """Every chain at once; the rows in the order the chains were given."""
    results = await asyncio.gather(*(run_chain(chain, timeout_s) for chain in chains))
    return [row for rows in results for row in rows]
