"""A ``powershell`` profile, by its transport: over SSH exactly as an ``ssh`` profile; over
PSRP (WinRM) the port only, since a WinRM login needs a Windows host this cannot test here;
locally, the PowerShell executable is on PATH."""

from __future__ import annotations

import shutil

from bridgehead.agent.doctor.findings import Finding, fail, ok, skip
from bridgehead.agent.doctor.probe_ssh import SshProbe
from bridgehead.agent.doctor.reach import reach_all
from bridgehead.agent.doctor.runner import Chain, Step, constant
from bridgehead.plugins.powershell.params import PowershellProfile
from bridgehead.sdk import Credential


def powershell_chain(name: str, profile: PowershellProfile, credential: Credential | None, timeout_s: float) -> Chain:
    label = f"connection {name}"
    if profile.transport == "ssh":
        return SshProbe(name, profile, credential, timeout_s).chain()
    if profile.transport == "local":
        return Chain([Step(f"{label} driver", constant(_local_executable(profile.executable)))])
    targets = [(host, profile.winrm_port()) for host in ([profile.host] if profile.host else [])]

    async def reach() -> Finding:
        if not targets:
            return skip("each job names its host (hosts = [...]): no single host to check")
        return await reach_all(targets)

    return Chain(
        [
            Step(f"{label} reach", reach),
            Step(f"{label} login", constant(skip("a WinRM login is not checked by doctor: run a job to check it"))),
        ]
    )


def _local_executable(executable: str) -> Finding:
    found = shutil.which(executable)
    if found is None:
        return fail(f"{executable} is not on PATH", "install PowerShell 7 (pwsh), or set executable to its path")
    return ok(f"{executable} is {found}")
