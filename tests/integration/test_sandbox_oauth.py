"""OAuth in the sandbox as an instance has it: client_credentials off until the system property
enables it (and the error says which), refresh tokens not rotated, and the JWT bearer grant
checked against the client's configured certificate (iss, sub, aud, exp and the RS256
signature). Every token is then used against the Table API, and what it wrote is read back.
"""

from __future__ import annotations

import base64
import datetime
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bridgehead_testing.sandbox_server import SandboxServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT = {"client_id": "bridgehead", "client_secret": "bridgehead"}


def certificate(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bridgehead-jwt")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(key: rsa.RSAPrivateKey, claims: dict[str, Any], alg: str = "RS256") -> str:
    head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    signature = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{b64url(signature)}"


def unsigned(claims: dict[str, Any]) -> str:
    """An "alg": "none" JWT (RFC 7519 §6), which must never be accepted."""
    return f"{b64url(json.dumps({'alg': 'none'}).encode())}.{b64url(json.dumps(claims).encode())}."


KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
CONFIG = f'''
[users.admin]
password = "admin"
roles = ["admin"]

[users.integration]
password = "integration-pw"

[oauth.clients.bridgehead]
secret = "bridgehead"
user = "integration"
jwt_certificate = """
{certificate(KEY)}"""

[oauth.clients.nojwt]
secret = "nojwt"
'''


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path_factory.mktemp("oauth"), CONFIG) as server:
        yield server


def token(sandbox: SandboxServer, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310 - loopback
        sandbox.url + "/oauth_token.do",
        data=urllib.parse.urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def with_bearer(sandbox: SandboxServer, access: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {access}", "Accept": "application/json", "Content-Type": "application/json"}
    request = urllib.request.Request(sandbox.url + path, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": "bridgehead",
        "sub": "integration",
        "aud": "bridgehead",
        "iat": now,
        "exp": now + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_client_credentials_is_off_and_the_error_names_the_property(sandbox: SandboxServer) -> None:
    status, body = token(sandbox, {"grant_type": "client_credentials", **CLIENT})
    assert status == 401
    assert body["error"] == "unauthorized_client"
    assert "glide.oauth.inbound.client.credential.grant_type.enabled" in body["error_description"]


def test_client_credentials_when_enabled(tmp_path: Path) -> None:
    config = CONFIG.replace("[users.admin]", "[oauth]\nclient_credentials = true\n\n[users.admin]")
    with SandboxServer(tmp_path / "cc", config) as sandbox:
        status, body = token(sandbox, {"grant_type": "client_credentials", **CLIENT})
        assert status == 200, body
        assert "refresh_token" not in body
        status, created = with_bearer(
            sandbox, body["access_token"], "POST", "/api/now/table/sys_user", {"user_name": "cc1"}
        )
        assert status == 201, created
        assert created["result"]["sys_created_by"] == "integration"


def test_refresh_tokens_are_not_rotated(sandbox: SandboxServer) -> None:
    status, first = token(
        sandbox, {"grant_type": "password", "username": "integration", "password": "integration-pw", **CLIENT}
    )
    assert status == 200, first
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], **CLIENT}
    status, second = token(sandbox, form)
    assert status == 200, second
    assert second["refresh_token"] == first["refresh_token"]
    status, third = token(sandbox, form)  # the old one still works
    assert status == 200, third
    assert with_bearer(sandbox, third["access_token"], "GET", "/api/now/table/sys_user?sysparm_limit=1")[0] == 200


def test_the_jwt_bearer_grant(sandbox: SandboxServer) -> None:
    """A JWT signed by the client's key gives an access token acting as its sub; no refresh token."""
    status, body = token(sandbox, {"grant_type": JWT_BEARER, "assertion": jwt(KEY, claims()), **CLIENT})
    assert status == 200, body
    assert "refresh_token" not in body
    assert body["token_type"] == "Bearer"  # noqa: S105 - a token type, not a password
    status, created = with_bearer(
        sandbox, body["access_token"], "POST", "/api/now/table/sys_user", {"user_name": "jwt1"}
    )
    assert status == 201, created
    assert created["result"]["sys_created_by"] == "integration"
    # The token endpoint's own URL is a valid audience too (RFC 7523 §3).
    status, body = token(
        sandbox,
        {"grant_type": JWT_BEARER, "assertion": jwt(KEY, claims(aud=sandbox.url + "/oauth_token.do")), **CLIENT},
    )
    assert status == 200, body


@pytest.mark.parametrize(
    ("what", "assertion_of", "error"),
    [
        ("signed by another key", lambda: jwt(OTHER_KEY, claims()), "invalid_grant"),
        ("expired", lambda: jwt(KEY, claims(exp=int(time.time()) - 5)), "invalid_grant"),
        ("no exp", lambda: jwt(KEY, claims(exp=None)), "invalid_grant"),
        ("another issuer", lambda: jwt(KEY, claims(iss="someone")), "invalid_grant"),
        ("another audience", lambda: jwt(KEY, claims(aud="https://elsewhere.example/oauth_token.do")), "invalid_grant"),
        ("an unknown user", lambda: jwt(KEY, claims(sub="nobody")), "invalid_grant"),
        ("not yet valid", lambda: jwt(KEY, claims(nbf=int(time.time()) + 600)), "invalid_grant"),
        ("alg none", lambda: unsigned(claims()), "invalid_grant"),
        ("not a JWT", lambda: "abc", "invalid_grant"),
        ("missing", lambda: "", "invalid_request"),
    ],
)
def test_the_jwt_bearer_grant_refuses(sandbox: SandboxServer, what: str, assertion_of: Any, error: str) -> None:
    status, body = token(sandbox, {"grant_type": JWT_BEARER, "assertion": assertion_of(), **CLIENT})
    assert status in (400, 401), (what, body)
    assert body["error"] == error, (what, body)
    assert "access_token" not in body


def test_the_jwt_bearer_grant_needs_a_verifier_for_the_client(sandbox: SandboxServer) -> None:
    form = {"grant_type": JWT_BEARER, "assertion": jwt(KEY, claims(iss="nojwt", aud="nojwt"))}
    status, body = token(sandbox, {**form, "client_id": "nojwt", "client_secret": "nojwt"})
    assert (status, body["error"]) == (401, "unauthorized_client"), body
    status, body = token(sandbox, {**form, "client_id": "nojwt", "client_secret": "wrong"})
    assert (status, body["error"]) == (401, "invalid_client"), body


def test_a_bad_certificate_stops_the_sandbox_at_start(tmp_path: Path) -> None:
    config = CONFIG.replace("-----BEGIN CERTIFICATE-----", "-----BEGIN CERTIFICATE-----\nbroken")
    sandbox = SandboxServer(tmp_path / "bad", config)
    with pytest.raises(Exception, match=r"(?s)jwt_certificate|exited|did not start"):
        sandbox.start(timeout=10)
    sandbox.stop()
