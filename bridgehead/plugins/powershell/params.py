"""The ``powershell`` plugin's job params and profile keys (msgspec structs, no I/O)."""

from __future__ import annotations

import base64
import logging
from typing import Annotated, Literal

import msgspec

from bridgehead.plugins.powershell.call import COMMAND_NAME, PARAMETER_NAME, call_allowed, call_script, check_call
from bridgehead.plugins.powershell.call import parse_pattern as parse_call_pattern
from bridgehead.plugins.ssh import SshProfile
from bridgehead.sdk import Params

log = logging.getLogger("bridgehead.plugin.powershell")

MiB = 1024 * 1024

# Keys that only mean something to an SSH connection: refused on the other transports, so a
# profile never looks safer than it is (a host_key on a WinRM profile checks nothing).
_SSH_ONLY = ("known_hosts", "host_key", "trust_on_first_use", "jump", "sftp_paths")
_SHELL_CHARACTERS = "'\"$`;&|<>\n"


_Text = Annotated[str, msgspec.Meta(max_length=MiB)]
_Scalar = _Text | int | float | bool


class PowershellParams(Params):
    """Params of one ``powershell`` job; see docs/plugins/powershell.md. Either a structured
    call (``command`` and ``parameters``) or a free ``script`` (only where the profile says
    allow_scripts)."""

    connection: str
    command: Annotated[str, msgspec.Meta(pattern=COMMAND_NAME)] | None = None
    parameters: Annotated[
        dict[
            Annotated[str, msgspec.Meta(pattern=PARAMETER_NAME)],
            _Scalar | Annotated[list[_Scalar], msgspec.Meta(max_length=4096)],
        ],
        msgspec.Meta(max_length=64),
    ] = {}
    script: Annotated[str, msgspec.Meta(min_length=1, max_length=MiB)] | None = None
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None
    output: Literal["text", "json"] = "text"
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] | None = None

    def __post_init__(self) -> None:
        if (self.script is None) == (self.command is None):
            raise ValueError('give either "command" (with "parameters") or "script"')
        if self.script is not None:
            if self.parameters:
                raise ValueError('"parameters" go with "command", not with "script"')
            if "\x00" in self.script:
                raise ValueError("script has a NUL character")
            return
        assert self.command is not None  # noqa: S101 - checked above
        check_call(self.command, self.parameters)
        if len(call_script(self.command, self.parameters)) > 2 * MiB:
            raise ValueError("the call's parameters are too large (over 2 MiB once encoded)")

    def script_text(self) -> str:
        """What runs: the free script, or the structured call as script text (call.py)."""
        if self.script is not None:
            return self.script
        assert self.command is not None  # noqa: S101 - __post_init__ checked it
        return call_script(self.command, self.parameters)


