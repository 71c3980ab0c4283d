"""Where one batch of rows goes: an import set (``ImportSetTarget``) or a table, upserted by
coalesce fields (``TableTarget``). Each returns one outcome per row:
``inserted``, ``updated``, ``ignored``, ``skipped`` or ``error`` with the instance's message.

Before the first batch, ``prepare`` reads the target's definition from the instance
(``instance_schema``): a table or coalesce field it lacks fails the delivery at once
(``InvalidTarget``), before anything is sent; fields it lacks are dropped and logged once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from bridgehead.control.sinks.client import Answer, InstanceClient
from bridgehead.control.sinks.fields import InvalidTarget, TargetFields
from bridgehead.control.sinks.import_rows import staged_outcomes
from bridgehead.control.sinks.instance_schema import UNKNOWN, SchemaUnreadable, TableSchema, plain
from bridgehead.control.sinks.lookups import TERM_SEPARATOR, in_queries, one_query

log = logging.getLogger("bridgehead.control.sinks")

STATUSES = ("inserted", "updated", "ignored", "skipped", "error")
_PREFIX_LOOKUP_LIMIT = 1000  # rows a page of a prefix lookup (a key too long, or with a ^) reads
_MAX_CANDIDATES = 10_000  # rows sharing a prefix read before the key is given up as unsettled
__all__ = [
    "ImportSetTarget",
    "InvalidTarget",
    "Outcome",
    "Planned",
    "Row",
    "TableTarget",
    "TargetRefused",
    "plain",
    "table_schema",
]


async def table_schema(client: InstanceClient, table: str) -> TableSchema | None | object:
    """The table's schema, None when the instance has no such table, ``UNKNOWN`` when it
    describes no tables (a lenient stand-in) or will not show them to this user."""
    try:
        return await client.schemas.get(client, table)
    except SchemaUnreadable as exc:
        log.warning("servicenow %s: %s; fields are not checked", client.name, exc)
        return UNKNOWN


@dataclass(frozen=True)
class Outcome:
    status: str  # one of STATUSES
    message: str = ""
    sys_id: str = ""  # the target row, where known (table targets)


@dataclass(frozen=True)
class Row:
    """A record as the instance will see it; ``delete``: an ldap sync's deletion."""

    fields: dict[str, str]
    delete: bool = False


@dataclass(frozen=True)
class Planned:
    """A batch's rows with the work that needs no answer from the instance done (``plan``), so
    a runner can do it before the batch's turn to send, while the batch before it is on the
    wire. ``keys``: each row's coalesce key (a table's; empty for an import set)."""

    rows: list[Row]
    keys: list[tuple[str, ...]]


