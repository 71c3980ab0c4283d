"""Sync mode: only what changed since the previous run of the same named sync.

A run, given the state the control plane kept from the previous run (``ctx.previous_sync_state``)::

    1. scan: every entry the filter matches, reading only its identity and change stamp
       (cheap): the identities present now, and the highest stamp now
    2. changed: the full entries whose stamp is past the previous run's watermark, each a
       record {"op": "upsert", "id": ..., "dn": ..., attributes...}
    3. deleted: identities of the previous run missing from the scan, each a record
       {"op": "delete", "id": ..., "dn": null}
    4. state for the next run: the identities present, and the highest stamp of step 1 as
       the watermark; kept by the control plane when the job succeeds

Identity and stamp, by directory:

    OpenLDAP            entryUUID, entryCSN   (modifyTimestamp has one-second resolution: a
                                               change in the same second as a run would be
                                               either missed or sent again every run)
    Active Directory    objectGUID, uSNChanged
    others              entryUUID, modifyTimestamp (a change in the watermark's second is sent
                                               again: an upsert is harmless twice)

Why the watermark is taken in step 1, before the changed entries are read: an entry that
changes while step 2 runs has a stamp past it, so the next run sends it again, with its
latest content. Taken after, such a change could fall behind the watermark and be lost.
Entries added after the scan but found by step 2 join the identities kept, so that their
deletion is seen later.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ldap3.utils.conv import escape_filter_chars

from bridgehead.plugins.ldap.params import LdapParams, LdapProfile
from bridgehead.plugins.ldap.values import EntryEncoder, guid_string
from bridgehead.sdk import InvalidParams, JobContext, SourceError, SyncState


class Search(Protocol):
    """What a sync run uses of the search it belongs to (``search.Search``, which starts the run):
    named here as a protocol so that the two modules do not import each other."""

    ctx: JobContext[LdapProfile]
    params: LdapParams
    conn: Any
    encoder: EntryEncoder
    filter: str
    attributes: list[str]
    decorate: Callable[[dict[str, Any], dict[str, list[bytes]]], bool] | None

    async def stream(self) -> None: ...

    def scan(
        self,
        filter_: str,
        attributes: list[str],
        visit: Callable[[str, dict[str, list[bytes]]], None],
        *,
        doing: str,
        scope: str | None = None,
    ) -> int: ...


ID_BYTES = 16


@dataclass(frozen=True)
class Scheme:
    id_attribute: str
    stamp_attribute: str
    # Stamps that never repeat (a CSN, a USN): an entry with exactly the watermark's stamp
    # was sent by the previous run and is skipped.
    strict: bool
    numeric: bool = False

    def id_bytes(self, value: bytes) -> bytes | None:
        if self.id_attribute == "objectGUID":
            return value if len(value) == ID_BYTES else None
        try:
            return uuid.UUID(value.decode("ascii")).bytes
        except (ValueError, UnicodeDecodeError):
            return None

    def id_text(self, raw_id: bytes) -> str:
        if self.id_attribute == "objectGUID":
            return guid_string(raw_id) or raw_id.hex()
        return str(uuid.UUID(bytes=raw_id))

    def stamp(self, value: bytes) -> str:
        return value.decode("ascii", "replace").strip()

    def later(self, a: str, b: str | None) -> bool:
        """Whether stamp ``a`` is past ``b``."""
        if b is None:
            return True
        if self.numeric:
            return int(a) > int(b)
        return a > b


ACTIVE_DIRECTORY = Scheme("objectGUID", "uSNChanged", strict=True, numeric=True)
OPENLDAP = Scheme("entryUUID", "entryCSN", strict=True)
GENERIC = Scheme("entryUUID", "modifyTimestamp", strict=False)


def scheme_for(schema_names: set[str]) -> Scheme:
    if {"objectguid", "usnchanged"} <= schema_names:
        return ACTIVE_DIRECTORY
    if {"entryuuid", "entrycsn"} <= schema_names:
        return OPENLDAP
    if {"entryuuid", "modifytimestamp"} <= schema_names:
        return GENERIC
    raise InvalidParams(
        "sync mode needs entry identities and change stamps (entryUUID with entryCSN or "
        "modifyTimestamp, or AD's objectGUID with uSNChanged); this directory's schema has neither"
    )


def _first(raw: dict[str, list[bytes]], name: str) -> bytes | None:
    lowered = name.lower()
    for key, values in raw.items():
        if key.lower() == lowered and values:
            return values[0]
    return None


class SyncRun:
    def __init__(self, search: Search, blocking: Callable[..., Awaitable[Any]]) -> None:
        self.search = search
        self.blocking = blocking
        ctx, params = search.ctx, search.params
        self.ctx = ctx
        # In the offer (``ctx.previous_sync_state``); a control plane from before that field
        # put it in the params instead, and with one the offer carries none.
        given = ctx.previous_sync_state if ctx.previous_sync_state is not None else params.sync_state
        self.previous = given or SyncState(name=params.sync or "")
        if self.previous.name != params.sync:
            raise InvalidParams(f"sync_state is for sync {self.previous.name!r}, not {params.sync!r}")
        if len(self.previous.ids) % ID_BYTES:
            raise InvalidParams("sync_state.ids is not a whole number of 16-byte identities")
        self.scheme = scheme_for(set(search.encoder.schema_names))
        self.present: set[bytes] = set()
        self.watermark: str | None = self.previous.watermark
        self.upserted: list[bytes] = []

    async def run(self) -> None:
        ctx, scheme = self.ctx, self.scheme
        ctx.progress(None, None, "listing the entries present")
        await self.blocking(self._scan, self.search.conn)
        self._check_size(len(self.present))  # before anything is sent
        # Step 2: the changed entries, streamed like a search.
        search = self.search
        previous_mark = self.previous.watermark
        if previous_mark is not None:
            stamp = escape_filter_chars(previous_mark)
            search.filter = f"(&{search.params.filter}({scheme.stamp_attribute}>={stamp}))"
        requested = search.params.attributes
        extra = [scheme.id_attribute, scheme.stamp_attribute]
        search.attributes = (requested or ["*"]) + [a for a in extra if a not in (requested or ())]
        search.decorate = self._upsert
        await search.stream()
        # Step 3: the deleted.
        deleted = self._deleted()
        if deleted:
            await ctx.emit_many({"op": "delete", "id": scheme.id_text(i), "dn": None} for i in deleted)
        ids = sorted(self.present.union(self.upserted))
        self._check_size(len(ids))
        ctx.keep_sync_state(
            SyncState(
                name=self.previous.name,
                version=self.previous.version,
                watermark=self.watermark,
                ids=b"".join(ids),
            )
        )
        ctx.progress(
            ctx.records_emitted,
            ctx.records_emitted,
            f"{ctx.records_emitted - len(deleted):,} changed, {len(deleted):,} deleted, {len(ids):,} present",
        )

    def _check_size(self, count: int) -> None:
        limit = self.ctx.max_record_bytes
        encoded_size = (count * ID_BYTES + 2) // 3 * 4 + 1024  # base64 on the wire, plus the rest
        if encoded_size > limit:
            raise SourceError(
                f"sync {self.previous.name!r}: the state of {count:,} identities takes {encoded_size:,} bytes, "
                f"over the agent's limits.max_record_bytes of {limit:,}; raise it (and limits.max_message_bytes, "
                "on the agents and the control plane, to at least twice that)",
                code="sync_state_too_large",
            )

    # --- in the worker threads -------------------------------------------------------------

    def _scan(self, _conn: object) -> None:
        scheme = self.scheme

        def visit(_dn: str, raw: dict[str, list[bytes]]) -> None:
            value = _first(raw, scheme.id_attribute)
            raw_id = scheme.id_bytes(value) if value is not None else None
            if raw_id is not None:
                self.present.add(raw_id)
            stamp = _first(raw, scheme.stamp_attribute)
            if stamp is not None:
                text = scheme.stamp(stamp)
                if scheme.later(text, self.watermark):
                    self.watermark = text

        attributes = [scheme.id_attribute, scheme.stamp_attribute]
        self.search.scan(self.search.params.filter, attributes, visit, doing="listing the entries present")

    def _upsert(self, record: dict[str, Any], raw: dict[str, list[bytes]]) -> bool:
        scheme = self.scheme
        stamp = _first(raw, scheme.stamp_attribute)
        previous = self.previous.watermark
        if scheme.strict and stamp is not None and previous is not None:
            if not scheme.later(scheme.stamp(stamp), previous):
                return False  # the entry the previous run ended on: sent then
        value = _first(raw, scheme.id_attribute)
        raw_id = scheme.id_bytes(value) if value is not None else None
        if raw_id is not None:
            self.upserted.append(raw_id)
        # "op" and "id" first: what a consumer routes on.
        ordered = {"op": "upsert", "id": scheme.id_text(raw_id) if raw_id else None}
        ordered.update(record)
        record.clear()
        record.update(ordered)
        return True

    def _deleted(self) -> list[bytes]:
        old = self.previous.ids
        gone = []
        for i in range(0, len(old), ID_BYTES):
            raw_id = old[i : i + ID_BYTES]
            if raw_id not in self.present:
                gone.append(raw_id)
        return gone
