"""A ``rest`` profile: base_url's port answers, and a GET of base_url with the profile's
headers and credential is not refused (401/403), through the rest plugin's own session and
``fetch`` (its TLS settings: ca_file, verify)."""

from __future__ import annotations

import logging
import urllib.parse

import msgspec

from bridgehead.agent.doctor.findings import Finding, credential_ref, fail, ok, warn
from bridgehead.agent.doctor.reach import reach_all
from bridgehead.agent.doctor.runner import Chain, connection_chain
from bridgehead.plugins.rest.client import SessionPool, fetch
from bridgehead.plugins.rest.params import RestProfile
from bridgehead.plugins.rest.urls import Target
from bridgehead.sdk import Credential, JobError

log = logging.getLogger("bridgehead.agent.doctor")
_MAX_BYTES = 64 * 1024  # the answer's body is not looked at: read little of it

_REQUEST_ADVICE = {
    "tls_error": "set ca_file to the CA that signed the server's certificate",
    "source_unavailable": "check that the server runs and accepts connections from this machine",
    "timeout": "the server does not answer in time: check it, or raise --timeout",
}


class RestProbe:
    def __init__(self, name: str, profile: RestProfile, credential: Credential | None, timeout_s: float) -> None:
        self.name = name
        self.profile = msgspec.structs.replace(profile, timeout_s=min(profile.timeout_s, timeout_s))
        self.credential = credential
        self.sessions = SessionPool()

    def chain(self) -> Chain:
        return connection_chain(self, self.sessions.aclose)

    async def driver(self) -> Finding:
        import aiohttp

        return ok(f"aiohttp {aiohttp.__version__}")

    async def reach(self) -> Finding:
        parts = urllib.parse.urlsplit(self.profile.base_url)
        return await reach_all([(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))])

    async def login(self) -> Finding:
        # The header a job sends: the plugin's own (a token as Bearer, else basic auth).
        from bridgehead.plugins.rest.plugin import _authorization

        headers = dict(self.profile.headers)
        authorization = _authorization(self.credential)
        if authorization is not None:
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            headers["Authorization"] = authorization
        # base_url itself, as configured (checked at load: no query, no user, no spaces).
        target = Target(url=self.profile.base_url, display=self.profile.base_url)
        try:
            response = await fetch(
                self.sessions.get(self.name, self.profile, log),
                "GET",
                target,
                headers=headers,
                body=None,
                timeout_s=self.profile.timeout_s,
                max_bytes=_MAX_BYTES,
                retry_safe=True,
            )
        except JobError as exc:
            if exc.code == "response_too_large":  # it answered, with more than doctor reads
                return ok(f"GET {target.display} answered")
            return fail(exc.message, _REQUEST_ADVICE.get(exc.code, "check base_url and the server's log"))
        answered = f"GET {target.display} answered HTTP {response.status} {response.reason}"
        if response.status in (401, 403):
            if self.credential is None:
                return fail(f"{answered}: the server wants a credential", "name a credential in the profile")
            where = credential_ref(self.profile.credential)
            return fail(f"{answered}: the credential was refused", f"check the token, or user and password, of {where}")
        if response.status >= 500:
            return warn(answered, "the server has a problem of its own: check its log")
        return ok(answered)
