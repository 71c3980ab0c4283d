"""``PowershellPlugin``: a PowerShell script on a host, over SSH to PowerShell 7.

The script travels as ``pwsh -NoProfile -NonInteractive -EncodedCommand <base64>``: base64 of
its UTF-16LE text, PowerShell's own way to take any script without shell quoting. With
``"output": "json"`` the script runs inside ``ConvertTo-Json -InputObject @(& { ... })``, so
its output objects arrive as one JSON array, and each element becomes one record (objects
as they are, other values as ``{"value": ...}``). With ``"output": "text"`` the records are
the ssh plugin's (``exit_code``, ``stdout``, ``stderr``, streamed when large).

Everything about the connection (host keys, credentials, jump hosts, warm transports,
timeouts that TERM then KILL the remote process) is the ssh plugin's, whose profile keys this
plugin's profile shares. The other transports the issue names, WinRM/PSRP and a local
PowerShell on a Windows agent, are not built: a profile asking for them is refused.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any, Literal

import msgspec

from agent.errors import InvalidParams, PolicyDenied, SourceError
from agent.sdk import JobContext, Params
from plugins.ssh.params import MiB, SshParams, SshProfile
from plugins.ssh.plugin import Command, SshPlugin

# Output of a JSON script is parsed whole: this bounds the memory it takes.
MAX_JSON_BYTES = 64 * MiB


class PowershellParams(Params):
    """Params of one ``powershell`` job; see docs/plugins/powershell.md."""

    connection: str
    script: Annotated[str, msgspec.Meta(min_length=1, max_length=MiB)]
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None
    output: Literal["text", "json"] = "text"
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] | None = None

    def __post_init__(self) -> None:
        if "\x00" in self.script:
            raise ValueError("script has a NUL character")


class PowershellProfile(SshProfile):
    """An ssh profile's keys, plus how PowerShell is reached."""

    transport: Literal["ssh", "psrp", "local"] = "ssh"
    # The PowerShell 7 executable on the host.
    executable: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)] = "pwsh"

    def __post_init__(self) -> None:
        if self.transport != "ssh":
            raise ValueError(
                f'transport = "{self.transport}" is not built yet: PowerShell runs over SSH (transport = "ssh") '
                "to hosts with PowerShell 7"
            )
        if any(c in self.executable for c in "'\"$`;&|<>\n"):
            raise ValueError("executable is a path, without quotes or shell characters")
        super().__post_init__()


def encoded_command(script: str, output: str) -> str:
    if output == "json":
        script = f"ConvertTo-Json -InputObject @(& {{\n{script}\n}}) -Depth 8 -Compress"
    return base64.b64encode(script.encode("utf-16-le")).decode("ascii")


class _JsonCommand(Command):
    """Keeps the whole stdout (up to MAX_JSON_BYTES) and turns the JSON array into records."""

    async def _output(self, stream: str, data: bytes) -> None:
        kept = self.inline[stream]
        if len(kept) + len(data) > MAX_JSON_BYTES:
            raise SourceError(
                f'the script\'s JSON output passed {MAX_JSON_BYTES:,} bytes; use output = "text" to stream it',
                code="output_too_large",
            )
        kept += data

    async def _finish(self, exit_code: int) -> None:
        stdout = bytes(self.inline["stdout"]).decode("utf-8", "replace").strip()
        stderr = bytes(self.inline["stderr"]).decode("utf-8", "replace").strip()
        if exit_code != 0:
            raise SourceError(
                f"the script exited {exit_code}: {stderr[-2000:] or stdout[-2000:]}", code="script_failed"
            )
        try:
            values: Any = json.loads(stdout) if stdout else []
        except ValueError as exc:
            raise SourceError(f"the script's output is not JSON ({exc}): {stdout[:200]!r}", code="bad_output") from None
        if not isinstance(values, list):
            values = [values]
        await self.ctx.emit_many(v if isinstance(v, dict) else {"value": v} for v in values)


class PowershellPlugin(SshPlugin):
    name = "powershell"
    version = "1"
    params_type = PowershellParams  # type: ignore[assignment]
    profile_type = PowershellProfile

    def check_policy(self, profile: SshProfile, params: Any) -> None:
        if not isinstance(params, PowershellParams):
            raise InvalidParams("powershell params expected")
        if not profile.allows(params.script):
            raise PolicyDenied(f"the script is not among the profile's allowed_commands: {params.script[:200]!r}")
        try:
            profile.target(params.host)
        except ValueError as exc:
            raise PolicyDenied(str(exc)) from None

    async def run(self, ctx: JobContext[Any], params: Any) -> None:
        self.check_policy(ctx.profile, params)
        profile: PowershellProfile = ctx.profile
        encoded = encoded_command(params.script, params.output)
        command = f"{profile.executable} -NoProfile -NonInteractive -EncodedCommand {encoded}"
        ssh_params = SshParams(
            connection=params.connection, command=command, host=params.host, timeout_s=params.timeout_s
        )
        await self.execute(ctx, ssh_params, _JsonCommand if params.output == "json" else Command)
