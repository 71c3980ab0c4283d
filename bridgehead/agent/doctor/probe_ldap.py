"""An ``ldap`` profile: each server's port answers, and a bind with the profile's credential
works, through the ldap plugin's own ``connect`` (its TLS settings and failover included)."""

from __future__ import annotations

import functools

import msgspec

from bridgehead.agent.doctor.findings import Finding, credential_ref, fail, ok
from bridgehead.agent.doctor.reach import reach_all
from bridgehead.agent.doctor.runner import Chain, connection_chain
from bridgehead.agent.doctor.threads import in_thread
from bridgehead.plugins.ldap import client
from bridgehead.plugins.ldap.params import LdapProfile, check_url
from bridgehead.sdk import Credential, JobError

_BIND_ADVICE = {
    "auth_failed": "check the bind DN (username) and password of {credential}",
    "tls_failed": "set ca_file to the CA that signed the directory's certificate (or fix the URL's host name)",
    "source_unavailable": "check that the directory server runs and accepts connections from this machine",
}


class LdapProbe:
    def __init__(self, name: str, profile: LdapProfile, credential: Credential | None, timeout_s: float) -> None:
        self.name = name
        # ldap3 takes whole seconds for the receive timeout: at least one.
        self.profile = msgspec.structs.replace(profile, timeout_s=min(profile.timeout_s, max(timeout_s, 1.0)))
        self.credential = credential

    def chain(self) -> Chain:
        return connection_chain(self)

    async def driver(self) -> Finding:
        from ldap3.version import __version__

        return ok(f"ldap3 {__version__}")

    async def reach(self) -> Finding:
        return await reach_all([check_url(url)[1:] for url in self.profile.server_urls()])

    async def login(self) -> Finding:
        try:
            conn = await in_thread(functools.partial(client.connect, self.profile, self.credential, read_schema=False))
        except JobError as exc:
            advice = _BIND_ADVICE.get(exc.code, "check the profile's URL and the directory's log")
            return fail(exc.message, advice.format(credential=credential_ref(self.profile.credential)))
        await in_thread(client.close, conn)
        user = self.credential.username if self.credential is not None else None
        return ok(f"bound as {user}" if user else "anonymous bind accepted")
