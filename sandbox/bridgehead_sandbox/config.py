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
    # How POST /api/now/import/{t}/insertMultiple answers: the documented asynchronous ids,
    # transformed afterwards ("async", an instance's default), per-row results ("sync", the
    # shape of the single-row API; lenient), or not at all ("unsupported", as an instance
    # without the API answers: 400, unknown URI).
    insert_multiple: Literal["sync", "async", "unsupported"] = "async"
    # Which keys insertMultiple takes for a staging table with no sys_rest_insert_multiple
    # record: column labels (an instance's default), column names, or either (lenient).
    insert_multiple_columns: Literal["label", "name", "label_or_name"] = "label"
    # How long the asynchronous transform waits before it picks up an import set (an
    # instance's scheduler takes a moment too); lets a test see the "loaded" state.
    async_transform_delay_ms: Annotated[float, msgspec.Meta(ge=0, le=600_000)] = 0.0
    # glide.invalid_query.returns_no_rows: a query with a term the sandbox drops returns nothing.
    strict_query: bool = False
    # "strict": tables and fields exist only when defined ([tables.*], built-ins, sys_db_object /
    # sys_dictionary writes), unknown fields are dropped and values stored in their type's form,
    # as on an instance. "lenient": any table and field is created by its first write and values
    # are stored verbatim (the sandbox before issue 17).
    schema: Literal["strict", "lenient"] = "strict"
    # An instance matches =, !=, IN, NOT IN and coalesce keys ignoring case; true = exact matches.
    case_sensitive: bool = False
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
    # The JWT bearer grant: the PEM certificate (or public key) whose private key signs the
    # client's assertions, as an instance's "JWT verifier map" holds it; "" = no JWT grant.
    jwt_certificate: str = ""


def _default_clients() -> dict[str, OAuthClientSection]:
    return {"bridgehead": OAuthClientSection(secret="bridgehead", user="admin")}  # noqa: S106 - the documented demo client


class OAuthSection(_Section):
    access_token_ttl_s: Annotated[float, msgspec.Meta(gt=0, le=365 * 86_400)] = 1800.0
    refresh_token_ttl_s: Annotated[float, msgspec.Meta(gt=0, le=10 * 365 * 86_400)] = 8_640_000.0
    # ServiceNow returns the same refresh token on a refresh (no rotation); on = a new one each
    # time, and the old one stops working.
    rotate_refresh_tokens: bool = False
    # glide.oauth.inbound.client.credential.grant_type.enabled: off on an instance until set.
    client_credentials: bool = False
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
    # The longest request target (path and query, bytes) answered; longer is 400, as an
    # instance's front end answers it (docs/sandbox.md cites the figure).
    max_url_bytes: Annotated[int, msgspec.Meta(ge=256, le=10 * MiB)] = 8 * 1024
    max_batch_requests: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1000
    # The "REST Batch API request timeout" quota rule: items not started by then are unserviced.
    batch_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0


class SessionsSection(_Section):
    # Session cookies (JSESSIONID, glide_user_route, BIGipServerpool...) on every API answer;
    # a request that sends them back joins that session, which runs one transaction at a time.
    enabled: bool = True
    # Transactions allowed to wait on one session ("Max Waiters", 10 on an instance); the
    # next one is answered 202 and not processed.
    max_waiters: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 10
    idle_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 1800.0
    max_sessions: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000


class QuotaSection(_Section):
    # The base-system transaction quota rules: REST Table/Import Set API transactions are
    # cancelled after 60 s. 0 = no quota.
    max_execution_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 60.0
    # A cancelled transaction that had started running answers 200 with the error envelope
    # (what instances send); 500 for clients that want an HTTP error.
    cancelled_status: Literal[200, 500] = 200


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


class FieldSection(_Section):
    type: str = "string"  # a sys_dictionary internal_type (schema.FIELD_TYPES)
    max_length: Annotated[int, msgspec.Meta(ge=0, le=65_000_000)] = 0  # 0 = the type's default
    label: str = ""  # default: from the name, "u_directory_id" -> "Directory id"
    mandatory: bool = False
    read_only: bool = False
    reference: str = ""  # the referenced table of a reference field


class TableSection(_Section):
    label: str = ""
    extends: str = ""  # a parent table: its fields are inherited
    fields: dict[str, FieldSection] = msgspec.field(default_factory=dict)


def _default_users() -> dict[str, UserSection]:
    return {"admin": UserSection(password="admin", roles=["admin"])}  # noqa: S106 - the documented demo user


class SandboxConfig(_Section):
    instance: InstanceSection = msgspec.field(default_factory=InstanceSection)
    users: dict[str, UserSection] = msgspec.field(default_factory=_default_users)
    oauth: OAuthSection = msgspec.field(default_factory=OAuthSection)
    rate_limit: RateLimitSection = msgspec.field(default_factory=RateLimitSection)
    faults: FaultsSection = msgspec.field(default_factory=FaultsSection)
    limits: LimitsSection = msgspec.field(default_factory=LimitsSection)
    sessions: SessionsSection = msgspec.field(default_factory=SessionsSection)
    quota: QuotaSection = msgspec.field(default_factory=QuotaSection)
    transforms: dict[str, TransformSection] = msgspec.field(default_factory=dict)  # by staging table
    tables: dict[str, TableSection] = msgspec.field(default_factory=dict)  # defined besides the built-ins


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
    check_tables(config, path)
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


def check_tables(config: SandboxConfig, path: str) -> None:
    """[tables.*] must define a schema the sandbox can build (names, types, parents)."""
    from bridgehead_sandbox.schema import Schema, SchemaError  # here: schema is optional for the rest

    try:
        Schema.from_config(config.tables)
    except SchemaError as exc:
        raise ConfigError(path, "tables", str(exc)) from None
