"""How the sink proves who it is to a ServiceNow instance: basic auth, or OAuth 2.0 tokens
from ``/oauth_token.do`` (client credentials, or a refresh token).

Access tokens are cached and renewed before they expire (at 80 % of their life, and at least
30 s early), one request at a time however many deliveries wait. A rotated refresh token is
written to the store *before* the access token that came with it is used: if the control
plane dies a moment later, the token it restarts with is the one the instance still honours
(a lost rotated token would need a person to re-authorise).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from typing import Any, Protocol

import aiohttp
import msgspec

from bridgehead.control.sinks.config import SecretMissing, ServiceNowInstance

log = logging.getLogger("bridgehead.control.sinks")

_EARLY_S = 30.0


class AuthFailed(Exception):
    """The instance refused the credentials; retrying as is cannot help."""


class TokenUnavailable(Exception):
    """The token endpoint could not be reached or failed (5xx): worth retrying later."""


class RefreshTokens(Protocol):
    async def refresh_token(self, instance: str) -> tuple[str, str] | None: ...
    def keep_refresh_token(self, instance: str, token: str, origin: str, now: float) -> Any: ...


class Authenticator:
    def __init__(self, name: str, instance: ServiceNowInstance, tokens: RefreshTokens) -> None:
        self.name = name
        self.instance = instance
        self.tokens = tokens
        self._access: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def header(self, session: aiohttp.ClientSession) -> str:
        """The Authorization header value for the next request."""
        instance = self.instance
        if instance.auth == "basic":
            return "Basic " + base64.b64encode(f"{instance.username}:{self._secret('password')}".encode()).decode()
        if self._access is not None and time.monotonic() < self._renew_at:
            return f"Bearer {self._access}"
        async with self._lock:
            if self._access is None or time.monotonic() >= self._renew_at:
                await self._renew(session)
            return f"Bearer {self._access}"

    def invalidate(self, rejected: str) -> None:
        """The instance answered 401 to ``rejected``: the next request gets a new token."""
        if rejected == f"Bearer {self._access}":
            self._access = None

    def _secret(self, name: str) -> str:
        try:
            value = self.instance.secret(name)
        except SecretMissing as exc:
            raise AuthFailed(str(exc)) from None
        if not value:
            raise AuthFailed(f"{name} is empty")
        return value

    async def _renew(self, session: aiohttp.ClientSession) -> None:
        instance = self.instance
        form = {"client_id": instance.client_id or "", "client_secret": self._secret("client_secret")}
        origin = ""
        if instance.auth == "oauth_client_credentials":
            form["grant_type"] = "client_credentials"
        else:
            configured = self._secret("refresh_token")
            origin = hashlib.sha256(configured.encode()).hexdigest()
            kept = await self.tokens.refresh_token(self.name)
            # The kept (rotated) token descends from the configured one unless the admin has
            # configured a new one since: re-authorisation starts a new chain.
            refresh = kept[0] if kept is not None and kept[1] == origin else configured
            form.update(grant_type="refresh_token", refresh_token=refresh)
        url = instance.base_url + "/oauth_token.do"
        try:
            async with session.post(url, data=form, headers={"Accept": "application/json"}) as response:
                status, body = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TokenUnavailable(f"token endpoint {url}: {exc or type(exc).__name__}") from None
        if status >= 500 or status == 429:
            raise TokenUnavailable(f"token endpoint {url}: HTTP {status}")
        answer = _json(body)
        token = answer.get("access_token")
        if status != 200 or not isinstance(token, str):
            reason = answer.get("error_description") or answer.get("error") or body[:200].decode("utf-8", "replace")
            what = "refresh token" if instance.auth == "oauth_refresh_token" else "client credentials"
            raise AuthFailed(f"the instance refused the {what} (HTTP {status}: {reason})")
        rotated = answer.get("refresh_token")
        if instance.auth == "oauth_refresh_token" and isinstance(rotated, str) and rotated != form["refresh_token"]:
            await self.tokens.keep_refresh_token(self.name, rotated, origin, time.time())
            log.info("servicenow %s: the instance rotated the refresh token; the new one is stored", self.name)
        lifetime = float(answer.get("expires_in") or 1800)
        self._access = token
        self._renew_at = time.monotonic() + max(1.0, min(lifetime * 0.8, lifetime - _EARLY_S))


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}
