"""The ldap plugin's work: a paged search (RFC 2696), streamed as one record per entry.

The flow of a job::

    connect to the first server of the profile that answers; StartTLS if asked; bind
    (the first connection to a directory also reads its schema: which attributes are
    single-valued, which are binary; kept for the agent's lifetime)
    request page after page of page_size entries                   (a worker thread)
      and encode each page's entries to records                    (a second thread)
    hand the pages to the agent's stream, at most four ahead of it (bridgehead.sdk.Fetcher):
      a full stream holds the search (backpressure), so memory holds a few pages at most
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
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import ldap3
import msgspec

from bridgehead.plugins.ldap.client import Live, check_limits, close, connect, forms_from_schema, job_error
from bridgehead.plugins.ldap.groups import GroupMembers
from bridgehead.plugins.ldap.params import LdapParams, LdapProfile
from bridgehead.plugins.ldap.sync import SyncRun
from bridgehead.plugins.ldap.values import EntryEncoder, Form
from bridgehead.sdk import Fetcher, InvalidParams, JobContext, SourceError

T = TypeVar("T")

_PAGED_RESULTS = "1.2.840.113556.1.4.319"
_SCOPES: dict[str, Literal["BASE", "LEVEL", "SUBTREE"]] = {"base": "BASE", "one": "LEVEL", "subtree": "SUBTREE"}
_MAX_THREADS = 32


class LdapEngine:
    """What the ldap plugin does, made with its first job (this module imports ldap3)."""

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
            search = Search(ctx, params, conn, known, self._executor)
            if params.expand_groups:
                search.groups = await self._blocking(ctx, search.read_groups, conn)
            if params.mode == "sync":
                await SyncRun(search, functools.partial(self._blocking, ctx)).run()
            else:
                await search.stream()
        finally:
            # In a thread: an unbind sends a request, and a broken socket may make it wait.
            self._executor.submit(close, conn)

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


class Search:
    """One job's paged search on one bound connection. ``filter``, ``attributes`` and
    ``decorate`` (called on each record in the encoding thread; False drops the record) let a
    sync run reuse it for its changed entries."""

    def __init__(
        self,
        ctx: JobContext[LdapProfile],
        params: LdapParams,
        conn: ldap3.Connection,
        forms: dict[str, Form],
        executor: concurrent.futures.Executor,
    ) -> None:
        self.ctx = ctx
        self.executor = executor
        self.done = False
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
        self.filter = params.filter
        self.attributes: list[str] = params.attributes or [ldap3.ALL_ATTRIBUTES]
        self.decorate: Callable[[dict[str, Any], dict[str, list[bytes]]], bool] | None = None

    async def stream(self) -> None:
        ctx = self.ctx
        timeout_s = ctx.profile.timeout_s
        fetcher = Fetcher(self.fetch_page, self.encode_entries, fetch_size=self.page_size, max_rows=self.max_entries)
        await fetcher.stream(
            ctx,
            fetch_executor=self.executor,
            encode_executor=self.executor,
            call_timeout_s=timeout_s,
            on_timeout=lambda: SourceError(
                f"searching: the server sent no page for timeout_s = {timeout_s:g} s", code="time_limit_exceeded"
            ),
            # Shut the socket under the call in flight: it returns now, and the server, seeing
            # the connection close, abandons the search.
            on_abort=lambda: _abort(self.conn),
            unit="entries",
        )
        total = ctx.records_emitted
        if fetcher.truncated:
            ctx.progress(total, None, f"stopped at max_entries = {self.max_entries:,}")
        else:
            ctx.progress(total, total, f"{total:,} entries")

    # --- blocking, in the worker threads -----------------------------------------------------

    def fetch_page(self, size: int) -> list[tuple[str, dict[str, list[bytes]]]]:
        """The next page's entries, as (dn, raw attributes); empty at the end of the search."""
        conn, params = self.conn, self.params
        while not self.done:
            try:
                conn.search(
                    params.base,
                    self.filter,
                    search_scope=_SCOPES[params.scope],
                    attributes=self.attributes,
                    paged_size=size,
                    paged_cookie=self.cookie,
                    size_limit=params.size_limit,
                    time_limit=self.time_limit,
                    dereference_aliases=ldap3.DEREF_NEVER,
                )
            except Exception as exc:  # noqa: BLE001 - every ldap3 error becomes a job error, with its code
                raise job_error(exc, doing="searching") from None
            check_limits(conn, doing="searching")
            self.cookie = _cookie(conn)
            self.done = self.cookie is None
            # Continuation references (searchResRef) are not followed.
            entries = [(e["dn"], e["raw_attributes"]) for e in conn.response or () if e.get("type") == "searchResEntry"]
            if entries:
                return entries
        return []

    def encode_entries(self, entries: list[tuple[str, dict[str, list[bytes]]]]) -> list[bytes]:
        record, encode, groups, decorate = self.encoder.record, self.encode, self.groups, self.decorate
        if groups is None and decorate is None:
            return [encode(record(dn, raw)) for dn, raw in entries]
        out = []
        for dn, raw in entries:
            item = record(dn, raw)
            if decorate is not None and not decorate(item, raw):
                continue
            if groups is not None:
                groups.expand(item)
            out.append(encode(item))
        return out

    def scan(
        self,
        filter_: str,
        attributes: list[str],
        visit: Callable[[str, dict[str, list[bytes]]], None],
        *,
        doing: str,
        scope: str | None = None,
    ) -> int:
        """A paged search that hands each entry's DN and raw attributes to ``visit``, streaming
        nothing (a sync's identity scan, the groups to expand). Returns the number of entries."""
        conn, params = self.conn, self.params
        cookie: bytes | None = None
        count = 0
        while True:
            try:
                conn.search(
                    params.base,
                    filter_,
                    search_scope=_SCOPES[scope or params.scope],
                    attributes=attributes,
                    paged_size=self.page_size,
                    paged_cookie=cookie,
                    time_limit=self.time_limit,
                    dereference_aliases=ldap3.DEREF_NEVER,
                )
            except Exception as exc:  # noqa: BLE001 - as in fetch_page
                raise job_error(exc, doing=doing) from None
            check_limits(conn, doing=doing)
            for item in conn.response or ():
                if item.get("type") == "searchResEntry":
                    visit(item["dn"], item["raw_attributes"])
                    count += 1
            cookie = _cookie(conn)
            if cookie is None:
                return count

    def read_groups(self, _conn: ldap3.Connection) -> GroupMembers:
        """Every group under the search base with its direct members, for expand_groups."""
        groups = GroupMembers()
        filter_, attributes = GroupMembers.FILTER, list(GroupMembers.ATTRIBUTES)
        self.scan(filter_, attributes, groups.add, doing="reading groups to expand", scope="subtree")
        return groups


def _cookie(conn: ldap3.Connection) -> bytes | None:
    """The paged-results cookie of the last search; None when the server has no more."""
    controls = (conn.result or {}).get("controls") or {}
    cookie = controls.get(_PAGED_RESULTS, {}).get("value", {}).get("cookie")
    return bytes(cookie) if cookie else None


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
