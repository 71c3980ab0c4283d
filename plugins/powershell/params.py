"""The ``powershell`` plugin's job params and profile keys (msgspec structs, no I/O)."""

from __future__ import annotations

import base64
import logging
from typing import Annotated, Literal

import msgspec

from agent.sdk import Params
from plugins.ssh.params import MiB, SshProfile

log = logging.getLogger("bridgehead.plugin.powershell")

# Keys that only mean something to an SSH connection: refused on the other transports, so a
# profile never looks safer than it is (a host_key on a WinRM profile checks nothing).
_SSH_ONLY = ("known_hosts", "host_key", "trust_on_first_use", "jump", "sftp_paths")
_SHELL_CHARACTERS = "'\"$`;&|<>\n"


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
    """An ssh profile's keys, plus how PowerShell is reached:

    - ``transport = "ssh"`` (default): PowerShell 7 over SSH, everything about the connection
      as for the ssh plugin (host keys, jump hosts, warm transports);
    - ``transport = "psrp"``: WinRM / PowerShell Remoting (pypsrp), to ``host`` or ``hosts``;
    - ``transport = "local"``: on the agent's own machine (a Windows agent's PowerShell).
    """

    transport: Literal["ssh", "psrp", "local"] = "ssh"
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
        if self.transport == "ssh":
            super().__post_init__()
            return
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