class ImportSetTarget:
    """``insertMultiple``, falling back to one POST per row on an instance that lacks it
    (learned once per instance and table). Records are keyed by the staging table's column
    labels or names, as the instance is set up for (``insert_multiple_keys``). Per-row
    outcomes come from the answer when the instance transforms synchronously, else from
    ``sys_import_set_row`` once transformed (``import_rows``)."""

    # (instance, staging table) -> whether insertMultiple works there; learned by the first
    # batch alone (the others wait for it), so an old instance sees one failed call, not one
    # per batch in flight.
    _insert_multiple: dict[tuple[str, str], bool] = {}
    _learning: dict[tuple[str, str], asyncio.Lock] = {}

    def __init__(self, client: InstanceClient, staging: str) -> None:
        self.client = client
        self.staging = staging
        self.labels: dict[str, str] = {}  # field name -> the column label insertMultiple takes
        self.keys = "names"

    async def prepare(self, fields: Sequence[str] = ()) -> None:
        """Learn how insertMultiple keys records here, and report mapped fields the staging
        table lacks (an instance drops them)."""
        schema = await table_schema(self.client, self.staging)
        mode = self.client.instance.insert_multiple_keys
        if schema is UNKNOWN:
            self.keys = "names" if mode == "auto" else mode
            return
        if not isinstance(schema, TableSchema):
            raise InvalidTarget(
                f"servicenow {self.client.name}: there is no import set table {self.staging} "
                "(sys_db_object); create it on the instance (a table extending sys_import_set_row) "
                "with its transform map; nothing was sent"
            )
        missing = TargetFields(self.client.name, self.staging, schema).check(fields)
        if missing:
            log.warning(
                "servicenow %s: import set table %s has no column %s; the instance drops them",
                self.client.name,
                self.staging,
                ", ".join(missing),
            )
        self.keys = await self._key_mode() if mode == "auto" else mode
        if self.keys == "labels":
            self.labels = {name: f.label for name, f in schema.fields.items() if f.label}
        log.info(
            "servicenow %s: insertMultiple into %s keys records by column %s", self.client.name, self.staging, self.keys
        )

    async def _key_mode(self) -> str:
        """ "names" when a ``sys_rest_insert_multiple`` record for this staging table says
        Column name, else "labels", the instance's default (SERVICENOW_API.md §3.3)."""
        answer = await self.client.request(
            "GET",
            "/api/now/table/sys_rest_insert_multiple",
            params={"sysparm_query": f"source_table={self.staging}", "sysparm_limit": "10"},
        )
        rows = answer.body.get("result") if isinstance(answer.body, dict) else None
        if answer.status != 200 or not isinstance(rows, list):
            log.warning(
                "servicenow %s: cannot read sys_rest_insert_multiple (%s); assuming column labels, the "
                'instance default (set insert_multiple_keys = "names" or "labels" to say)',
                self.client.name,
                answer.error_message(),
            )
            return "labels"
        for row in rows:
            if isinstance(row, dict) and plain(row.get("active")).lower() != "false":
                mapping = plain(row.get("column_mapping")).lower()
                return "names" if "name" in mapping else "labels"
        return "labels"

    def _keyed(self, fields: dict[str, str]) -> dict[str, str]:
        if self.keys != "labels":
            return fields
        keyed: dict[str, str] = {}
        for name, value in fields.items():
            label = self.labels.get(name.lower())
            if label is None:
                # Not in the staging table's dictionary: the label an instance gives the column
                # it names so ("Directory id" makes u_directory_id), logged once.
                label = self.labels[name.lower()] = guessed_label(name)
                log.warning(
                    "servicenow %s: %s has no column %s in sys_dictionary; sending it as label %r",
                    self.client.name,
                    self.staging,
                    name,
                    label,
                )
            keyed[label] = value
        return keyed

    def plan(self, rows: Sequence[Row]) -> Planned:
        return Planned(list(rows), [])

    async def send(self, batch: Sequence[Row] | Planned) -> list[Outcome]:
        rows = batch.rows if isinstance(batch, Planned) else batch
        key = (self.client.name, self.staging)
        if key not in self._insert_multiple:
            async with self._learning.setdefault(key, asyncio.Lock()):
                if key not in self._insert_multiple:
                    return await self._multiple(rows, key)
        if self._insert_multiple[key]:
            return await self._multiple(rows, key)
        return list(await asyncio.gather(*(self._one(r) for r in rows)))

    async def _multiple(self, rows: Sequence[Row], key: tuple[str, str]) -> list[Outcome]:
        answer = await self.client.request(
            "POST",
            f"/api/now/import/{self.staging}/insertMultiple",
            json={"records": [self._keyed(r.fields) for r in rows]},
        )
        if answer.status in (200, 201):
            self._insert_multiple[key] = True
            return await self._outcomes(answer, len(rows))
        # An instance without the API answers as for any unknown path: 400 "Requested URI does
        # not represent any resource" (or 404/405 behind some proxies). Any other 4xx is about
        # the batch itself, and single inserts would not fix it.
        unknown_uri = answer.status == 400 and "uri" in answer.error_message().lower()
        if answer.status not in (404, 405) and not unknown_uri:
            raise TargetRefused(f"insertMultiple into {self.staging}: {answer.error_message()}")
        log.warning(
            "servicenow %s: insertMultiple into %s answered HTTP %d (%s); using single inserts",
            self.client.name,
            self.staging,
            answer.status,
            answer.error_message(),
        )
        self._insert_multiple[key] = False
        return list(await asyncio.gather(*(self._one(r) for r in rows)))

    async def _one(self, row: Row) -> Outcome:
        # The single-row API takes staging column names, whatever insertMultiple is set to.
        answer = await self.client.request("POST", f"/api/now/import/{self.staging}", json=row.fields)
        if answer.status not in (200, 201):
            return Outcome("error", answer.error_message())
        results = answer.body.get("result") if isinstance(answer.body, dict) else None
        return _result_outcome(results[0] if isinstance(results, list) and results else {})

    async def _outcomes(self, answer: Answer, count: int) -> list[Outcome]:
        body = answer.body if isinstance(answer.body, dict) else {}
        results = body.get("result")
        if isinstance(results, list) and len(results) == count:
            return [_result_outcome(r if isinstance(r, dict) else {}) for r in results]
        import_set = body.get("import_set_id")
        if not isinstance(import_set, str) or not import_set:
            raise TargetRefused(f"insertMultiple into {self.staging}: an answer without results or import_set_id")
        staged = await staged_outcomes(self.client, self.staging, import_set, count)
        return [_outcome(state, message, sys_id) for state, message, sys_id in staged]


