"""Per-row outcomes of an asynchronous ``insertMultiple``: the instance answers only
``{import_set_id, multi_import_set_id}`` and transforms later; each row's outcome lands in
its ``sys_import_set_row`` record (``sys_import_state``, ``sys_import_state_comment``), found
by import set and ordered by ``sys_import_row``, the row's place in the request
(SERVICENOW_API.md §3.3, §3.4).

The first poll comes when the rows are likely done (``pace.TransformPace``, learned from the
instance's earlier import sets); later ones back off from ``import_poll_s`` to ten times
that, for at most ``import_wait_s``; every poll is a request like any other (rate limit,
retries). Rows still
pending at the end are reported as errors saying so (the instance may still transform
them: a new delivery finds them by coalesce). A staging table is a child of
``sys_import_set_row`` on an instance; a stand-in that keeps rows only in the staging table
is read there.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from bridgehead.control.sinks.instance_schema import plain

if TYPE_CHECKING:
    from bridgehead.control.sinks.client import InstanceClient

log = logging.getLogger("bridgehead.control.sinks")

_PAGE = 1000
_PENDING = frozenset({"", "pending", "loading", "loaded", "processing"})
_FIELDS = "sys_import_row,sys_import_state,sys_import_state_comment,sys_target_sys_id"


async def staged_outcomes(
    client: InstanceClient, staging: str, import_set: str, count: int
) -> list[tuple[str, str, str]]:
    """``(state, message, target sys_id)`` for each of the ``count`` rows, in request order."""
    instance = client.instance
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + instance.import_wait_s
    pause = client.transform_pace.first_wait(count)
    tables = ["sys_import_set_row", staging]
    rows: list[dict[str, Any]] = []
    polls = 0
    while True:
        await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
        polls += 1
        for table in list(tables):
            rows = await _read(client, table, import_set, count)
            if rows:
                tables = [table]  # where this instance keeps them: read only there from now on
                break
        done = len(rows) >= count and all(plain(r.get("sys_import_state")).lower() not in _PENDING for r in rows)
        if done:
            client.transform_pace.learn(count, loop.time() - started, polls)
            break
        if loop.time() >= deadline:
            break
        pause = min(max(pause, instance.import_poll_s) * 1.5, instance.import_poll_s * 10)
    rows.sort(key=lambda r: _int(plain(r.get("sys_import_row"))))
    outcomes: list[tuple[str, str, str]] = []
    for i in range(count):
        row = rows[i] if i < len(rows) else None
        state = plain(row.get("sys_import_state")).lower() if row is not None else ""
        if row is None or state in _PENDING:
            outcomes.append(
                (
                    "error",
                    f"import set {import_set}: row {i} not transformed within {instance.import_wait_s:g} s "
                    "(import_wait_s); the instance may still transform it",
                    "",
                )
            )
            continue
        outcomes.append((state, plain(row.get("sys_import_state_comment")), plain(row.get("sys_target_sys_id"))))
    if len(rows) > count:
        log.warning(
            "servicenow %s: import set %s has %d rows for %d records", client.name, import_set, len(rows), count
        )
    return outcomes


async def _read(client: InstanceClient, table: str, import_set: str, count: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    fetched = 0
    while fetched < count + 1:  # one more than asked: a surplus row is worth a warning
        limit = min(_PAGE, count + 1 - fetched)
        answer = await client.request(
            "GET",
            f"/api/now/table/{table}",
            params={
                "sysparm_query": f"sys_import_set={import_set}^ORDERBYsys_import_row",
                "sysparm_fields": _FIELDS,
                "sysparm_limit": str(limit),
                "sysparm_offset": str(fetched),
                "sysparm_exclude_reference_link": "true",
            },
        )
        page = answer.body.get("result") if isinstance(answer.body, dict) else None
        if answer.status != 200 or not isinstance(page, list):
            return rows  # not this table (400 Invalid table, 404), or not readable: try the other
        fetched += len(page)
        rows += [r for r in page if isinstance(r, dict) and plain(r.get("sys_import_row")) != ""]
        if len(page) < limit:
            break
    return rows


def _int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 1 << 62
