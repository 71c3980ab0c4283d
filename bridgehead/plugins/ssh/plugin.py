"""``SshPlugin``: one command on one host, its output streamed as records (the command's
side is bridgehead/plugins/ssh/command.py, its transports bridgehead/plugins/ssh/hosts.py;
this module loads without paramiko).

The flow of a job::

    the command as argv (a list, or a string split as a POSIX shell would), checked against
    allowed_commands, and the host against the profile (before any connection: check_policy);
    a shell line only where the profile says allow_shell
    take a warm transport to the host, or open one (host key checked before authentication)
    take the pool's spare session channel, or open one (bridgehead/plugins/ssh/transports.py)
    environment; exec, its answer not awaited; stdin (sudo's password first) from a thread
    read stdout and stderr as they come, on the event loop woken by the channel's pipe
      short output: one record {"exit_code", "stdout", "stderr"}
      past inline_output_bytes: chunk records {"stream", "offset", "data"}, then a final
      {"exit_code", "stdout_bytes", "stderr_bytes", "streamed": true}; the stream's
      backpressure holds the reads, and so the remote command (its pipes fill)

A timeout or a cancel ends the remote process: a TERM signal over the channel, a KILL two
seconds later, then the channel is closed. (OpenSSH delivers "signal" requests since 7.9.)
"""

from __future__ import annotations

from bridgehead.plugins.ssh.hosts import SshHosts
from bridgehead.plugins.ssh.params import SshParams, SshProfile
from bridgehead.sdk import InvalidParams, JobContext, Plugin, PolicyDenied


class SshPlugin(Plugin[SshParams, SshProfile]):
    name = "ssh"
    version = "1"
    params_type = SshParams
    profile_type = SshProfile
    safe_to_repeat = False  # a command may change the host: never run twice by the relay

    def __init__(self) -> None:
        self.hosts = SshHosts()

    def check_policy(self, profile: SshProfile, params: SshParams) -> None:
        if params.command is not None:
            check_command(profile, params)
        if params.path is not None and not profile.allows_path(params.path):
            raise PolicyDenied(
                f"{params.path} is not under the profile's sftp_paths"
                if profile.sftp_paths is not None
                else "file transfer is off for this profile (no sftp_paths)"
            )
        try:
            profile.target(params.host)
        except ValueError as exc:
            raise PolicyDenied(str(exc)) from None
        if params.timeout_s is not None and params.timeout_s > profile.timeout_s:
            raise InvalidParams(f"timeout_s {params.timeout_s:g} is over the profile's timeout_s {profile.timeout_s:g}")

    async def run(self, ctx: JobContext[SshProfile], params: SshParams) -> None:
        self.check_policy(ctx.profile, params)  # again: a job may reach run without the agent's check
        await self.hosts.execute(ctx, params)

    async def aclose(self) -> None:
        await self.hosts.aclose()


def check_command(profile: SshProfile, params: SshParams) -> None:
    """The job's command is one the profile allows: a shell line only with allow_shell, else
    an argv (``invalid_params`` if the string is not one) matching allowed_commands, and only
    the environment variables allowed_env names."""
    command = params.command
    assert command is not None  # noqa: S101 - the caller checked
    if profile.shell_line(command) is None:
        try:
            argv = profile.argv(command)
        except ValueError as exc:
            raise InvalidParams(str(exc)) from None
        if not profile.allows(argv):
            raise PolicyDenied(f"the command is not among the profile's allowed_commands: {argv!r:.200}")
    refused = sorted(name for name in params.env if not profile.allows_env(name))
    if refused:
        raise PolicyDenied(
            f"environment variables {', '.join(refused)} are not among the profile's allowed_env "
            "(with allowed_commands, a job sets only the variables allowed_env names)"
        )
