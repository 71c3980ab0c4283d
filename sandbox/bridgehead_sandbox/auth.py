"""Who is calling: HTTP Basic, OAuth bearer tokens, and the ``/oauth_token.do`` grants.

Users and OAuth clients come from the config (plain-text passwords: the sandbox is a stand-in
for tests and demos, never a place for real credentials). Tokens are random, kept as SHA-256
hashes in memory and in the database, so they outlive a restart as an instance's do.

Grants (SERVICENOW_API.md §4.2):

    password            access + refresh token; a repeat while the access token is valid
                        returns that same access token, as an instance does
    refresh_token       a new access token; the same refresh token back (ServiceNow does not
                        rotate), or with ``oauth.rotate_refresh_tokens`` a new one that
                        replaces the old, which stops working
    client_credentials  an access token acting as the client's application user; no refresh.
                        Off unless ``oauth.client_credentials`` (the instance property
                        glide.oauth.inbound.client.credential.grant_type.enabled)
    urn:ietf:params:oauth:grant-type:jwt-bearer
                        ``assertion``: a JWT the client signed (RS256/384/512) with the key of
                        its configured certificate (``jwt_certificate``, an instance's "JWT
                        verifier map"); iss = the client_id, aud = the client_id or the token
                        endpoint's URL, exp in the future, sub = the user the token acts as.
                        An access token, no refresh token (RFC 7523 §2.1)

Failures are ``OAuthFailure``s: 401 ``invalid_client`` (unknown client or wrong secret) and
401 ``invalid_grant`` (bad user credentials, unknown, expired or rotated-out refresh token),
400 ``invalid_request`` and ``unsupported_grant_type``. Instances answer 401 for the first
two; ``oauth.error_style = "servicenow"`` also gives their body.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bridgehead.core.errors import ConfigError
from bridgehead_sandbox.config import SandboxConfig
from bridgehead_sandbox.errors import not_authenticated
from bridgehead_sandbox.store import Store

SCOPE = "useraccount"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GRANTS = ("password", "refresh_token", "client_credentials", JWT_BEARER)
MAX_ASSERTION = 16 * 1024  # bytes; a JWT of a few claims is well under 2 KB
_JWT_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "RS256": hashes.SHA256,
    "RS384": hashes.SHA384,
    "RS512": hashes.SHA512,
}
CLIENT_CREDENTIALS_OFF = (
    "the client_credentials grant is disabled on this instance: set the system property "
    "glide.oauth.inbound.client.credential.grant_type.enabled to true "
    "(in the sandbox: oauth.client_credentials = true)"
)


@dataclasses.dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


@dataclasses.dataclass
class _Token:
    kind: str  # access | refresh
    client_id: str
    username: str
    expires_at: float


class OAuthFailure(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    def __init__(self, config: SandboxConfig, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.users = config.users
        self.oauth = config.oauth
        self.max_tokens = config.limits.max_tokens
        self._store = store
        self._clock = clock
        now = clock()
        self._tokens: dict[str, _Token] = {}
        expired = []
        for digest, kind, client_id, username, expires_at in store.tokens():
            if expires_at > now:
                self._tokens[digest] = _Token(kind, client_id, username, expires_at)
            else:
                expired.append(digest)
        store.drop_tokens(expired)
        # (client, user) -> the access token a password grant gave last: instances hand the
        # same one back while it is valid. Only the hash is stored, so this lasts one run.
        self._password_access: dict[tuple[str, str], str] = {}
        self._jwt_keys = {
            cid: _public_key(cid, c.jwt_certificate) for cid, c in self.oauth.clients.items() if c.jwt_certificate
        }

    # --- API requests ----------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller of an API request, or a 401 ``SnError``."""
        scheme, _, credentials = (authorization or "").partition(" ")
        principal = None
        if scheme.lower() == "basic":
            principal = self._basic(credentials.strip())
        elif scheme.lower() == "bearer":
            principal = self._bearer(credentials.strip())
        if principal is None:
            raise not_authenticated()
        return principal

    def _basic(self, credentials: str) -> Principal | None:
        try:
            name, sep, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return self._check_password(name, password) if sep else None

    def _check_password(self, name: str, password: str) -> Principal | None:
        user = self.users.get(name)
        # Compare even for an unknown user, so timing does not tell which names exist.
        expected = user.password if user is not None else secrets.token_hex(16)
        ok = hmac.compare_digest(expected.encode(), password.encode())
        if user is None or not ok or not user.active:
            return None
        return Principal(name, frozenset(user.roles))

    def _bearer(self, token: str) -> Principal | None:
        entry = self._tokens.get(token_hash(token))
        if entry is None or entry.kind != "access" or entry.expires_at <= self._clock():
            return None
        user = self.users.get(entry.username)
        if user is None or not user.active:
            return None
        return Principal(entry.username, frozenset(user.roles))

    # --- /oauth_token.do -------------------------------------------------------------------

    def grant(self, form: Mapping[str, str], token_endpoint: str = "") -> dict[str, Any]:
        """Answer one token request (a form already decoded), or raise ``OAuthFailure``.
        ``token_endpoint``: this endpoint's URL, which a JWT's ``aud`` may name."""
        grant_type = form.get("grant_type", "")
        if not grant_type:
            raise OAuthFailure(400, "invalid_request", "grant_type is required")
        if grant_type not in GRANTS:
            raise OAuthFailure(400, "unsupported_grant_type", f"grant_type {grant_type!r} is not supported")
        client_id = form.get("client_id", "")
        client = self.oauth.clients.get(client_id)
        expected = client.secret if client is not None else secrets.token_hex(16)
        if not hmac.compare_digest(expected.encode(), form.get("client_secret", "").encode()) or client is None:
            raise OAuthFailure(401, "invalid_client", "client authentication failed (client_id or client_secret)")
        if grant_type == "client_credentials":
            if not self.oauth.client_credentials:
                raise OAuthFailure(401, "unauthorized_client", CLIENT_CREDENTIALS_OFF)
            self._require_user(client.user)
            access, ttl = self._issue("access", client_id, client.user, self.oauth.access_token_ttl_s)
            return _body(access, ttl)
        if grant_type == JWT_BEARER:
            username = self._jwt_subject(client_id, form.get("assertion", ""), token_endpoint)
            self._require_user(username)
            access, ttl = self._issue("access", client_id, username, self.oauth.access_token_ttl_s)
            return _body(access, ttl)
        if grant_type == "password":
            username = form.get("username", "")
            if self._check_password(username, form.get("password", "")) is None:
                raise OAuthFailure(401, "invalid_grant", "invalid username or password")
            access, ttl = self._password_access_token(client_id, username)
            refresh, _ = self._issue("refresh", client_id, username, self.oauth.refresh_token_ttl_s)
            return _body(access, ttl, refresh)
        return self._refresh(client_id, form.get("refresh_token", ""))

    def _refresh(self, client_id: str, refresh: str) -> dict[str, Any]:
        if not refresh:
            raise OAuthFailure(400, "invalid_request", "refresh_token is required")
        digest = token_hash(refresh)
        entry = self._tokens.get(digest)
        if entry is None or entry.kind != "refresh" or entry.client_id != client_id:
            raise OAuthFailure(401, "invalid_grant", "the refresh token is invalid")
        if entry.expires_at <= self._clock():
            self._forget([digest])
            raise OAuthFailure(401, "invalid_grant", "the refresh token has expired")
        self._require_user(entry.username)
        access, ttl = self._issue("access", client_id, entry.username, self.oauth.access_token_ttl_s)
        if self.oauth.rotate_refresh_tokens:
            self._forget([digest])
            refresh, _ = self._issue("refresh", client_id, entry.username, self.oauth.refresh_token_ttl_s)
        return _body(access, ttl, refresh)

    def _jwt_subject(self, client_id: str, assertion: str, token_endpoint: str) -> str:
        """Check a JWT bearer assertion (RFC 7523 §3) and return its ``sub``, the user."""
        key = self._jwt_keys.get(client_id)
        if key is None:
            raise OAuthFailure(
                401,
                "unauthorized_client",
                f"client {client_id!r} has no JWT verifier map (oauth.clients.<id>.jwt_certificate)",
            )
        if not assertion:
            raise OAuthFailure(400, "invalid_request", "assertion is required for the JWT bearer grant")
        claims = verify_jwt(assertion, key)
        now = self._clock()
        audiences = claims.get("aud")
        audiences = audiences if isinstance(audiences, list) else [audiences]
        if claims.get("iss") != client_id:
            raise OAuthFailure(401, "invalid_grant", "the JWT's iss is not the client_id")
        if not any(a in (client_id, token_endpoint) for a in audiences if isinstance(a, str) and a):
            raise OAuthFailure(401, "invalid_grant", "the JWT's aud is neither the client_id nor the token endpoint")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool) or not math.isfinite(exp) or exp <= now:
            raise OAuthFailure(401, "invalid_grant", "the JWT has no exp, or it has expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and not isinstance(nbf, bool) and nbf > now:
            raise OAuthFailure(401, "invalid_grant", "the JWT is not valid yet (nbf)")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise OAuthFailure(401, "invalid_grant", "the JWT has no sub (the user)")
        return sub

    def _require_user(self, username: str) -> None:
        user = self.users.get(username)
        if user is None or not user.active:
            raise OAuthFailure(401, "invalid_grant", f"user {username!r} is not active")

    def _password_access_token(self, client_id: str, username: str) -> tuple[str, float]:
        previous = self._password_access.get((client_id, username))
        if previous is not None:
            entry = self._tokens.get(token_hash(previous))
            if entry is not None and entry.expires_at > self._clock():
                return previous, entry.expires_at - self._clock()
        access, ttl = self._issue("access", client_id, username, self.oauth.access_token_ttl_s)
        self._password_access[(client_id, username)] = access
        return access, ttl

    def _issue(self, kind: str, client_id: str, username: str, ttl: float) -> tuple[str, float]:
        if len(self._tokens) >= self.max_tokens:
            self._make_room()
        token = secrets.token_urlsafe(48)
        expires_at = self._clock() + ttl
        digest = token_hash(token)
        self._tokens[digest] = _Token(kind, client_id, username, expires_at)
        self._store.put_token(digest, kind, client_id, username, expires_at)
        return token, ttl

    def _make_room(self) -> None:
        """Bounded: drop expired tokens, then the tenth that expires soonest."""
        now = self._clock()
        doomed = [d for d, t in self._tokens.items() if t.expires_at <= now]
        if len(self._tokens) - len(doomed) >= self.max_tokens:
            alive = sorted((t.expires_at, d) for d, t in self._tokens.items() if t.expires_at > now)
            doomed += [d for _, d in alive[: max(1, self.max_tokens // 10)]]
        self._forget(doomed)

    def _forget(self, digests: list[str]) -> None:
        for digest in digests:
            self._tokens.pop(digest, None)
        self._store.drop_tokens(digests)

    def forget_all(self) -> None:
        self._forget(list(self._tokens))
        self._password_access.clear()


def _body(access: str, ttl: float, refresh: str | None = None) -> dict[str, Any]:
    # expires_in is the seconds left, rounded down: a fresh 1800 s token says 1799, as instances do.
    body: dict[str, Any] = {"access_token": access}
    if refresh is not None:
        body["refresh_token"] = refresh
    body.update(scope=SCOPE, token_type="Bearer", expires_in=max(0, math.ceil(ttl) - 1))  # noqa: S106 - a token type, not a password
    return body


def _public_key(client_id: str, pem: str) -> rsa.RSAPublicKey:
    """The RSA public key of a client's JWT certificate (or bare public key), in PEM."""
    where = f"oauth.clients.{client_id}.jwt_certificate"
    key: object
    try:
        data = pem.strip().encode()
        if b"CERTIFICATE" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigError("sandbox config", where, f"not a PEM certificate or public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError("sandbox config", where, "must be an RSA key (the sandbox checks RS256/384/512)")
    return key


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_jwt(token: str, key: rsa.RSAPublicKey) -> dict[str, Any]:
    """The claims of a compact JWS signed RS256/384/512 by ``key``, or an ``OAuthFailure``."""
    if len(token) > MAX_ASSERTION:
        raise OAuthFailure(400, "invalid_request", f"the assertion is longer than {MAX_ASSERTION} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise OAuthFailure(401, "invalid_grant", "the assertion is not a signed JWT (header.payload.signature)")
    try:
        header = json.loads(_b64url(parts[0]))
        claims = json.loads(_b64url(parts[1]))
        signature = _b64url(parts[2])
    except (ValueError, binascii.Error):
        raise OAuthFailure(401, "invalid_grant", "the assertion is not valid base64url JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise OAuthFailure(401, "invalid_grant", "the JWT's header and payload must be JSON objects")
    algorithm = _JWT_HASHES.get(str(header.get("alg")))
    if algorithm is None:
        raise OAuthFailure(401, "invalid_grant", f"unsupported JWT alg {header.get('alg')!r} (RS256, RS384, RS512)")
    try:
        key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise OAuthFailure(
            401, "invalid_grant", "the JWT's signature does not match the client's certificate"
        ) from None
    return claims


def failure_body(failure: OAuthFailure, style: str) -> dict[str, str]:
    if style == "servicenow":
        return {"error_description": "access_denied", "error": "server_error"}
    return {"error": failure.error, "error_description": failure.description}