class TableTarget:
    """Upsert through the Table API: find each row by its coalesce fields (``IN`` queries cut
    to the URL budget when there is one coalesce field), then PATCH what differs or POST. A
    row with nothing to change is ``ignored`` (no write). Keys and values compare as the
    instance stores and matches them (``fields.TargetFields``). Rows with the same key in a
    batch are applied in order, one after the other, so two of them can never both insert."""

    def __init__(self, client: InstanceClient, table: str, coalesce: Sequence[str], on_delete: str) -> None:
        self.client = client
        self.table = table
        self.coalesce = list(coalesce)
        self.on_delete = on_delete
        self.fields = TargetFields(client.name, table, None, coalesce)

    async def prepare(self, fields: Sequence[str] = ()) -> None:
        """Fail before anything is sent when the table or a coalesce field is missing; report
        the mapped ``fields`` it lacks (they are dropped)."""
        schema = await table_schema(self.client, self.table)
        if schema is UNKNOWN:
            return
        if not isinstance(schema, TableSchema):
            raise InvalidTarget(
                f"servicenow {self.client.name}: there is no table {self.table} (sys_db_object); nothing was sent"
            )
        self.fields = TargetFields(self.client.name, self.table, schema, self.coalesce)
        self.fields.require(self.coalesce, "a coalesce field: without it rows cannot be matched")
        if self.on_delete == "deactivate":
            self.fields.require(["active"], 'on_delete = "deactivate" sets it')
        missing = self.fields.check(f for f in fields if f not in self.coalesce)
        if missing:
            log.warning(
                "servicenow %s: table %s has no field %s; those values are not sent",
                self.client.name,
                self.table,
                ", ".join(missing),
            )

    def plan(self, rows: Sequence[Row]) -> Planned:
        """The rows without the fields the table lacks, and their keys as the instance compares
        them (the fields are the table's as ``prepare`` read them, fixed for the delivery)."""
        kept = [Row(self.fields.keep(row.fields), row.delete) for row in rows]
        return Planned(kept, [self.fields.key(row.fields) for row in kept])

    async def send(self, batch: Sequence[Row] | Planned) -> list[Outcome]:
        planned = batch if isinstance(batch, Planned) else self.plan(batch)
        kept = planned.rows
        outcomes: list[Outcome | None] = [None] * len(kept)
        by_key: dict[tuple[str, ...], list[int]] = {}
        for i, key in enumerate(planned.keys):
            if not all(key):
                outcomes[i] = Outcome("skipped", f"empty coalesce field(s): {', '.join(self.coalesce)}")
                continue
            by_key.setdefault(key, []).append(i)
        wanted = {name for row in kept for name in row.fields}
        found = await self._lookup({k: kept[ix[0]] for k, ix in by_key.items()}, wanted)

        async def apply(key: tuple[str, ...], indexes: list[int]) -> None:
            existing = found.get(key)
            if existing is None:
                for i in indexes:
                    outcomes[i] = Outcome("error", self._unsettled(key))
                return
            for i in indexes:
                outcome, existing = await self._apply(kept[i], existing)
                outcomes[i] = outcome

        await asyncio.gather(*(apply(k, ix) for k, ix in by_key.items()))
        return [o or Outcome("error", "not applied") for o in outcomes]

    def _unsettled(self, key: tuple[str, ...]) -> str:
        fields = ", ".join(self.coalesce)
        if any(part.startswith(TERM_SEPARATOR) for part in key):
            return f"coalesce key ({fields}) starts with '^', which no encoded query can carry; not sent"
        return f"more than {_MAX_CANDIDATES} rows of {self.table} share the coalesce key's prefix ({fields}); not sent"

    def _fixed(self, wanted: set[str], limit: int) -> dict[str, str]:
        """The lookup's params besides the query: the fields compared, when that list is short."""
        # No Link header: it would repeat this long URL four times (a lookup that pages counts
        # its own offset).
        params = {"sysparm_limit": str(limit), "sysparm_suppress_pagination_header": "true"}
        names = sorted({"sys_id", "active", *self.coalesce, *wanted})
        listed = ",".join(names)
        if len(listed) <= self.client.instance.max_url_bytes // 4:
            params["sysparm_fields"] = listed
        return params

    async def _lookup(
        self, first_rows: dict[tuple[str, ...], Row], wanted: set[str]
    ) -> dict[tuple[str, ...], list[dict[str, Any]] | None]:
        """Existing rows by case-folded key (as the instance matches them); ``None`` for a key
        no lookup can settle. Absence is trusted only from an answer that was not cut short:
        a key missing from a full page is looked up again on its own, and an inexact lookup
        (a prefix) reads every page. Otherwise a cut-off match would be inserted twice."""
        found: dict[tuple[str, ...], list[dict[str, Any]] | None] = {k: [] for k in first_rows}
        if not first_rows:
            return found
        base = self.client.instance.base_url + f"/api/now/table/{self.table}"
        budget = self.client.instance.max_url_bytes
        # Sized with the widest limit a lookup sends, so the real URL is never longer.
        fixed = self._fixed(wanted, _PREFIX_LOOKUP_LIMIT)
        alone: dict[tuple[str, ...], Row] = {}
        if len(self.coalesce) == 1:
            field = self.coalesce[0]
            by_value = {
                self.fields.key_part(field, row.fields.get(field, "")): (k, row) for k, row in first_rows.items()
            }
            for query, values in in_queries(base, fixed, field, list(by_value), budget):
                if query is None or not query.exact:
                    alone.update(by_value[v] for v in values)
                    continue
                limit = 2 * len(values)
                records = await self._query(query.text, {**fixed, "sysparm_limit": str(limit)})
                for record in records:
                    rows = found.get(self.fields.record_key(record))
                    if rows is not None:
                        rows.append(record)
                if len(records) >= limit:  # maybe cut short: absence and uniqueness unproven
                    alone.update(by_value[v] for v in values if len(found[by_value[v][0]] or ()) < 2)
        else:
            alone = dict(first_rows)

        async def one(key: tuple[str, ...], row: Row) -> None:
            terms = [(f, self.fields.key_part(f, row.fields.get(f, ""))) for f in self.coalesce]
            query = one_query(base, fixed, terms, budget)
            if query is None:
                found[key] = None
                return
            if query.exact:
                records = await self._query(query.text, {**fixed, "sysparm_limit": "2"})
            else:
                every = await self._query_all(query.text, fixed)
                if every is None:
                    found[key] = None
                    return
                records = every
            # Only exact (case-insensitive) matches: a prefix lookup reads more.
            found[key] = [r for r in records if self.fields.record_key(r) == key]

        await asyncio.gather(*(one(k, row) for k, row in alone.items()))
        return found

    async def _query_all(self, query: str, fixed: dict[str, str]) -> list[dict[str, Any]] | None:
        """Every row ``query`` matches, page by page; ``None`` past ``_MAX_CANDIDATES`` (too
        many rows share the prefix to be sure of the match). Ordered by sys_id, so that no row
        moves between pages while they are read."""
        query = f"{query}{TERM_SEPARATOR}ORDERBYsys_id"
        records: list[dict[str, Any]] = []
        while len(records) <= _MAX_CANDIDATES:
            page = {**fixed, "sysparm_limit": str(_PREFIX_LOOKUP_LIMIT), "sysparm_offset": str(len(records))}
            rows = await self._query(query, page)
            records.extend(rows)
            if len(rows) < _PREFIX_LOOKUP_LIMIT:
                return records
        return None

    async def _query(self, query: str, params: dict[str, str]) -> list[dict[str, Any]]:
        params = {"sysparm_query": query, **params}
        answer = await self.client.request("GET", f"/api/now/table/{self.table}", params=params)
        return table_rows(answer, f"looking up {self.table} by {', '.join(self.coalesce)}")

    async def _apply(
        self, row: Row, existing: list[dict[str, Any]] | None
    ) -> tuple[Outcome, list[dict[str, Any]] | None]:
        matches = existing or []
        if len(matches) > 1:
            ids = ", ".join(str(m.get("sys_id")) for m in matches[:3])
            return Outcome("error", f"coalesce matches {len(matches)} rows of {self.table} ({ids})"), existing
        path = f"/api/now/table/{self.table}"
        if row.delete:
            if not matches or self.on_delete == "ignore":
                return Outcome("skipped", "deleted in the source" if matches else "no row to delete"), existing
            sys_id = quote(str(plain(matches[0].get("sys_id"))))
            if self.on_delete == "delete":
                answer = await self.client.request("DELETE", f"{path}/{sys_id}")
                ok = answer.status in (200, 204, 404)
                return (Outcome("updated", "deleted") if ok else Outcome("error", answer.error_message())), []
            if self.fields.value("active", plain(matches[0].get("active"))).lower() == "false":
                return Outcome("ignored", "already inactive"), existing
            answer = await self.client.request("PATCH", f"{path}/{sys_id}", json={"active": "false"})
            if answer.status != 200:
                return Outcome("error", answer.error_message()), existing
            return Outcome("updated", "deactivated"), [{**matches[0], "active": "false"}]
        if matches:
            current = matches[0]
            current_id = plain(current.get("sys_id"))
            changed = self.fields.changes(row.fields, current)
            if not changed:
                return Outcome("ignored", sys_id=current_id), existing
            answer = await self.client.request("PATCH", f"{path}/{quote(current_id)}", json=changed)
            if answer.status != 200:
                return Outcome("error", answer.error_message()), existing
            return Outcome("updated", sys_id=current_id), [{**current, **changed}]
        answer = await self.client.request("POST", path, json=row.fields)
        if answer.status not in (200, 201):
            return Outcome("error", answer.error_message()), existing
        created = answer.body.get("result") if isinstance(answer.body, dict) else None
        created = created if isinstance(created, dict) else {**row.fields}
        return Outcome("inserted", sys_id=plain(created.get("sys_id"))), [created]


