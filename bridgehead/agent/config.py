"""The agent's TOML configuration: structure, defaults, bounds and precise errors.

Every key is documented in ``config.sample.toml``. Loading is two steps: ``load_config``
checks the structure of the file; ``check_profiles`` (once plugins are loaded) checks each
``[connections.NAME]`` table against its plugin's ``profile_type``. Either raises
``ConfigError`` naming the file, the key and what is wrong. ``check_vault_secrets`` (``check``
and ``run``) then looks up the vault entries credentials name (bridgehead/agent/vault.py); loading alone
does not, so that ``secret set`` can add an entry the config already names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from bridgehead.agent.vault import NAME_PATTERN as VAULT_NAME
from bridgehead.agent.vault import Vault, VaultError
from bridgehead.core.addresses import is_loopback
from bridgehead.core.errors import ConfigError
from bridgehead.core.redact import MIN_SECRET_LENGTH, REDACTOR
from bridgehead.core.tomlconfig import convert, read_toml
from bridgehead.sdk import Credential, Profile

MiB = 1024 * 1024
NameStr = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class AgentSection(_Section):
    name: NameStr
    data_dir: str
    cluster: NameStr = "default"
    max_concurrent_jobs: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 8
    plugins_dir: str | None = None
    disabled_plugins: list[str] = []
    drain_timeout_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 30.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    # full: the journal is flushed to stable storage before the agent acknowledges a job or
    # reports it done (survives power loss); normal: committed only (survives a crash of the
    # agent process; the last acknowledgements can vanish with the machine).
    synchronous: Literal["normal", "full"] = "full"


class ControlSection(_Section):
    url: str | None = None
    urls: list[str] = []
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0
    backoff_initial_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 0.5
    backoff_max_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    # An HTTP CONNECT proxy to the control plane (``http://proxy:3128``); without it, the
    # HTTPS_PROXY / HTTP_PROXY variables apply. NO_PROXY is respected either way.
    proxy: str | None = None
    proxy_credential: str | None = None  # a [credentials.NAME] with username and password
    # Forgiven difference between this machine's clock and the control plane's when checking
    # a job offer's issue and expiry times (keep both on NTP).
    max_clock_skew_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 60.0

    @property
    def all_urls(self) -> list[str]:
        return ([self.url] if self.url else []) + list(self.urls)


class LimitsSection(_Section):
    max_message_bytes: Annotated[int, msgspec.Meta(ge=64 * 1024, le=64 * MiB)] = 4 * MiB
    max_record_bytes: Annotated[int, msgspec.Meta(ge=1024, le=64 * MiB)] = 1 * MiB
    batch_records: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1000
    window_records: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000
    window_bytes: Annotated[int, msgspec.Meta(ge=64 * 1024, le=1024 * MiB)] = 8 * MiB
    spool_max_bytes: Annotated[int, msgspec.Meta(ge=0, le=1024 * 1024 * MiB)] = 512 * MiB


class UpdateSection(_Section):
    """Self-update (docs/packaging.md): releases signed by the key pinned at enrolment only."""

    enabled: bool = True
    # Only this version is taken when set (an admin's pin on this one machine); "" follows the
    # cluster's wanted version.
    pin: str = ""
    # An older release is refused unless allowed: a control plane that was taken over could
    # otherwise hand back an old, signed, vulnerable release.
    allow_downgrade: bool = False
    max_release_bytes: Annotated[int, msgspec.Meta(ge=1024 * 1024, le=512 * MiB)] = 256 * MiB


class CredentialSection(_Section):
    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    password_secret: str | None = None
    token: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    token_secret: str | None = None
    private_key_file: str | None = None
    passphrase_env: str | None = None
    passphrase_file: str | None = None
    passphrase_secret: str | None = None


class AgentConfig(_Section):
    agent: AgentSection
    control: ControlSection
    limits: LimitsSection = msgspec.field(default_factory=LimitsSection)
    update: UpdateSection = msgspec.field(default_factory=UpdateSection)
    connections: dict[NameStr, dict[str, Any]] = {}
    credentials: dict[NameStr, CredentialSection] = {}
    path: str = ""

    @property
    def data_dir(self) -> Path:
        return Path(self.agent.data_dir)


def check_control_url(url: str) -> str:
    """Return the problem with a control URL, or '' if it is fine."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss"):
        return f"{url!r} must start with https:// (or http:// on loopback)"
    if not parts.hostname:
        return f"{url!r} has no host"
    if parts.scheme in ("http", "ws") and not is_loopback(parts.hostname):
        return f"{url!r}: plain {parts.scheme}:// is accepted only on loopback; use https://"
    return ""


