"""The ``ssh`` plugin's job params and connection-profile keys (msgspec structs, no I/O)."""

from __future__ import annotations

import fnmatch
import ipaddress
import posixpath
from typing import Annotated, Literal

import msgspec

from bridgehead.plugins.ssh import argv as argvs
from bridgehead.sdk import Params, Profile

MiB = 1024 * 1024
EnvName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]


class SshParams(Params):
    """Params of one ``ssh`` job; see docs/plugins/ssh.md."""

    connection: str
    # "exec" runs ``command``; "get" reads the file at ``path``; "put" writes ``content`` there.
    op: Literal["exec", "get", "put"] = "exec"
    # An argv (["df", "-h", "/var"]), or a string split into one as a POSIX shell would (shlex);
    # with the profile's allow_shell, a string is a shell command line, sent as it is.
    command: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=MiB)]
        | Annotated[list[Annotated[str, msgspec.Meta(max_length=MiB)]], msgspec.Meta(min_length=1, max_length=4096)]
        | None
    ) = None
    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    # The file's bytes for "put" (base64 in JSON).
    content: Annotated[bytes, msgspec.Meta(max_length=16 * MiB)] | None = None
    # One of the profile's ``hosts`` (required when the profile names several).
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None
    stdin: Annotated[str, msgspec.Meta(max_length=16 * MiB)] | None = None
    env: Annotated[dict[EnvName, Annotated[str, msgspec.Meta(max_length=32_768)]], msgspec.Meta(max_length=64)] = {}
    # Limit on this command; at most the profile's timeout_s.
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] | None = None
    # Run under sudo, its password (the credential's) written to sudo's stdin, never to argv.
    sudo: bool = False

    def __post_init__(self) -> None:
        if self.op == "exec":
            if self.command is None:
                raise ValueError('op "exec" needs "command"')
            if self.path is not None or self.content is not None:
                raise ValueError('"path" and "content" are for op "get" and "put"')
            pieces = [self.command] if isinstance(self.command, str) else self.command
            if any("\x00" in piece for piece in pieces):
                raise ValueError("command has a NUL character")
            if sum(len(piece) for piece in pieces) > MiB:
                raise ValueError(f"command is longer than {MiB:,} characters")
            return
        if self.command is not None or self.stdin is not None or self.sudo or self.env:
            raise ValueError(f'op "{self.op}" takes path (and content), not command, stdin, env or sudo')
        if self.path is None:
            raise ValueError(f'op "{self.op}" needs "path"')
        if (self.op == "put") != (self.content is not None):
            raise ValueError('"content" goes with op "put", and only with it')
        check_remote_path(self.path)


