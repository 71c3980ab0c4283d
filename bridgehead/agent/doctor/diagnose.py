"""The order of the checks: the config first (everything else reads it), then the identity
and data_dir, then, all at once, each control URL and each connection profile."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridgehead.agent.config import LimitsSection
from bridgehead.agent.doctor.config_check import ConfigCheck
from bridgehead.agent.doctor.control import ControlUrl
from bridgehead.agent.doctor.disk_check import check_data_dir
from bridgehead.agent.doctor.findings import Row, skip
from bridgehead.agent.doctor.identity_check import IdentityCheck
from bridgehead.agent.doctor.profiles import profile_chain
from bridgehead.agent.doctor.runner import Chain, Step, run_chains, run_step
from bridgehead.agent.doctor.threads import in_thread


async def diagnose(config_path: str, timeout_s: float) -> list[Row]:
    config = ConfigCheck(config_path)
    rows = [await run_step(Step("config", lambda: in_thread(config.check)), timeout_s)]
    try:
        agent = await asyncio.wait_for(in_thread(config.agent_section), timeout_s)
    except TimeoutError:
        agent = None
    if agent is None:
        why = skip("not checked: the config's [agent] table did not load")
        return rows + [Row.of(name, why) for name in ("identity", "certificate", "data_dir", "control", "connections")]

    identity = IdentityCheck(agent)
    limits = config.loaded.config.limits if config.loaded is not None else LimitsSection()
    rows += await run_chains(
        [
            Chain(
                [
                    Step("identity", lambda: in_thread(identity.check_identity)),
                    Step("certificate", lambda: in_thread(identity.check_certificate)),
                ]
            ),
            Chain([Step("data_dir", lambda: in_thread(check_data_dir, Path(agent.data_dir), limits.spool_max_bytes))]),
        ],
        timeout_s,
    )
    if config.loaded is None:
        why = skip("not checked: the config did not load")
        return rows + [Row.of(name, why) for name in ("control", "connections")]

    loaded = config.loaded.config
    chains = [ControlUrl(loaded, url, identity.identity).chain() for url in loaded.control.all_urls]
    chains += [profile_chain(loaded, name, profile, timeout_s) for name, profile in config.loaded.profiles.items()]
    return rows + await run_chains(chains, timeout_s)
