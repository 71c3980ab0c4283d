"""``PowershellPlugin``: a PowerShell script on a host or on the agent's own machine.

Three transports, chosen by the profile (docs/plugins/powershell.md):

- ``ssh`` (default): PowerShell 7 over SSH, as ``pwsh -NoProfile -NonInteractive
  -EncodedCommand <base64>`` (base64 of the UTF-16LE text: any script, no shell quoting).
  Everything about the connection (host keys, credentials, jump hosts, warm transports,
  timeouts that TERM then KILL the remote process) is the ssh plugin's: this plugin holds
  an ``SshHosts`` of its own (composed, not inherited) and its profile shares ssh's keys.
  Tested for real through sshd with a stand-in interpreter.
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

from bridgehead.plugins.powershell.json_output import JsonOutput
from bridgehead.plugins.powershell.local import LocalScripts
from bridgehead.plugins.powershell.params import PowershellParams, PowershellProfile, encoded_command
from bridgehead.plugins.powershell.psrp import PsrpSessions
from bridgehead.plugins.ssh import CommandOutput, SshHosts, SshParams
from bridgehead.sdk import InvalidParams, JobContext, Plugin, PolicyDenied


class PowershellPlugin(Plugin[PowershellParams, PowershellProfile]):
    name = "powershell"
    version = "2"
    params_type = PowershellParams
    profile_type = PowershellProfile
    safe_to_repeat = False  # a script may change the host: never run twice by the relay

    def __init__(self) -> None:
        # The ssh transport is the ssh plugin's machinery, held here (pools of its own, as a
        # separate plugin instance always had); psrp's blocking calls share its threads.
        self.ssh = SshHosts()
        self._executor = self.ssh.executor
        self.local = LocalScripts()
        self.psrp = PsrpSessions(self._executor)

    def check_policy(self, profile: PowershellProfile, params: PowershellParams) -> None:
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

    async def run(self, ctx: JobContext[PowershellProfile], params: PowershellParams) -> None:
        self.check_policy(ctx.profile, params)  # again: a job may reach run without the agent's check
        profile = ctx.profile
        output_type = JsonOutput if params.output == "json" else CommandOutput
        if profile.transport == "ssh":
            command = [profile.executable, "-NoProfile", "-NonInteractive", "-EncodedCommand"]
            command.append(encoded_command(params.script_text(), params.output))
            ssh_params = SshParams(
                connection=params.connection, command=command, host=params.host, timeout_s=params.timeout_s
            )
            await self.ssh.execute(ctx, ssh_params, output_type)
            return
        output = output_type(ctx, profile.inline_output_bytes, profile.max_output_bytes)
        if profile.transport == "local":
            await self.local.run(ctx, params, output)
        else:
            await self.psrp.run(ctx, params, profile.target(params.host), output)

    async def aclose(self) -> None:
        await self.psrp.aclose()
        await self.ssh.aclose()