class SshProfile(Profile):
    """Keys of a ``[connections.NAME]`` table with ``plugin = "ssh"``."""

    host: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None
    # Names, wildcards (*.corp.example) and CIDR ranges (10.1.0.0/16) a job's host may be.
    hosts: Annotated[list[str], msgspec.Meta(min_length=1, max_length=1000)] | None = None
    port: Annotated[int, msgspec.Meta(ge=1, le=65_535)] = 22
    # OpenSSH known_hosts file the server's key must be in; or a pinned key fingerprint.
    known_hosts: str | None = None
    host_key: Annotated[str, msgspec.Meta(pattern=r"^SHA256:[A-Za-z0-9+/]{43}$")] | None = None
    # Accept and record (in known_hosts) the key of a host seen for the first time.
    trust_on_first_use: bool = False
    # Another ssh profile (a bastion) to reach the host through: a direct-tcpip channel on
    # its warm transport carries this profile's own SSH connection, end to end.
    jump: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    # Patterns a command's argv must match, one glob per argument (bridgehead/plugins/ssh/argv.py,
    # docs/plugins/ssh.md); none: any one program, its arguments never read by a shell.
    allowed_commands: Annotated[list[str], msgspec.Meta(max_length=1000)] | None = None
    # Jobs may give a shell command line (pipes, &&, redirections), sent to the login shell as
    # it is. Never with allowed_commands: a shell defeats any command list.
    allow_shell: bool = False
    # With allowed_commands: the names (fnmatch) of the environment variables a job may set;
    # none by default, since a variable (LD_PRELOAD, BASH_ENV) can run code of its own.
    allowed_env: Annotated[list[str], msgspec.Meta(max_length=1000)] | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 300.0
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 15.0
    # Commands running at once on one host through this profile (channels on one transport).
    max_sessions: Annotated[int, msgspec.Meta(ge=1, le=256)] = 8
    # A transport no job used for this long is closed.
    idle_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 300.0
    # Keep the next session channel open ahead of the next command (one round trip less per
    # command); off for a device that limits or times out idle sessions.
    spare_session: bool = True
    # Remote paths (fnmatch patterns on the normalised absolute path) that "get" and "put" may
    # touch; none: file transfer is off for this profile.
    sftp_paths: Annotated[list[str], msgspec.Meta(max_length=1000)] | None = None
    # Largest file "get" reads (checked before reading).
    max_file_bytes: Annotated[int, msgspec.Meta(ge=1)] = 1024 * MiB
    # Output up to this size comes back as one record; beyond, it is streamed in chunks.
    inline_output_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * MiB)] = 64 * 1024
    # Most bytes of stdout plus stderr a command may produce before it is stopped.
    max_output_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1024 * MiB

    def __post_init__(self) -> None:
        if (self.host is None) == (self.hosts is None):
            raise ValueError("give exactly one of host or hosts")
        for pattern in self.hosts or ():
            if "/" in pattern:
                ipaddress.ip_network(pattern, strict=False)  # ValueError says what is wrong
        if self.known_hosts is None and self.host_key is None:
            raise ValueError(
                "give known_hosts (a file) or host_key (a SHA256: fingerprint): a server's key is "
                "always checked (trust_on_first_use records new keys into known_hosts)"
            )
        if self.trust_on_first_use and self.known_hosts is None:
            raise ValueError("trust_on_first_use records keys into known_hosts: give known_hosts")
        if self.host_key is not None and self.hosts is not None:
            raise ValueError("host_key pins one server's key: use it with host, or known_hosts with hosts")
        self.check_commands()

    def check_commands(self) -> None:
        """The command policy holds together; its patterns parse."""
        if self.allow_shell and self.allowed_commands is not None:
            raise ValueError(
                "allow_shell = true cannot go with allowed_commands: a shell runs any program, whatever "
                "the list says (remove allow_shell to enforce the list, or allowed_commands to allow a shell)"
            )
        for pattern in self.allowed_commands or ():
            argvs.parse_pattern(pattern)  # ValueError names the pattern

    def target(self, requested: str | None) -> str:
        """The host a job runs on; ``ValueError`` if the profile does not allow it."""
        if self.host is not None:
            if requested is not None and requested.lower() != self.host.lower():
                raise ValueError(f"this profile reaches {self.host} only, not {requested}")
            return self.host
        if requested is None:
            raise ValueError("this profile names several hosts: give the job's host")
        if not any(_host_matches(requested, p) for p in self.hosts or ()):
            raise ValueError(f"host {requested} is not among the profile's hosts")
        return requested

    def shell_line(self, command: str | list[str]) -> str | None:
        """The command as a shell command line, sent as it is; None unless the profile allows
        a shell and the job gave a string."""
        return command if self.allow_shell and isinstance(command, str) else None

    def argv(self, command: str | list[str]) -> list[str]:
        """The job's command as argv (``ValueError`` if it is not one)."""
        return argvs.to_argv(command)

    def allows(self, argv: list[str]) -> bool:
        return self.allowed_commands is None or argvs.allowed(argv, self.allowed_commands)

    def allows_env(self, name: str) -> bool:
        """Without allowed_commands any program may run, so any variable may be set; with it,
        only those allowed_env names."""
        if self.allowed_commands is None:
            return True
        return any(fnmatch.fnmatchcase(name, p) for p in self.allowed_env or ())

    def remote_command(self, command: str | list[str]) -> str:
        """The line the remote login shell runs: the job's shell line (allow_shell), else its
        argv with every argument quoted, so the shell reads back exactly that argv."""
        line = self.shell_line(command)
        return line if line is not None else argvs.command_line(self.argv(command))

    def allows_path(self, path: str) -> bool:
        return self.sftp_paths is not None and any(fnmatch.fnmatchcase(path, p) for p in self.sftp_paths)


def check_remote_path(path: str) -> None:
    """Absolute, and already normal: no "..", ".", "//" or trailing "/" that could make a
    pattern match one path and the server open another."""
    if not path.startswith("/") or "\x00" in path:
        raise ValueError(f"path must be absolute: {path!r}")
    if posixpath.normpath(path) != path:
        raise ValueError(f"path must be normalised (no .., . or //): {path!r} (as {posixpath.normpath(path)!r})")


def _host_matches(host: str, pattern: str) -> bool:
    if "/" in pattern:
        try:
            return ipaddress.ip_address(host) in ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            return False  # a name is never in an address range (no DNS lookup at policy time)
    return fnmatch.fnmatchcase(host.lower(), pattern.lower())