# The data_dir of the config loaded last: where resolve_credential reads vault entries.
_vault_dir: Path | None = None


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read and check the structure of an agent config file."""
    p = str(path)
    raw = read_toml(p)
    # Tables of named tables first, one by one, so that an error names the table
    # (msgspec would say "credentials[...]").
    for section, kind in (("credentials", CredentialSection), ("connections", dict)):
        tables = raw.get(section, {})
        if not isinstance(tables, dict):
            raise ConfigError(p, section, "must be a table of tables")
        for name, table in tables.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", name):
                raise ConfigError(p, f"{section}.{name}", "table name: use letters, digits, '_', '.', '-'")
            convert(table, kind, p, f"{section}.{name}")
    config = convert(raw, AgentConfig, p, "")
    config.path = p
    global _vault_dir  # noqa: PLW0603 - see resolve_credential
    _vault_dir = config.data_dir
    urls = config.control.all_urls
    if not urls:
        raise ConfigError(p, "control.url", "set control.url or control.urls")
    for i, url in enumerate(urls):
        problem = check_control_url(url)
        if problem:
            key = "control.url" if config.control.url and i == 0 else "control.urls"
            raise ConfigError(p, key, problem)
    proxy = config.control.proxy
    if proxy is not None and (urlsplit(proxy).scheme != "http" or not urlsplit(proxy).hostname):
        raise ConfigError(p, "control.proxy", f"{proxy!r}: give an HTTP CONNECT proxy as http://HOST:PORT")
    if proxy is not None and urlsplit(proxy).username:
        raise ConfigError(p, "control.proxy", "put the proxy's user and password in control.proxy_credential")
    credential = config.control.proxy_credential
    if credential is not None and credential not in config.credentials:
        raise ConfigError(p, "control.proxy_credential", f"no [credentials.{credential}] table")
    if config.control.backoff_max_s < config.control.backoff_initial_s:
        raise ConfigError(p, "control.backoff_max_s", "must be at least control.backoff_initial_s")
    if config.limits.max_record_bytes > config.limits.max_message_bytes // 2:
        raise ConfigError(p, "limits.max_record_bytes", "must be at most half of limits.max_message_bytes")
    for name, cred in config.credentials.items():
        _check_credential(p, name, cred)
    for name, table in config.connections.items():
        if not isinstance(table.get("plugin"), str):
            raise ConfigError(p, f"connections.{name}.plugin", "missing: name the plugin this profile is for")
        ref = table.get("credential")
        if ref is not None and ref not in config.credentials:
            raise ConfigError(p, f"connections.{name}.credential", f"no [credentials.{ref}] table")
    return config


def load_agent_section(path: str | os.PathLike[str]) -> AgentSection:
    """Only the ``[agent]`` table (for ``data_dir``): what ``secret set|list|delete`` need. They
    must work where the credentials' variables are not set (systemd's EnvironmentFile sets
    them for the service only)."""
    p = str(path)
    return convert(read_toml(p).get("agent"), AgentSection, p, "agent")


def _check_credential(path: str, name: str, cred: CredentialSection) -> None:
    for secret in ("password", "token", "passphrase"):
        keys = (secret, f"{secret}_env", f"{secret}_file", f"{secret}_secret")
        sources = [k for k in keys if getattr(cred, k, None) is not None]
        if len(sources) > 1:
            raise ConfigError(path, f"credentials.{name}", f"set only one of {', '.join(sources)}")
        vault_name = getattr(cred, f"{secret}_secret")
        if vault_name is not None and not VAULT_NAME.fullmatch(vault_name):
            raise ConfigError(
                path, f"credentials.{name}.{secret}_secret", "a vault secret's name: use letters, digits, '_', '.', '-'"
            )
    try:
        # Vault entries are looked up by check_vault_secrets (check and run), not here: the
        # config must load for `secret set` to add the very entry it names.
        _resolve(cred, name, None)
    except ConfigError as exc:
        raise ConfigError(path, exc.key, exc.problem) from None


def check_vault_secrets(config: AgentConfig) -> None:
    """Every vault entry a credential names exists and opens (``check`` and ``run`` call it)."""
    for name, cred in config.credentials.items():
        try:
            _resolve(cred, name, config.data_dir)
        except ConfigError as exc:
            raise ConfigError(config.path, exc.key, exc.problem) from None


def _read_secret(
    name: str, key: str, env: str | None, file: str | None, inline: str | None, vault: tuple[Path | None, str | None]
) -> str | None:
    value: str | None = inline
    vault_dir, entry = vault
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError("", f"credentials.{name}.{key}_env", f"environment variable {env} is not set")
    elif file is not None:
        try:
            value = Path(file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError("", f"credentials.{name}.{key}_file", f"cannot read {file}: {exc.strerror}") from None
    elif entry is not None:
        if vault_dir is None:
            return None
        try:
            value = Vault(vault_dir).get(entry)
        except VaultError as exc:
            raise ConfigError("", f"credentials.{name}.{key}_secret", str(exc)) from None
    if value is not None and len(value) < MIN_SECRET_LENGTH:
        raise ConfigError("", f"credentials.{name}.{key}", f"shorter than {MIN_SECRET_LENGTH} characters")
    REDACTOR.add(value)
    return value


def resolve_credential(cred: CredentialSection, name: str, data_dir: Path | None = None) -> Credential:
    """Read the credential's secrets now (so rotated files, variables and vault entries are
    picked up). Vault entries are read from ``data_dir``, by default that of the config this
    process loaded last (an agent process runs one config)."""
    return _resolve(cred, name, data_dir if data_dir is not None else _vault_dir)


def _resolve(cred: CredentialSection, name: str, vault_dir: Path | None) -> Credential:
    """``vault_dir`` None: vault entries are not read (their secrets stay None)."""
    credential = Credential(
        username=cred.username,
        password=_read_secret(
            name, "password", cred.password_env, cred.password_file, cred.password, (vault_dir, cred.password_secret)
        ),
        token=_read_secret(name, "token", cred.token_env, cred.token_file, cred.token, (vault_dir, cred.token_secret)),
        private_key_file=cred.private_key_file,
        passphrase=_read_secret(
            name, "passphrase", cred.passphrase_env, cred.passphrase_file, None, (vault_dir, cred.passphrase_secret)
        ),
    )
    if credential.username is not None and credential.password is not None:
        REDACTOR.add_basic_auth(credential.username, credential.password)
    return credential


def check_profiles(config: AgentConfig, profile_types: dict[str, type[Profile]]) -> dict[str, Profile]:
    """Validate each connection profile against its plugin; return them parsed."""
    parsed: dict[str, Profile] = {}
    for name, table in config.connections.items():
        plugin = table["plugin"]
        if plugin not in profile_types:
            known = ", ".join(sorted(profile_types)) or "none"
            raise ConfigError(
                config.path, f"connections.{name}.plugin", f"no plugin {plugin!r} is loaded (loaded: {known})"
            )
        parsed[name] = convert(table, profile_types[plugin], config.path, f"connections.{name}")
    return parsed
