"""``LdapPlugin``: a paged search (RFC 2696), streamed as one record per entry.

The flow of a job::

    connect to the first server of the profile that answers; StartTLS if asked; bind
    (the first connection to a directory also reads its schema: which attributes are
    single-valued, which are binary; kept for the agent's lifetime)
    request one page of page_size entries                          (a worker thread)
      and encode its entries to records                            (the same thread)
    hand the page to the agent's stream; the next page is asked for only once the stream has
      taken this one, so a full stream holds the search (backpressure), and memory holds at
      most one page
    unbind

A cancel or the job's timeout shuts the connection's socket down: the call waiting on the
server returns at once, and the server, seeing the connection close, abandons the search.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import math
import socket
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import ldap3
import msgspec

from agent.errors import InvalidParams
from agent.sdk import JobContext, Plugin
from plugins.ldap.client import Live, check_limits, connect, forms_from_schema, job_error
from plugins.ldap.groups import GroupMembers
from plugins.ldap.params import LdapParams, LdapProfile
from plugins.ldap.values import EntryEncoder, Form

T = TypeVar("T")

_PAGED_RESULTS = "1.2.840.113556.1.4.319"
_SCOPES: dict[str, Literal["BASE", "LEVEL", "SUBTREE"]] = {"base": "BASE", "one": "LEVEL", "subtree": "SUBTREE"}
_MAX_THREADS = 32
_PROGRESS_EVERY_S = 1.0


class LdapPlugin(Plugin[LdapParams, LdapProfile]):
    name = "ldap"
    version = "1"
    params_type = LdapParams
    profile_type = LdapProfile
    safe_to_repeat = True  # a search changes nothing: a lost attempt may run again elsewhere

    def __init__(self) -> None:
        # Attribute forms per directory (its list of server URLs), read once from its schema.
        self._forms: dict[tuple[str, ...], dict[str, Form]] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(_MAX_THREADS, thread_name_prefix="ldap")

    async def run(self, ctx: JobContext[LdapProfile], params: LdapParams) -> None:
        profile = ctx.profile
        directory = tuple(profile.server_urls())
        known = self._forms.get(directory)
        live = Live()
        conn = await self._blocking(
            ctx, functools.partial(connect, profile, ctx.credential, read_schema=known is None, live=live), live=live
        )
        try:
            if known is None:
                known = self._forms[directory] = forms_from_schema(conn)
            _check_names(params.attributes, known)
            search = _Search(ctx, params, conn, known)
            if params.expand_groups:
                search.groups = await self._blocking(ctx, search.read_groups, conn)
            await search.stream(functools.partial(self._blocking, ctx))
        finally:
            # In a thread: an unbind sends a request, and a broken socket may make it wait.
            self._executor.submit(_unbind, conn)

    async def _blocking(
        self, ctx: JobContext[LdapProfile], fn: Callable[..., T], *args: Any, live: Live | None = None
    ) -> T:
        """``fn(*args)`` in a worker thread; a cancel or timeout shuts down the socket of the
        connection it works on (in ``args``, or being opened into ``live``)."""
        conn = next((a for a in args if isinstance(a, ldap3.Connection)), None)

        def abort() -> None:
            _abort(conn if conn is not None else live.conn if live is not None else None)

        return await ctx.run_blocking(fn, *args, executor=self._executor, on_cancel=abort)

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)


class _Search:
    """One job's paged search on one bound connection."""

    def __init__(
        self, ctx: JobContext[LdapProfile], params: LdapParams, conn: ldap3.Connection, forms: dict[str, Form]
    ) -> None:
        self.ctx = ctx
        self.params = params
        self.conn = conn
        self.encoder = EntryEncoder(forms, params.attributes)
        self.encode = msgspec.json.Encoder().encode
        self.groups: GroupMembers | None = None
        limits = [n for n in (params.max_entries, ctx.profile.max_entries) if n is not None]
        self.max_entries = min(limits) if limits else None
        self.page_size = params.page_size or ctx.profile.page_size
        self.time_limit = math.ceil(ctx.profile.timeout_s)
        self.cookie: bytes | None = None

    async def stream(self, blocking: Callable[..., Any]) -> None:
        ctx = self.ctx
        last_progress = time.monotonic()
        while True:
            batch, more = await blocking(self.next_page, self.conn)
            if batch:
                await ctx.emit_encoded(batch)
            now = time.monotonic()
            if now - last_progress >= _PROGRESS_EVERY_S:
                last_progress = now
                ctx.progress(ctx.records_emitted, None, f"{ctx.records_emitted:,} entries")
            if not more:
                break
            if self.max_entries is not None and ctx.records_emitted >= self.max_entries:
                ctx.progress(ctx.records_emitted, None, f"stopped at max_entries = {self.max_entries:,}")
                return  # the unbind that follows ends the paged search on the server
        ctx.progress(ctx.records_emitted, ctx.records_emitted, f"{ctx.records_emitted:,} entries")

    # --- blocking, in a worker thread --------------------------------------------------------

    def next_page(self, conn: ldap3.Connection) -> tuple[list[bytes], bool]:
        """One page of entries, encoded; and whether the server has more."""
        params = self.params
        size = self.page_size
        if self.max_entries is not None:
            size = max(1, min(size, self.max_entries - self.ctx.records_emitted))
        try:
            conn.search(
                params.base,
                params.filter,
                search_scope=_SCOPES[params.scope],
                attributes=params.attributes or [ldap3.ALL_ATTRIBUTES],
                paged_size=size,
                paged_cookie=self.cookie,
                size_limit=params.size_limit,
                time_limit=self.time_limit,
                dereference_aliases=ldap3.DEREF_NEVER,
            )
        except Exception as exc:  # noqa: BLE001 - every ldap3 error becomes a job error, with its code
            raise job_error(exc, doing="searching") from None
        check_limits(conn, doing="searching")
        record, encode, groups = self.encoder.record, self.encode, self.groups
        batch: list[bytes] = []
        for item in conn.response or ():
            if item.get("type") != "searchResEntry":
                continue  # continuation references: not followed
            out = record(item["dn"], item["raw_attributes"])
            if groups is not None:
                groups.expand(out)
            batch.append(encode(out))
        if self.max_entries is not None:
            batch = batch[: max(0, self.max_entries - self.ctx.records_emitted)]
        controls = (conn.result or {}).get("controls") or {}
        self.cookie = controls.get(_PAGED_RESULTS, {}).get("value", {}).get("cookie") or None
        return batch, self.cookie is not None

    def read_groups(self, conn: ldap3.Connection) -> GroupMembers:
        """Every group under the search base with its direct members, for expand_groups."""
        groups = GroupMembers()
        cookie: bytes | None = None
        while True:
            try:
                conn.search(
                    self.params.base,
                    GroupMembers.FILTER,
                    search_scope=ldap3.SUBTREE,
                    attributes=list(GroupMembers.ATTRIBUTES),
                    paged_size=self.page_size,
                    paged_cookie=cookie,
                    time_limit=self.time_limit,
                )
            except Exception as exc:  # noqa: BLE001 - as in next_page
                raise job_error(exc, doing="reading groups to expand") from None
            check_limits(conn, doing="reading groups to expand")
            for item in conn.response or ():
                if item.get("type") == "searchResEntry":
                    groups.add(item["dn"], item["raw_attributes"])
            controls = (conn.result or {}).get("controls") or {}
            cookie = controls.get(_PAGED_RESULTS, {}).get("value", {}).get("cookie") or None
            if not cookie:
                return groups


def _check_names(attributes: list[str] | None, forms: dict[str, Form]) -> None:
    """A requested attribute the directory's schema lacks is a typo: say so, rather than
    return it as null on every entry. (A server that hides its schema: nothing to check.)"""
    if not attributes or not forms:
        return
    unknown = [
        a for a in attributes if a not in ("*", "+", "1.1") and not a.startswith("@") and _base_name(a) not in forms
    ]
    if unknown:
        raise InvalidParams(f"attributes not in the directory's schema: {', '.join(unknown)}")


def _base_name(attribute: str) -> str:
    """ "member;range=0-*" and "userCertificate;binary" are "member" and "usercertificate"."""
    return attribute.split(";", 1)[0].lower()


def _abort(conn: ldap3.Connection | None) -> None:
    """Called from the event loop on cancel or timeout: end the connection under the thread."""
    sock = getattr(conn, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _unbind(conn: ldap3.Connection) -> None:
    with contextlib.suppress(Exception):
        conn.unbind()
