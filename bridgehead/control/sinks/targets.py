"""Where one batch of rows goes: an import set (``ImportSetTarget``) or a table, upserted by
coalesce fields (``TableTarget``). Each returns one outcome per row:
``inserted``, ``updated``, ``ignored``, ``skipped`` or ``error`` with the instance's message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from bridgehead.control.sinks.client import Answer, InstanceClient

log = logging.getLogger("bridgehead.control.sinks")

STATUSES = ("inserted", "updated", "ignored", "skipped", "error")
_ASYNC_POLL_S = 0.5
_ASYNC_WAIT_S = 600.0


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


class ImportSetTarget:
    """``insertMultiple``, falling back to one POST per row on an instance that lacks it
    (learned once per instance and table). Per-row outcomes come from the answer when the
    instance transforms synchronously, else from the staging rows once transformed."""

    # (instance, staging table) -> whether insertMultiple works there; learned by the first
    # batch alone (the others wait for it), so an old instance sees one failed call, not one
    # per batch in flight.
    _insert_multiple: dict[tuple[str, str], bool] = {}
    _learning: dict[tuple[str, str], asyncio.Lock] = {}

    def __init__(self, client: InstanceClient, staging: str) -> None:
        self.client = client
        self.staging = staging

    async def send(self, rows: Sequence[Row]) -> list[Outcome]:
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
            json={"records": [r.fields for r in rows]},
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
        if not isinstance(import_set, str):
            raise TargetRefused(f"insertMultiple into {self.staging}: an answer without results or import_set_id")
        return await self._staging_outcomes(import_set, count)

    async def _staging_outcomes(self, import_set: str, count: int) -> list[Outcome]:
        """The documented asynchronous answer: read each staging row's state until all are
        transformed (``sys_import_row`` gives the row's position in the request)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _ASYNC_WAIT_S
        while True:
            answer = await self.client.request(
                "GET",
                f"/api/now/table/{self.staging}",
                params={
                    "sysparm_query": f"sys_import_set={import_set}",
                    "sysparm_fields": "sys_import_row,sys_import_state,sys_import_state_comment,sys_row_error",
                    "sysparm_limit": str(count),
                },
            )
            rows = answer.body.get("result") if isinstance(answer.body, dict) else None
            if answer.status == 200 and isinstance(rows, list):
                states = {str(r.get("sys_import_row")): r for r in rows if isinstance(r, dict)}
                done = [states.get(str(i)) for i in range(count)]
                if all(d is not None and d.get("sys_import_state") not in ("", "pending") for d in done):
                    return [
                        _outcome(str(d.get("sys_import_state")), str(d.get("sys_import_state_comment") or ""))
                        for d in done
                        if d is not None
                    ]
            if loop.time() > deadline:
                raise TargetRefused(f"import set {import_set} into {self.staging}: not transformed after 10 min")
            await asyncio.sleep(_ASYNC_POLL_S)


class TableTarget:
    """Upsert through the Table API: find each row by its coalesce fields (one ``IN`` query
    per batch when there is one coalesce field), then PATCH what differs or POST. A row with
    nothing to change is ``ignored`` (no write). Rows with the same key in a batch are applied
    in order, one after the other, so two of them can never both insert."""

    def __init__(self, client: InstanceClient, table: str, coalesce: Sequence[str], on_delete: str) -> None:
        self.client = client
        self.table = table
        self.coalesce = list(coalesce)
        self.on_delete = on_delete

    async def send(self, rows: Sequence[Row]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(rows)
        by_key: dict[tuple[str, ...], list[int]] = {}
        for i, row in enumerate(rows):
            key = tuple(row.fields.get(f, "") for f in self.coalesce)
            if not all(key):
                outcomes[i] = Outcome("skipped", f"empty coalesce field(s): {', '.join(self.coalesce)}")
                continue
            by_key.setdefault(key, []).append(i)
        found = await self._lookup(list(by_key))

        async def apply(key: tuple[str, ...], indexes: list[int]) -> None:
            existing = found.get(key)
            for i in indexes:
                outcome, existing = await self._apply(rows[i], existing)
                outcomes[i] = outcome

        await asyncio.gather(*(apply(k, ix) for k, ix in by_key.items()))
        return [o or Outcome("error", "not applied") for o in outcomes]

    async def _lookup(self, keys: list[tuple[str, ...]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
        found: dict[tuple[str, ...], list[dict[str, Any]]] = {k: [] for k in keys}
        if not keys:
            return found
        field = self.coalesce[0]
        if len(self.coalesce) == 1 and all("," not in k[0] and "^" not in k[0] for k in keys):
            for start in range(0, len(keys), 100):
                chunk = keys[start : start + 100]
                query = f"{field}IN{','.join(k[0] for k in chunk)}"
                for record in await self._query(query, len(chunk) * 2):
                    key = (str(record.get(field, "")),)
                    if key in found:
                        found[key].append(record)
            return found

        async def one(key: tuple[str, ...]) -> None:
            query = "^".join(f"{f}={v.replace('^', '^^')}" for f, v in zip(self.coalesce, key, strict=True))
            found[key] = await self._query(query, 2)

        await asyncio.gather(*(one(k) for k in keys))
        return found

    async def _query(self, query: str, limit: int) -> list[dict[str, Any]]:
        answer = await self.client.request(
            "GET", f"/api/now/table/{self.table}", params={"sysparm_query": query, "sysparm_limit": str(limit)}
        )
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
            sys_id = quote(str(matches[0].get("sys_id")))
            if self.on_delete == "delete":
                answer = await self.client.request("DELETE", f"{path}/{sys_id}")
                ok = answer.status in (200, 204, 404)
                return (Outcome("updated", "deleted") if ok else Outcome("error", answer.error_message())), []
            if plain(matches[0].get("active")).lower() == "false":
                return Outcome("ignored", "already inactive"), existing
            answer = await self.client.request("PATCH", f"{path}/{sys_id}", json={"active": "false"})
            if answer.status != 200:
                return Outcome("error", answer.error_message()), existing
            return Outcome("updated", "deactivated"), [{**matches[0], "active": "false"}]
        if matches:
            current = matches[0]
            current_id = plain(current.get("sys_id"))
            changed = {k: v for k, v in row.fields.items() if plain(current.get(k)) != v}
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


def _outcome(status: str, message: str) -> Outcome:
    status = status.lower()
    return Outcome(status if status in STATUSES else "error", message or ("" if status in STATUSES else status))


def _result_outcome(result: dict[str, Any]) -> Outcome:
    message = str(result.get("error_message") or result.get("status_message") or "")
    return _outcome(str(result.get("status") or "error"), message)


def plain(value: Any) -> str:
    """A field's value as the row's text: reference fields come back as {"link", "value"}."""
    if isinstance(value, dict):
        value = value.get("value")
    return "" if value is None else str(value)
