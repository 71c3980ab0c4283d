"""The sandbox's TOML configuration (``bridgehead-sandbox serve --config sandbox.toml``).

Every key is optional; docs/sandbox.md documents each one with an example. Unknown keys are
errors (a misspelt key silently ignored would make a test pass for the wrong reason). With no
file the sandbox is a stand-in instance with user ``admin``/``admin``, OAuth client
``bridgehead``/``bridgehead``, no rate limit, no faults and no transform maps.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from bridgehead.core.errors import ConfigError
from bridgehead.core.tomlconfig import convert, read_toml
from bridgehead_sandbox import query

MiB = 1024 * 1024
TABLE_NAME = re.compile(r"^[A-Za-z0-9_]{1,80}$")

Seconds = Annotated[float, msgspec.Meta(ge=0, le=10 * 365 * 86_400)]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class InstanceSection(_Section):
    listen: str = "127.0.0.1:8090"
    # How POST /api/now/import/{t}/insertMultiple answers: per-row results ("sync", the shape of
    # the single-row API), the documented asynchronous ids ("async"), or not at all
    # ("unsupported", as an instance without the API answers: 400, unknown URI).
    insert_multiple: Literal["sync", "async", "unsupported"] = "sync"
    # glide.invalid_query.returns_no_rows: a query with a term the sandbox drops returns nothing.
    strict_query: bool = False
    synchronous: Literal["normal", "full"] = "normal"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"


class UserSection(_Section):
    password: Annotated[str, msgspec.Meta(min_length=1)]
    roles: list[str] = msgspec.field(default_factory=list)
    active: bool = True


class OAuthClientSection(_Section):
    secret: Annotated[str, msgspec.Meta(min_length=1)]
    # The "OAuth Application User": whom a client_credentials token acts as.
    user: str = "admin"


def _default_clients() -> dict[str, OAuthClientSection]:
    return {"bridgehead": OAuthClientSection(secret="bridgehead", user="admin")}  # noqa: S106 - the documented demo client


class OAuthSection(_Section):
    access_token_ttl_s: Annotated[float, msgspec.Meta(gt=0, le=365 * 86_400)] = 1800.0
    refresh_token_ttl_s: Annotated[float, msgspec.Meta(gt=0, le=10 * 365 * 86_400)] = 8_640_000.0
    # ServiceNow returns the same refresh token on a refresh (no rotation); on = a new one each
    # time, and the old one stops working.
    rotate_refresh_tokens: bool = False
    client_credentials: bool = True  # glide.oauth.inbound.client.credential.grant_type.enabled
    # "rfc6749": {"error": "invalid_client" | "invalid_grant" | ..., "error_description"};
    # "servicenow": the body seen from real instances, {"error": "server_error", "error_description": "access_denied"}.
    error_style: Literal["rfc6749", "servicenow"] = "rfc6749"
    clients: dict[str, OAuthClientSection] = msgspec.field(default_factory=_default_clients)


class RateLimitSection(_Section):
    requests: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 0  # 0 = no rate limit
    per_seconds: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 1.0
    scope: Literal["user", "global"] = "user"


class FaultsSection(_Section):
    latency_ms: Annotated[float, msgspec.Meta(ge=0, le=600_000)] = 0.0
    latency_jitter_ms: Annotated[float, msgspec.Meta(ge=0, le=600_000)] = 0.0
    error_rate: Fraction = 0.0
    error_every: Annotated[int, msgspec.Meta(ge=0)] = 0
    error_status: Literal[500, 502, 503, 504] = 503
    drop_rate: Fraction = 0.0
    drop_every: Annotated[int, msgspec.Meta(ge=0)] = 0
    outage_s: Seconds = 0.0  # from start-up (config) or from now (admin endpoint)
    outage_mode: Literal["error", "drop"] = "error"


class LimitsSection(_Section):
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1024 * MiB)] = 10 * MiB
    # SERVICENOW_API.md §6.2: an instance answers an oversized body 400; 413 for clients that
    # want the HTTP status.
    oversize_status: Literal[400, 413] = 400
    max_insert_multiple: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000
    max_page_size: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000
    # Every record is also held in memory (about 1 KB each), so the total is bounded.
    max_records: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] = 1_000_000
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    max_tokens: Annotated[int, msgspec.Meta(ge=10, le=10_000_000)] = 100_000


class TransformSection(_Section):
    target: str
    name: str = ""  # the transform_map name in results; default "<staging> to <target>"
    fields: dict[str, str] = msgspec.field(default_factory=dict)  # target field = source field
    auto_map: bool = False  # also copy every unmapped source field under its own name
    coalesce: list[str] = msgspec.field(default_factory=list)  # target fields
    display_field: str = "name"
    required: list[str] = msgspec.field(default_factory=list)  # source fields; empty -> error
    reject_if: str = ""  # encoded query on the source row; a match -> error
    reject_message: str = ""
    ignore_if: str = ""  # encoded query on the source row; a match -> ignored
    update_only: bool = False  # no coalesce match -> ignored (the "ignore on insert" script)
    copy_empty_fields: bool = False
    create_on_empty_coalesce: bool = False


def _default_users() -> dict[str, UserSection]:
    return {"admin": UserSection(password="admin", roles=["admin"])}  # noqa: S106 - the documented demo user


class SandboxConfig(_Section):
    instance: InstanceSection = msgspec.field(default_factory=InstanceSection)
    users: dict[str, UserSection] = msgspec.field(default_factory=_default_users)
    oauth: OAuthSection = msgspec.field(default_factory=OAuthSection)
    rate_limit: RateLimitSection = msgspec.field(default_factory=RateLimitSection)
    faults: FaultsSection = msgspec.field(default_factory=FaultsSection)
    limits: LimitsSection = msgspec.field(default_factory=LimitsSection)
    transforms: dict[str, TransformSection] = msgspec.field(default_factory=dict)  # by staging table


def load_config(path: str | None) -> SandboxConfig:
    if path is None:
        return SandboxConfig()
    raw = read_toml(path)
    config = convert(raw, SandboxConfig, path, "")
    check(config, path)
    return config


def check(config: SandboxConfig, path: str) -> None:
    """What the types cannot say: names that must exist, queries that must parse."""
    for name, user in config.users.items():
        if not name or ":" in name:
            raise ConfigError(path, f"users.{name}", "a user name must be non-empty and hold no ':'")
        if not user.password:
            raise ConfigError(path, f"users.{name}.password", "must not be empty")
    for client_id, client in config.oauth.clients.items():
        if client.user not in config.users:
            raise ConfigError(path, f"oauth.clients.{client_id}.user", f"no user {client.user!r} in [users]")
    for staging, tm in config.transforms.items():
        where = f"transforms.{staging}"
        for table in (staging, tm.target):
            if not TABLE_NAME.match(table):
                raise ConfigError(path, where, f"{table!r} is not a table name ([A-Za-z0-9_], at most 80)")
        if not tm.fields and not tm.auto_map:
            raise ConfigError(path, f"{where}.fields", "maps no field (give fields, or auto_map = true)")
        for field in tm.coalesce:
            if field not in tm.fields and not tm.auto_map:
                raise ConfigError(path, f"{where}.coalesce", f"{field!r} is not a target field in fields")
        for key in ("reject_if", "ignore_if"):
            text = getattr(tm, key)
            if text:
                parsed = query.parse(text)
                if parsed.invalid or not parsed.groups:
                    bad = ", ".join(parsed.invalid) or text
                    raise ConfigError(path, f"{where}.{key}", f"cannot use the encoded query term(s) {bad}")
