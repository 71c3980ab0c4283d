"""How the sink proves who it is to a ServiceNow instance: basic auth, or OAuth 2.0 tokens
from ``/oauth_token.do``: client credentials (disabled on an instance until a system property
enables it), a refresh token (rotated or not), the password grant (then its refresh token),
or the JWT bearer grant (an RS256 JWT signed with our key, the grant ServiceNow documents for
external clients). A refused grant fails with ``AuthFailed`` naming what to change.

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
import secrets
import time
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import msgspec
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

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
        self._refresh: str | None = None  # oauth_password: the grant's refresh token
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
        elif instance.auth == "oauth_jwt":
            form.update(grant_type=JWT_BEARER, assertion=jwt_assertion(instance))
        elif instance.auth == "oauth_password":
            if self._refresh is not None:
                # The password grant's refresh token first (one less use of the password);
                # refused (expired, revoked), the password again.
                try:
                    await self._token(session, {**form, "grant_type": "refresh_token", "refresh_token": self._refresh})
                    return
                except AuthFailed:
                    self._refresh = None
            form.update(grant_type="password", username=instance.username or "", password=self._secret("password"))
        else:
            configured = self._secret("refresh_token")
            origin = hashlib.sha256(configured.encode()).hexdigest()
            kept = await self.tokens.refresh_token(self.name)
            # The kept (rotated) token descends from the configured one unless the admin has
            # configured a new one since: re-authorisation starts a new chain.
            refresh = kept[0] if kept is not None and kept[1] == origin else configured
            form.update(grant_type="refresh_token", refresh_token=refresh)
        await self._token(session, form, origin)

    async def _token(self, session: aiohttp.ClientSession, form: dict[str, str], origin: str = "") -> None:
        instance = self.instance
        url = instance.base_url + "/oauth_token.do"
        try:
            async with session.post(url, data=form, headers={"Accept": "application/json"}) as response:
                status, body = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TokenUnavailable(f"token endpoint {url}: {exc or type(exc).__name__}") from None
        if status >= 500 and not _refusal(body) or status == 429:
            raise TokenUnavailable(f"token endpoint {url}: HTTP {status}")
        answer = _json(body)
        token = answer.get("access_token")
        if status != 200 or not isinstance(token, str):
            raise AuthFailed(refusal_message(form["grant_type"], status, answer, body))
        rotated = answer.get("refresh_token")
        if isinstance(rotated, str) and rotated:
            if instance.auth == "oauth_password":
                self._refresh = rotated  # kept in memory: the password makes a new one any time
            elif instance.auth == "oauth_refresh_token" and rotated != form.get("refresh_token"):
                await self.tokens.keep_refresh_token(self.name, rotated, origin, time.time())
                log.info("servicenow %s: the instance rotated the refresh token; the new one is stored", self.name)
        lifetime = float(answer.get("expires_in") or 1800)
        self._access = token
        self._renew_at = time.monotonic() + max(1.0, min(lifetime * 0.8, lifetime - _EARLY_S))


JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_CLIENT_CREDENTIALS_PROPERTY = "glide.oauth.inbound.client.credential.grant_type.enabled"
# What to change on the instance when it refuses a grant, by grant (docs/sinks.md "OAuth").
_FIXES = {
    "client_credentials": (
        "the client credentials grant is disabled on an instance until the system property "
        f"{_CLIENT_CREDENTIALS_PROPERTY} = true, and the OAuth application (oauth_entity) needs an "
        "OAuth Application User; or check client_id and the client secret"
    ),
    "refresh_token": (
        "the refresh token is expired, revoked or another client's: a person must authorise again and "
        "configure the new refresh token (refresh_token_env / refresh_token_file)"
    ),
    "password": (
        "check username and password, that the user is active, not locked out, and not "
        "'Web service access only' if the instance requires interactive sessions for the password grant, "
        "and the OAuth application's client_id and secret"
    ),
    JWT_BEARER: (
        "the instance needs an OAuth application for the JWT bearer grant ('OAuth JWT API endpoint for "
        "external clients') with a JWT verifier map holding the public key of jwt_private_key_file under "
        "jwt_kid, and a user matching sub (jwt_subject); check iss/aud and the clocks"
    ),
}


def refusal_message(grant: str, status: int, answer: dict[str, Any], body: bytes) -> str:
    what = {
        "client_credentials": "client credentials",
        "refresh_token": "refresh token",
        "password": "password grant",
        JWT_BEARER: "JWT bearer grant",
    }.get(grant, grant)
    reason = answer.get("error_description") or answer.get("error") or body[:200].decode("utf-8", "replace")
    error = str(answer.get("error") or "")
    if error and error != reason:
        reason = f"{error}: {reason}"
    return f"the instance refused the {what} (HTTP {status}: {reason}); {_FIXES.get(grant, '')}".rstrip("; ")


def _refusal(body: bytes) -> bool:
    """An instance answers a refused grant ``{"error": "server_error", "error_description":
    "access_denied"}``, sometimes with a 5xx: that is a refusal, not an outage."""
    answer = _json(body)
    return answer.get("error_description") == "access_denied" or answer.get("error") in (
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "access_denied",
    )


def jwt_assertion(instance: ServiceNowInstance, now: float | None = None) -> str:
    """An RS256-signed JWT for the JWT bearer grant (RFC 7523): iss, sub, aud, iat, exp, jti."""
    if not instance.jwt_private_key_file:
        raise AuthFailed('auth = "oauth_jwt" needs jwt_private_key_file')
    try:
        pem = Path(instance.jwt_private_key_file).read_bytes()
    except OSError as exc:
        raise AuthFailed(
            f"cannot read {instance.jwt_private_key_file} (jwt_private_key_file): {exc.strerror}"
        ) from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise AuthFailed(
            f"jwt_private_key_file {instance.jwt_private_key_file}: not an unencrypted PEM key ({exc})"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise AuthFailed(f"jwt_private_key_file {instance.jwt_private_key_file}: RS256 needs an RSA key")
    issued = int(time.time() if now is None else now)
    header: dict[str, str] = {"alg": "RS256", "typ": "JWT"}
    if instance.jwt_kid:
        header["kid"] = instance.jwt_kid
    claims = {
        "iss": instance.jwt_issuer or instance.client_id or "",
        "sub": instance.jwt_subject or instance.username or "",
        "aud": instance.jwt_audience or instance.client_id or "",
        "iat": issued,
        "nbf": issued - 5,
        "exp": issued + instance.jwt_lifetime_s,
        "jti": secrets.token_hex(16),
    }
    signing_input = _b64(msgspec.json.encode(header)) + "." + _b64(msgspec.json.encode(claims))
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64(signature)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}
