"""``PowershellPlugin``: a PowerShell script on a host or on the agent's own machine.

Three transports, chosen by the profile (docs/plugins/powershell.md):

- ``ssh`` (default): PowerShell 7 over SSH, as ``pwsh -NoProfile -NonInteractive
  -EncodedCommand <base64>`` (base64 of the UTF-16LE text: any script, no shell quoting).
  Everything about the connection (host keys, credentials, jump hosts, warm transports,
  timeouts that TERM then KILL the remote process) is the ssh plugin's, whose profile keys
  this plugin's profile shares. Tested for real through sshd with a stand-in interpreter.
- ``psrp``: WinRM / PowerShell Remoting with pypsrp (bridgehead/plugins/powershell/psrp.py).
  UNVERIFIED against a real WinRM server (none can run here).
- ``local``: a child process on the agent's machine (bridgehead/plugins/powershell/local.py). Tested for
  real with a stand-in interpreter; its Windows-only parts are UNVERIFIED.

Records, whatever the transport: with ``"output": "text"`` the ssh plugin's (``exit_code``,
``stdout``, ``stderr``, streamed in chunks when large); with ``"output": "json"`` the script
runs inside ``ConvertTo-Json -InputObject @(& { ... })`` and each element of the array
becomes one record (objects as they are, other values as ``{"value": ...}``).
"""

from __future__ import annotations

from typing import Any

from bridgehead.core.errors import InvalidParams, PolicyDenied
from bridgehead.plugins.powershell.json_output import JsonOutput
from bridgehead.plugins.powershell.local import LocalScripts
from bridgehead.plugins.powershell.params import PowershellParams, PowershellProfile, encoded_command
from bridgehead.plugins.powershell.psrp import PsrpSessions
from bridgehead.plugins.ssh.output import CommandOutput
from bridgehead.plugins.ssh.params import SshParams, SshProfile
from bridgehead.plugins.ssh.plugin import SshPlugin
from bridgehead.sdk import JobContext


class PowershellPlugin(SshPlugin):
    name = "powershell"
    version = "2"
    params_type = PowershellParams  # type: ignore[assignment]
    profile_type = PowershellProfile

    def __init__(self) -> None:
        super().__init__()
        self.local = LocalScripts()
        self.psrp = PsrpSessions(self._executor)

    def check_policy(self, profile: SshProfile, params: Any) -> None:
        if not isinstance(params, PowershellParams):
            raise InvalidParams("powershell params expected")
        if not isinstance(profile, PowershellProfile):
            raise InvalidParams("a powershell profile expected")
        if params.script is not None:
            if not profile.allow_scripts:
                raise PolicyDenied(
                    "this profile takes structured calls only "
                    '({"command": "Get-Service", "parameters": {...}}): free scripts need allow_scripts = true'
                )
        elif params.command is not None and not profile.allows_call(params.command, list(params.parameters)):
            shown = " ".join([params.command, *(f"-{name}" for name in params.parameters)])
            raise PolicyDenied(f"the call is not among the profile's allowed_commands: {shown[:200]!r}")
        try:
            profile.target(params.host)
        except ValueError as exc:
            raise PolicyDenied(str(exc)) from None
        if params.timeout_s is not None and params.timeout_s > profile.timeout_s:
            raise InvalidParams(f"timeout_s {params.timeout_s:g} is over the profile's timeout_s {profile.timeout_s:g}")

    async def run(self, ctx: JobContext[Any], params: Any) -> None:
        self.check_policy(ctx.profile, params)
        profile: PowershellProfile = ctx.profile
        output_type = JsonOutput if params.output == "json" else CommandOutput
        if profile.transport == "ssh":
            command = [profile.executable, "-NoProfile", "-NonInteractive", "-EncodedCommand"]
            command.append(encoded_command(params.script_text(), params.output))
            ssh_params = SshParams(
                connection=params.connection, command=command, host=params.host, timeout_s=params.timeout_s
            )
            await self.execute(ctx, ssh_params, output_type)
            return
        output = output_type(ctx, profile.inline_output_bytes, profile.max_output_bytes)
        if profile.transport == "local":
            await self.local.run(ctx, params, output)
        else:
            await self.psrp.run(ctx, params, profile.target(params.host), output)

    async def aclose(self) -> None:
        await self.psrp.aclose()
        await super().aclose()
