"""The requests of a preflight: what the instance answers, read only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from bridgehead.control.sinks.auth import AuthFailed, TokenUnavailable
from bridgehead.control.sinks.client import InstanceClient
from bridgehead.control.sinks.instance_schema import (
    SchemaUnreadable,
    TableSchema,
    read_schema,
)
from bridgehead.control.sinks.preflight.needs import Needs
from bridgehead.control.sinks.preflight.rows import IMPORT_ROW, INSERT_MULTIPLE


@dataclass
class Seen:
    """The answers ``observe`` collected; ``evaluate`` makes rows of them without I/O."""

    grant: str
    auth_error: str = ""  # "" = a token obtained (or basic auth); else the instance's refusal
    auth_retryable: bool = False  # the token endpoint was down or unreachable, not refusing
    api_status: int = 0  # the probe read's HTTP status (0: not sent)
    api_message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    dictionary: str = ""  # "" = readable; else why not
    schemas: dict[str, TableSchema | None] = field(default_factory=dict)
    reads: dict[str, tuple[int, str]] = field(default_factory=dict)  # table -> (status, message)
    samples: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # one row, needed fields
    insert_multiple: dict[str, list[dict[str, Any]] | str] = field(default_factory=dict)  # rows, or why not
    timed_out: str = ""


async def _probe(client: InstanceClient, path: str, params: dict[str, str]) -> tuple[int, str, dict[str, str]]:
    """One GET with the sink's session and Authorization header, headers kept (the client's
    ``request`` keeps only status and body; a preflight wants the rate-limit headers)."""
    session = client.session()
    header = await client.auth.header(session)
    async with session.get(
        client.instance.base_url + path, params=params, headers={"Authorization": header}
    ) as response:
        raw = await response.read()
        headers = {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("x-ratelimit")}
        if "retry-after" in response.headers:
            headers["retry-after"] = response.headers["retry-after"]
        message = ""
        if response.status >= 300:
            try:
                body = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                body = None
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict):
                message = ": ".join(str(error.get(k) or "") for k in ("message", "detail") if error.get(k))
            message = message or raw[:200].decode("utf-8", "replace")
        return response.status, message, headers


async def observe(client: InstanceClient, needs: Needs, seen: Seen) -> None:
    """Every read the rows need, into ``seen`` (what was read before a failure is kept),
    through the sink's own client and its rate limit."""
    try:
        await client.auth.header(client.session())
    except AuthFailed as exc:
        seen.auth_error = str(exc)
        return
    except TokenUnavailable as exc:
        seen.auth_error, seen.auth_retryable = str(exc), True
        return
    seen.api_status, seen.api_message, seen.headers = await _probe(
        client,
        "/api/now/table/sys_db_object",
        {"sysparm_query": "name=sys_db_object", "sysparm_fields": "name", "sysparm_limit": "1"},
    )
    if seen.api_status == 401:
        return
    for table in needs.tables:
        try:
            seen.schemas[table] = await read_schema(client, table)
        except SchemaUnreadable as exc:
            seen.dictionary = str(exc)
            break
    if not seen.dictionary and seen.schemas and all(s is None for s in seen.schemas.values()):
        # An instance always describes sys_db_object itself: no row for it means no dictionary
        # to read at all (a stand-in that makes tables on first write), not that tables are missing.
        try:
            if await read_schema(client, "sys_db_object") is None:
                seen.dictionary = "the instance describes no tables (no sys_db_object row for sys_db_object)"
        except SchemaUnreadable as exc:
            seen.dictionary = str(exc)
    for table in needs.tables:
        wanted = sorted({n.field for n in needs.fields if n.table.lower() == table.lower()})
        params = {"sysparm_limit": "1", "sysparm_exclude_reference_link": "true"}
        if wanted:
            params["sysparm_fields"] = ",".join(["sys_id", *wanted])
        answer = await client.request("GET", f"/api/now/table/{table}", params=params)
        rows = answer.body.get("result") if isinstance(answer.body, dict) else None
        seen.reads[table] = (answer.status, "" if answer.status == 200 else answer.error_message())
        if answer.status == 200 and isinstance(rows, list):
            seen.samples[table] = rows[0] if rows and isinstance(rows[0], dict) else None
    for staging in _import_sets(needs, seen):
        answer = await client.request(
            "GET",
            f"/api/now/table/{INSERT_MULTIPLE}",
            params={"sysparm_query": f"source_table={staging}", "sysparm_limit": "10"},
        )
        rows = answer.body.get("result") if isinstance(answer.body, dict) else None
        if answer.status == 200 and isinstance(rows, list):
            seen.insert_multiple[staging] = [r for r in rows if isinstance(r, dict)]
        elif answer.status == 404:
            seen.insert_multiple[staging] = []
        else:
            seen.insert_multiple[staging] = f"HTTP {answer.status}: {answer.error_message()}"


def _import_sets(needs: Needs, seen: Seen) -> list[str]:
    """The sink's import sets, and configured tables the dictionary shows are staging tables."""
    found = list(needs.import_sets)
    for table, schema in seen.schemas.items():
        if schema is not None and IMPORT_ROW in schema.chain[1:] and table not in found:
            found.append(table)
    return found


# --- rows ----------------------------------------------------------------------------------
