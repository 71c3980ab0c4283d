"""The control plane's TOML configuration (``--config control.toml``); every key optional."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qs, urlsplit

import msgspec

from bridgehead.control.sinks.config import INSTANCE_NAME, ServiceNowInstance, check_secrets
from bridgehead.core.errors import ConfigError
from bridgehead.core.redact import REDACTOR
from bridgehead.core.tomlconfig import convert, read_toml
from bridgehead.protocol.messages import MAX_RELEASE_BYTES, MAX_RELEASE_CHUNK

MiB = 1024 * 1024


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerSection(_Section):
    listen: str = "127.0.0.1:8080"
    heartbeat_s: Annotated[float, msgspec.Meta(ge=0.2, le=300)] = 5.0
    # After a restart, how long running attempts wait for their agents to reconnect before
    # they are retried elsewhere (agents back off up to control.backoff_max_s, 30 s by default).
    restart_grace_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 60.0
    max_message_bytes: Annotated[int, msgspec.Meta(ge=64 * 1024, le=64 * MiB)] = 4 * MiB
    max_request_bytes: Annotated[int, msgspec.Meta(ge=1024, le=64 * MiB)] = 1 * MiB
    max_wait_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 300.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    # HTTPS (docs/security.md). Empty: a certificate from the control plane's own CA, naming
    # the listen host, localhost, 127.0.0.1 and ``tls_names``. Given: that certificate and key
    # (PEM); agents then pin ``tls_ca_file`` (its issuing CA) or, without it, the certificate.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    tls_names: Annotated[list[str], msgspec.Meta(max_length=100)] = []
    # Agent certificates: their life, renewed by the agent over its session when a third is left.
    agent_cert_ttl_s: Annotated[float, msgspec.Meta(ge=30, le=5 * 365 * 86_400)] = 90 * 86_400.0
    # How long a signed job offer is valid (agents remember offers this long to refuse replays).
    offer_ttl_s: Annotated[int, msgspec.Meta(ge=10, le=86_400)] = 300
    # The most job slots one agent session may hold (credit it asks for beyond this is ignored).
    max_agent_credit: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256
    # Several nodes on PostgreSQL (docs/operations.md#several-nodes): a node whose heartbeat
    # (every second) is this old is dead, and another takes over its running attempts.
    node_dead_after_s: Annotated[float, msgspec.Meta(ge=2, le=3600)] = 5.0
    # How clients reach this node, as GET /api/v1/nodes shows it; empty: SCHEME://LISTEN.
    node_url: str = ""
    # Connections that have not finished the agent handshake: how many at once, and for how long.
    max_unauthenticated: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256
    handshake_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 15.0
    # Bytes queued for one agent that it has not read yet; beyond this the agent is dropped.
    max_agent_backlog_bytes: Annotated[int, msgspec.Meta(ge=64 * 1024, le=1024 * MiB)] = 16 * MiB
    # Parameter schemas published by agents: the largest one compiled, and how many kept.
    max_schema_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * MiB)] = 256 * 1024
    max_schemas: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    # The most bytes of records (and of job params, in job lists) in one API answer; a page
    # holds fewer items rather than more bytes, except a single record larger than this.
    max_page_bytes: Annotated[int, msgspec.Meta(ge=64 * 1024, le=256 * MiB)] = 4 * MiB
    # /metrics without a token (a scraper on a trusted network that sends none); by default it
    # needs a viewer token, which Prometheus sends with ``authorization: {credentials: ...}``.
    metrics_public: bool = False


class JobsSection(_Section):
    default_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=7 * 86_400)] = 3600.0
    max_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=30 * 86_400)] = 7 * 86_400.0
    default_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    max_params_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * MiB)] = 256 * 1024


class SchedulesSection(_Section):
    # Each schedule is a row and a timer; the cap keeps a runaway script from making millions.
    max_schedules: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 1000


class StoreSection(_Section):
    # sqlite: a file in the data dir (one node); postgresql: ``database`` (docs/operations.md#store).
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    # SQLite only (PostgreSQL commits with synchronous_commit=on, always):
    # full: every acknowledgement follows a flush to stable storage (survives power loss);
    # normal: only a commit (survives a crash of the process; the last commits can vanish
    # with the machine). docs/operations.md#durability.
    synchronous: Literal["normal", "full"] = "full"
    # postgresql://USER@HOST:PORT/DATABASE; its password never in the URL (it would reach
    # logs and ps): from password_env or password_file, like the other secrets here.
    database: str = ""
    password_env: str = ""
    password_file: str = ""
    # PostgreSQL only: the secret that protects the control plane's CA and signing keys in the
    # database (one identity for every node; docs/operations.md, "One identity for several
    # nodes"). Neither: the database holds their public halves only, and each node's data dir
    # must be given the key files.
    identity_secret_env: str = ""
    identity_secret_file: str = ""

    def __post_init__(self) -> None:
        if self.backend == "sqlite":
            if self.database or self.password_env or self.password_file:
                raise ValueError('database and its password are for backend = "postgresql"')
            if self.identity_secret_env or self.identity_secret_file:
                raise ValueError('identity_secret_env and identity_secret_file are for backend = "postgresql"')
            return
        if not self.database:
            raise ValueError('backend = "postgresql" needs database = "postgresql://USER@HOST:PORT/DATABASE"')
        parts = urlsplit(self.database)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or len(parts.path) < 2:
            raise ValueError("database: expected postgresql://USER@HOST:PORT/DATABASE")
        if parts.password is not None or "password" in parse_qs(parts.query):
            raise ValueError("database: no password in the URL; set password_env or password_file")
        if self.password_env and self.password_file:
            raise ValueError("set only one of password_env and password_file")
        if self.identity_secret_env and self.identity_secret_file:
            raise ValueError("set only one of identity_secret_env and identity_secret_file")

    def password(self) -> str | None:
        """The database password, read now (a rotated file is picked up on the next start);
        None when neither is set (trust, peer or a ~/.pgpass of the service's user)."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError("[store]", "password_env", f"environment variable {self.password_env} is not set")
        elif self.password_file:
            try:
                value = Path(self.password_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    "[store]", "password_file", f"cannot read {self.password_file}: {exc.strerror}"
                ) from None
        else:
            return None
        REDACTOR.add(value)
        return value

    def identity_secret(self) -> bytes | None:
        """The secret that seals the shared identity's private keys, read now; None when
        neither source is set. Short secrets are refused: the sealed keys sit in the database,
        open to offline guessing by whoever reads a backup."""
        if self.identity_secret_env:
            key, value = "identity_secret_env", os.environ.get(self.identity_secret_env)
            if value is None:
                raise ConfigError("[store]", key, f"environment variable {self.identity_secret_env} is not set")
        elif self.identity_secret_file:
            key = "identity_secret_file"
            try:
                value = Path(self.identity_secret_file).read_text().strip()
            except OSError as exc:
                raise ConfigError("[store]", key, f"cannot read {self.identity_secret_file}: {exc.strerror}") from None
        else:
            return None
        if len(value) < 16:  # `openssl rand -base64 32` makes 44
            raise ConfigError("[store]", key, "the identity secret needs at least 16 characters")
        REDACTOR.add(value)
        return value.encode()


class ReleasesSection(_Section):
    """Agent self-update (docs/packaging.md, "Releases on the control plane")."""

    # The release key's public half: base64 of the raw 32-byte Ed25519 key, pinned by agents at
    # enrolment; or a file holding that text. Neither: self-update is off (uploads refused).
    public_key: str = ""
    public_key_file: str = ""
    max_release_bytes: Annotated[int, msgspec.Meta(ge=1024, le=MAX_RELEASE_BYTES)] = 256 * MiB
    # How long an updated agent has to reconnect and pass its health check before it rolls back.
    health_deadline_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 120.0
    # Bytes of a release per message to an agent (also at most half of server.max_message_bytes).
    chunk_bytes: Annotated[int, msgspec.Meta(ge=4096, le=MAX_RELEASE_CHUNK)] = 256 * 1024
    # How long one agent's update may hold its cluster's slot (one member updates at a time).
    update_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 900.0
    # How often the server re-reads the wanted versions (so that the CLI's changes reach it).
    poll_s: Annotated[float, msgspec.Meta(ge=0.1, le=3600)] = 2.0

    @property
    def key(self) -> bytes:
        """The raw 32-byte public release key; b"" when self-update is off (after
        ``load_control_config``, which reads ``public_key_file`` into ``public_key``)."""
        return base64.b64decode(self.public_key) if self.public_key else b""


def release_public_key(text: str) -> bytes:
    """The raw Ed25519 public key in ``text`` (base64 of 32 bytes); ValueError saying what is wrong."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64 (expected the line 'bridgehead-control release keygen' printed)") from None
    if len(raw) != 32:
        raise ValueError(f"a raw Ed25519 public key is 32 bytes, this is {len(raw)}")
    return raw


def _check_releases(path: str, releases: ReleasesSection, server: ServerSection) -> None:
    """Read ``public_key_file`` into ``public_key`` and check both, and the chunk size."""
    if releases.public_key and releases.public_key_file:
        raise ConfigError(path, "releases.public_key_file", "set releases.public_key or public_key_file, not both")
    key, text = "releases.public_key", releases.public_key
    if releases.public_key_file:
        key = "releases.public_key_file"
        try:
            with open(releases.public_key_file, encoding="ascii") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(path, key, f"cannot read {releases.public_key_file}: {exc}") from None
    if text.strip():
        try:
            raw = release_public_key(text)
        except ValueError as exc:
            raise ConfigError(path, key, str(exc)) from None
        releases.public_key = base64.b64encode(raw).decode()
    else:
        releases.public_key = ""
    if releases.chunk_bytes > server.max_message_bytes // 2:
        raise ConfigError(
            path,
            "releases.chunk_bytes",
            f"at most half of server.max_message_bytes ({server.max_message_bytes // 2}): a chunk is base64 in JSON",
        )


class ControlConfig(_Section):
    server: ServerSection = msgspec.field(default_factory=ServerSection)
    jobs: JobsSection = msgspec.field(default_factory=JobsSection)
    store: StoreSection = msgspec.field(default_factory=StoreSection)
    schedules: SchedulesSection = msgspec.field(default_factory=SchedulesSection)
    releases: ReleasesSection = msgspec.field(default_factory=ReleasesSection)
    # ServiceNow instances that job sinks name (docs/sinks.md).
    servicenow: dict[str, ServiceNowInstance] = msgspec.field(default_factory=dict)


def load_control_config(path: str | None) -> ControlConfig:
    if path is None:
        return ControlConfig()
    raw = read_toml(path)
    instances = raw.get("servicenow")
    for name, table in instances.items() if isinstance(instances, dict) else ():
        if isinstance(table, dict) and "tables" not in table:  # msgspec would not name the instance
            raise ConfigError(
                path,
                f"servicenow.{name}.tables",
                'required: the tables and import sets sinks may write there, e.g. tables = ["u_user_import"] '
                "(docs/sinks.md)",
            )
    config = convert(raw, ControlConfig, path)
    for name, instance in config.servicenow.items():
        if not INSTANCE_NAME.match(name):
            raise ConfigError(path, f"servicenow.{name}", "a name of letters, digits, '_', '.' and '-'")
        for problem in check_secrets(name, instance):
            raise ConfigError(path, f"servicenow.{name}", problem.split(": ", 1)[1])
    _check_releases(path, config.releases, config.server)
    if config.store.backend == "postgresql":
        try:
            config.store.password()  # unreadable: said at start, not at the first connection
        except ConfigError as exc:
            raise ConfigError(path, f"store.{exc.key}", exc.problem) from None
    return config
