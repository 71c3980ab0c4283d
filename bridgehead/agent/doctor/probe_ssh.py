"""An ``ssh`` profile (and a ``powershell`` one over SSH): the host's port answers, and a login
works, through the ssh plugin's own ``HostTransports``: the handshake, the host-key check
against the profile, then authentication with the profile's credential.

Doctor never records a key: ``trust_on_first_use`` is off for its login, and an unknown host
is a warning that the first job will record it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from bridgehead.agent.doctor.findings import Finding, credential_ref, fail, ok, skip, warn
from bridgehead.agent.doctor.reach import reach_all
from bridgehead.agent.doctor.runner import Chain, connection_chain
from bridgehead.agent.doctor.threads import DAEMON_THREADS
from bridgehead.plugins.ssh.params import SshProfile
from bridgehead.sdk import Credential, JobError

if TYPE_CHECKING:
    from bridgehead.plugins.ssh.transports import HostTransports

_LOGIN_ADVICE = {
    "auth_failed": "check the username and the password or private key of {credential}",
    "host_key_mismatch": (
        "if the server's key changed on purpose, update host_key or known_hosts; otherwise find out why"
    ),
    "host_key_unknown": "add the server's key to known_hosts (ssh-keyscan -p PORT HOST, checked out of band)",
    "source_unavailable": "check that sshd runs and accepts connections from this machine",
}


class SshProbe:
    def __init__(self, name: str, profile: SshProfile, credential: Credential | None, timeout_s: float) -> None:
        self.name = name
        self.tofu = profile.trust_on_first_use
        self.profile = msgspec.structs.replace(
            profile, trust_on_first_use=False, connect_timeout_s=min(profile.connect_timeout_s, timeout_s)
        )
        self.credential = credential
        self.transports: HostTransports | None = None

    def chain(self) -> Chain:
        return connection_chain(self, self.close)

    def _unreachable_directly(self) -> str:
        if self.profile.jump is not None:
            return f"reached through jump host {self.profile.jump!r} (checked as its own profile), not directly"
        if self.profile.host is None:
            return "each job names its host (hosts = [...]): no single host to check"
        return ""

    async def driver(self) -> Finding:
        import paramiko

        return ok(f"paramiko {paramiko.__version__}")

    async def reach(self) -> Finding:
        why = self._unreachable_directly()
        if why or self.profile.host is None:
            return skip(why)
        return await reach_all([(self.profile.host, self.profile.port)])

    async def login(self) -> Finding:
        why = self._unreachable_directly()
        if why or self.profile.host is None:
            return skip(why)
        from bridgehead.plugins.ssh.transports import HostTransports

        host = self.profile.host
        self.transports = transports = HostTransports(self.name, self.profile, self.credential, host, DAEMON_THREADS)
        try:
            await transports.acquire(self.profile.connect_timeout_s)
        except JobError as exc:
            if exc.code == "host_key_unknown" and self.tofu:
                return warn(f"{exc.message}; the first job will record it (trust_on_first_use)", "")
            advice = _LOGIN_ADVICE.get(exc.code, "check the profile and sshd's log")
            return fail(exc.message, advice.format(credential=credential_ref(self.profile.credential)))
        transports.release()
        user = self.credential.username if self.credential is not None else "?"
        return ok(f"logged in as {user} on {host} port {self.profile.port}; host key as expected")

    async def close(self) -> None:
        if self.transports is not None:
            await self.transports.aclose()
