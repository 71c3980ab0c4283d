"""``[servicenow.NAME]`` tables of the control plane's configuration: the instances sinks
deliver to (docs/sinks.md lists every key)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from bridgehead.core.redact import REDACTOR

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
INSTANCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# A ServiceNow table or import set name; the instance reads names case-insensitively.
TableName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,79}$")]


class ServiceNowInstance(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str
    # The tables and import sets sinks may write here (required, so that an instance is never
    # open to every table by omission); a job naming another is refused at submit and, if it
    # was stored before the list changed, at delivery.
    tables: Annotated[list[TableName], msgspec.Meta(max_length=10_000)]
    # Whether a table sink may have on_delete = "delete" (rows deleted, not deactivated).
    allow_delete: bool = False
    auth: Literal["basic", "oauth_client_credentials", "oauth_refresh_token", "oauth_password", "oauth_jwt"] = (
        "oauth_client_credentials"
    )
    client_id: str | None = None
    client_secret_env: str | None = None
    client_secret_file: str | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    # oauth_refresh_token: the first refresh token (from the instance's OAuth consent). Each
    # rotated token the instance returns is stored at once in the control plane's store and
    # used from then on; change this value to re-authorise.
    refresh_token_env: str | None = None
    refresh_token_file: str | None = None
    # oauth_jwt: the JWT bearer grant. An RS256 JWT signed with this PEM private key (its public
    # key in the instance's JWT verifier map, under jwt_kid) is exchanged for an access token.
    jwt_private_key_file: str | None = None
    jwt_kid: str | None = None
    jwt_issuer: str | None = None  # iss; default: client_id
    jwt_subject: str | None = None  # sub, the user the token acts as; default: username
    jwt_audience: str | None = None  # aud; default: client_id
    jwt_lifetime_s: Annotated[int, msgspec.Meta(ge=30, le=3600)] = 300
    # Every lookup GET stays under this many bytes of URL: an IN list is split to fit. Instances
    # and the proxies in front of them refuse longer request lines (often at 8 KiB) with a 400.
    max_url_bytes: Annotated[int, msgspec.Meta(ge=1024, le=65_536)] = 6_000
    # insertMultiple's record keys: column "labels" (an instance's default), column "names"
    # (when a sys_rest_insert_multiple record says "Column name"), or "auto": read that record
    # and the staging table's labels from the instance.
    insert_multiple_keys: Literal["auto", "labels", "names"] = "auto"
    # An asynchronous insertMultiple is read back from sys_import_set_row: polled from
    # import_poll_s, backing off to 10 x that, for at most import_wait_s.
    import_poll_s: Annotated[float, msgspec.Meta(ge=0.05, le=60)] = 0.5
    import_wait_s: Annotated[float, msgspec.Meta(ge=1, le=86_400)] = 600.0
    # How long the tables' definitions read from sys_db_object / sys_dictionary are kept.
    schema_ttl_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 300.0
    # The Import Set API's recommended most records per insertMultiple.
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 200
    # And at most this many bytes of records per request (a batch of large records is sent in
    # several requests; a single larger record goes alone).
    max_request_bytes: Annotated[int, msgspec.Meta(ge=64 * 1024, le=64 * 1024 * 1024)] = 4 * 1024 * 1024
    # Requests per second to this instance, all jobs together (a token bucket).
    max_requests_per_s: Annotated[float, msgspec.Meta(gt=0, le=10_000)] = 20.0
    # Requests in flight to this instance at once, all jobs together.
    max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=256)] = 4
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 60.0
    # Retries of one request on timeouts, dropped connections, 5xx and 429, with backoff and
    # jitter, before the delivery is marked failed (it resumes on POST .../sync/retry).
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 30
    backoff_max_s: Annotated[float, msgspec.Meta(ge=0.1, le=3600)] = 60.0
    ca_file: str | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"url {self.url!r}: expected https://INSTANCE.service-now.com")
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
            raise ValueError(f"url {self.url!r}: plain http is accepted only on loopback; use https")
        if parts.query or parts.fragment or parts.username:
            raise ValueError(f"url {self.url!r}: no query, fragment or credentials in the URL")
        need = {
            "basic": (("username", self.username), ("password", self.password_env or self.password_file)),
            "oauth_client_credentials": (
                ("client_id", self.client_id),
                ("client_secret", self.client_secret_env or self.client_secret_file),
            ),
            "oauth_refresh_token": (
                ("client_id", self.client_id),
                ("client_secret", self.client_secret_env or self.client_secret_file),
                ("refresh_token", self.refresh_token_env or self.refresh_token_file),
            ),
            "oauth_password": (
                ("client_id", self.client_id),
                ("client_secret", self.client_secret_env or self.client_secret_file),
                ("username", self.username),
                ("password", self.password_env or self.password_file),
            ),
            "oauth_jwt": (
                ("client_id", self.client_id),
                ("client_secret", self.client_secret_env or self.client_secret_file),
                ("jwt_private_key_file", self.jwt_private_key_file),
                ("jwt_subject (or username)", self.jwt_subject or self.username),
            ),
        }[self.auth]
        missing = [name for name, value in need if not value]
        if missing:
            raise ValueError(f'auth = "{self.auth}" needs {", ".join(missing)} (secrets as *_env or *_file)')
        for secret in ("client_secret", "password", "refresh_token"):
            if getattr(self, f"{secret}_env") and getattr(self, f"{secret}_file"):
                raise ValueError(f"set only one of {secret}_env and {secret}_file")

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")

    def secret(self, name: str) -> str | None:
        """Read secret ``name`` now (a rotated file or variable is picked up on the next token)."""
        env, file = getattr(self, f"{name}_env"), getattr(self, f"{name}_file")
        value: str | None = None
        if env:
            value = os.environ.get(env)
            if value is None:
                raise SecretMissing(f"environment variable {env} ({name}) is not set")
        elif file:
            try:
                value = Path(file).read_text().strip()
            except OSError as exc:
                raise SecretMissing(f"cannot read {file} ({name}): {exc.strerror}") from None
        REDACTOR.add(value)
        return value


class SecretMissing(Exception):
    """A secret the instance's configuration names cannot be read."""


def check_secrets(name: str, instance: ServiceNowInstance) -> list[str]:
    """Problems reading the instance's secrets now (reported at start, not as a failed delivery)."""
    problems = []
    for secret in ("client_secret", "password", "refresh_token"):
        try:
            instance.secret(secret)
        except SecretMissing as exc:
            problems.append(f"servicenow.{name}: {exc}")
    if instance.jwt_private_key_file and not Path(instance.jwt_private_key_file).is_file():
        problems.append(f"servicenow.{name}: cannot read {instance.jwt_private_key_file} (jwt_private_key_file)")
    return problems