class PowershellProfile(SshProfile):
    """An ssh profile's keys, plus how PowerShell is reached:

    - ``transport = "ssh"`` (default): PowerShell 7 over SSH, everything about the connection
      as for the ssh plugin (host keys, jump hosts, warm transports);
    - ``transport = "psrp"``: WinRM / PowerShell Remoting (pypsrp), to ``host`` or ``hosts``;
    - ``transport = "local"``: on the agent's own machine (a Windows agent's PowerShell).
    """

    transport: Literal["ssh", "psrp", "local"] = "ssh"
    # Jobs may send a free script. Never with allowed_commands: a script runs any command.
    allow_scripts: bool = False
    # local only (POSIX, the agent running as root): the account the script runs as, so that
    # it cannot read the agent's files, memory or environment.
    run_as_user: Annotated[str, msgspec.Meta(pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")] | None = None
    # PowerShell on the host (ssh) or on the agent's machine (local): "pwsh" for PowerShell 7,
    # "powershell.exe" for Windows PowerShell 5.1.
    executable: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)] = "pwsh"
    # --- psrp only ---
    # How to authenticate to WinRM: as pypsrp allows. kerberos needs pypsrp[kerberos] (gssapi),
    # credssp needs pypsrp[credssp]; negotiate tries Kerberos, then NTLM.
    auth: Literal["negotiate", "ntlm", "kerberos", "credssp", "basic"] = "negotiate"
    # HTTPS (port 5986) by default; ssl = false is WinRM's HTTP listener (5985), where pypsrp
    # encrypts the messages itself (NTLM/Kerberos/CredSSP), as Windows requires by default.
    ssl: bool = True
    ca_file: str | None = None
    verify: bool = True
    encryption: Literal["auto", "always", "never"] = "auto"
    configuration_name: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] = "Microsoft.PowerShell"
    # WinRM's own limit on one request; a running script is polled this often, so it is also
    # how quickly a cancel or timeout reaches the remote pipeline.
    operation_timeout_s: Annotated[int, msgspec.Meta(ge=1, le=60)] = 5

    def __post_init__(self) -> None:
        if any(c in self.executable for c in _SHELL_CHARACTERS):
            raise ValueError("executable is a path, without quotes or shell characters")
        if self.run_as_user is not None and self.transport != "local":
            raise ValueError(f'run_as_user: only for transport = "local", not "{self.transport}"')
        if self.transport == "ssh":
            super().__post_init__()  # and check_commands
            return
        self.check_commands()
        given = [k for k in _SSH_ONLY if getattr(self, k) not in (None, False)]
        if given:
            raise ValueError(f'{", ".join(given)}: only for transport = "ssh", not "{self.transport}"')
        if self.transport == "local":
            if self.host is not None or self.hosts is not None:
                raise ValueError('transport = "local" runs on the agent\'s own machine: no host or hosts')
            return
        if (self.host is None) == (self.hosts is None):
            raise ValueError("give exactly one of host or hosts")
        if not self.ssl and self.auth == "basic":
            raise ValueError("auth = basic over ssl = false would send the password in clear: use ssl = true")
        if not self.ssl and self.encryption == "never":
            raise ValueError("ssl = false with encryption = never would send everything in clear")
        if not self.verify and self.ssl:
            log.warning(
                "powershell profile with verify = false: the WinRM server's certificate is NOT checked; "
                "anyone on the path can take the credential"
            )

    def check_commands(self) -> None:
        """PowerShell's own command policy: structured calls matched by allowed_commands, or
        free scripts with allow_scripts; never both."""
        if self.allow_shell:
            raise ValueError("allow_shell is the ssh plugin's key: a powershell profile takes allow_scripts")
        if self.allowed_env is not None:
            raise ValueError("allowed_env is the ssh plugin's key: powershell jobs set no environment")
        if self.allow_scripts and self.allowed_commands is not None:
            raise ValueError(
                "allow_scripts = true cannot go with allowed_commands: a script runs any command, whatever "
                "the list says (remove allow_scripts to enforce the list, or allowed_commands to allow scripts)"
            )
        for pattern in self.allowed_commands or ():
            parse_call_pattern(pattern)

    def allows_call(self, command: str, names: list[str]) -> bool:
        return self.allowed_commands is None or call_allowed(command, names, self.allowed_commands)

    def target(self, requested: str | None) -> str:
        if self.transport == "local":
            if requested is not None:
                raise ValueError('this profile runs scripts on the agent\'s own machine (transport = "local")')
            return "localhost"
        return super().target(requested)

    def winrm_port(self) -> int:
        """``port`` if set to anything but SSH's 22 (the shared key's default); else WinRM's."""
        if self.port != 22:
            return self.port
        return 5986 if self.ssl else 5985


def wrapped_script(script: str, output: str) -> str:
    """The script as it runs: with ``output = "json"``, inside ConvertTo-Json, so its output
    objects come back as one JSON array whatever the transport."""
    if output == "json":
        return f"ConvertTo-Json -InputObject @(& {{\n{script}\n}}) -Depth 8 -Compress"
    return script


def encoded_command(script: str, output: str) -> str:
    """``-EncodedCommand``'s argument: base64 of the UTF-16LE text, PowerShell's own way to
    take any script without shell quoting."""
    return base64.b64encode(wrapped_script(script, output).encode("utf-16-le")).decode("ascii")