def guessed_label(name: str) -> str:
    """The column label a custom column's name comes from: ``u_directory_id`` <- "Directory id"."""
    words = name.removeprefix("u_").replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else name


class TargetRefused(Exception):
    """The instance refused a whole batch in a way retrying will not change (a 4xx)."""


def table_rows(answer: Answer, what: str) -> list[dict[str, Any]]:
    """The rows of a Table API list; none for a table not made yet (an instance answers a
    table it does not have 400 "Invalid table", and 404 on a v1 path with no match)."""
    if answer.status == 404 or (answer.status == 400 and "invalid table" in answer.error_message().lower()):
        return []
    rows = answer.body.get("result") if isinstance(answer.body, dict) else None
    if answer.status != 200 or not isinstance(rows, list):
        raise TargetRefused(f"{what}: {answer.error_message()}")
    return [r for r in rows if isinstance(r, dict)]


def _outcome(status: str, message: str, sys_id: str = "") -> Outcome:
    status = status.lower()
    known = status in STATUSES
    return Outcome(status if known else "error", message or ("" if known else status), sys_id)


def _result_outcome(result: dict[str, Any]) -> Outcome:
    message = str(result.get("error_message") or result.get("status_message") or "")
    return _outcome(str(result.get("status") or "error"), message)
