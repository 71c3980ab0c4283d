"""The ``ldap`` plugin's job params and connection-profile keys (msgspec structs, no I/O)."""

from __future__ import annotations

import logging
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from bridgehead.sdk import Params, Profile, SyncState

log = logging.getLogger("bridgehead.plugins.ldap")

MAX_FILTER_CHARS = 64 * 1024
MAX_ATTRIBUTES = 1000
DEFAULT_PORTS = {"ldap": 389, "ldaps": 636}

Scope = Literal["base", "one", "subtree"]
AttributeName = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class LdapParams(Params):
    """Params of one ``ldap`` job; see docs/plugins/ldap.md."""

    connection: str
    base: Annotated[str, msgspec.Meta(max_length=4096)]
    filter: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_FILTER_CHARS)] = "(objectClass=*)"
    scope: Scope = "subtree"
    # None: every user attribute ("*"). Names as in the schema; "+" adds operational ones.
    attributes: Annotated[list[AttributeName], msgspec.Meta(max_length=MAX_ATTRIBUTES)] | None = None
    page_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None
    # Add "member_expanded": the members of nested groups, transitively (see the docs).
    expand_groups: bool = False
    max_entries: Annotated[int, msgspec.Meta(ge=0)] | None = None
    # Enforced by the server over the whole search: past it, the job fails (size_limit_exceeded).
    size_limit: Annotated[int, msgspec.Meta(ge=0)] = 0
    # "sync": only entries changed since the previous run of the sync named by ``sync``, and
    # those deleted since (docs/plugins/ldap.md#sync).
    mode: Literal["search", "sync"] = "search"
    sync: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")] | None = None
    # Set by a control plane older than the offer's ``sync_state`` (which it now travels in,
    # as ``ctx.previous_sync_state``); kept so such a control plane's sync jobs still run. Not
    # for job authors: a current control plane's offer state takes precedence.
    sync_state: SyncState | None = None

    def __post_init__(self) -> None:
        if "\x00" in self.filter or "\x00" in self.base:
            raise ValueError("base and filter may not contain NUL")
        if self.mode == "sync":
            if self.sync is None:
                raise ValueError('mode "sync" needs "sync": the name under which its state is kept')
            if self.max_entries is not None or self.size_limit:
                raise ValueError("a sync cannot stop part-way (max_entries, size_limit): its state would be wrong")
        elif self.sync is not None or self.sync_state is not None:
            raise ValueError('"sync" and "sync_state" apply to mode "sync"')


class LdapProfile(Profile):
    """Keys of a ``[connections.NAME]`` table with ``plugin = "ldap"``."""

    url: str | None = None
    # Tried in turn until one answers (a directory's replicas).
    urls: Annotated[list[str], msgspec.Meta(min_length=1, max_length=32)] | None = None
    start_tls: bool = False
    ca_file: str | None = None
    verify: bool = True
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    page_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 500
    max_entries: Annotated[int, msgspec.Meta(ge=0)] | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.urls is None):
            raise ValueError("give exactly one of url or urls")
        for url in self.server_urls():
            check_url(url)
            if url.lower().startswith("ldaps://") and self.start_tls:
                raise ValueError(f"{url}: ldaps:// is TLS already; start_tls applies to ldap:// URLs")
        if not self.verify and self.uses_tls():
            # Said once, when the agent loads its configuration.
            log.warning(
                "ldap profile with verify = false: the directory's certificate is NOT checked; "
                "anyone on the path can read the bind password"
            )

    def server_urls(self) -> list[str]:
        return list(self.urls) if self.urls is not None else [self.url or ""]

    def uses_tls(self) -> bool:
        return self.start_tls or any(u.lower().startswith("ldaps://") for u in self.server_urls())


def check_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an ``ldap://`` or ``ldaps://`` URL; ``ValueError`` otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"{url!r}: the scheme must be ldap:// or ldaps://")
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host")
    if parts.path not in ("", "/") or parts.query or parts.username or parts.password:
        raise ValueError(f"{url!r}: give only scheme, host and port (base and credentials go elsewhere)")
    return scheme, parts.hostname, port or DEFAULT_PORTS[scheme]
