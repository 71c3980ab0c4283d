"""The Table API, ``/api/now[/v1|/v2]/table/{table}[/{sys_id}]`` (SERVICENOW_API.md §1).

A table exists once defined (built in, ``[tables.*]``, or a ``sys_db_object`` record an admin
posts); anything else is ``400 Invalid table``, as on an instance. A write keeps the table's
fields only and stores values in their type's form (store.Store.shape). With
``[instance] schema = "lenient"`` a table is created by its first write instead. The
unversioned path and ``v2`` answer an empty match ``200 {"result": []}``; ``v1`` answers it 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import Response

from bridgehead_sandbox import query
from bridgehead_sandbox.config import TABLE_NAME
from bridgehead_sandbox.errors import SnError, bad_body, bad_request, invalid_table, no_record
from bridgehead_sandbox.records import (
    changed_fields,
    is_sys_id,
    new_record,
    now_text,
    parse_display,
    parse_fields,
    present,
    touched,
    writable_fields,
)
from bridgehead_sandbox.responses import json_response, read_json
from bridgehead_sandbox.store import META_TABLES, Table

if TYPE_CHECKING:
    from bridgehead_sandbox.app import Sandbox


def principal_name(request: Request) -> str:
    return str(request.scope["sandbox.user"])


def _true(text: str | None) -> bool:
    return (text or "").lower() == "true"


def _number(params: Any, name: str, default: int) -> int:
    text = params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise bad_request(f"Invalid {name}", f"{name} must be a whole number, not {text!r}") from None
    if value < 0:
        raise bad_request(f"Invalid {name}", f"{name} must not be negative")
    return value


class TableApi:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.store = sandbox.store

    def _check_may_define(self, request: Request, table: str) -> None:
        """Writing sys_db_object / sys_dictionary defines tables and fields: admins only, as
        the ACLs on an instance have it (403 with the instance's ACL failure text)."""
        if table not in META_TABLES or self.store.schema is None:
            return
        user = self.sandbox.config.users.get(principal_name(request))
        if user is None or "admin" not in user.roles:
            raise SnError(
                403,
                "Operation Failed",
                f"ACL Exception: writing {table} (defining tables and fields) needs the admin role",
            )

    def _table(self, name: str) -> Table:
        table = self.store.table(name)
        if table is None:
            raise invalid_table(name)
        return table

    async def _body(self, request: Request) -> dict[str, Any]:
        limits = self.sandbox.config.limits
        body = await read_json(request, limits.max_body_bytes, limits.oversize_status)
        if isinstance(body, list):  # one record per write: the first one counts, as on an instance
            body = body[0] if body else None
        if not isinstance(body, dict):
            raise bad_body("The payload must be a JSON object of field names and values.")
        return body

    async def list(self, request: Request) -> Response:
        table = self._table(request.path_params["table"])
        params = request.query_params
        text = params.get("sysparm_query")
        if text is None:  # name=value pairs are the shorthand filter
            text = "^".join(f"{k}={v}" for k, v in params.items() if not k.startswith("sysparm_"))
        parsed = query.parse(text, table.columns, case_sensitive=self.sandbox.config.instance.case_sensitive)
        if parsed.invalid and self.sandbox.config.instance.strict_query:
            rows = []
        else:
            rows = table.select(parsed)
        if parsed.order:
            rows = query.order_records(rows, parsed.order)
        max_page = self.sandbox.config.limits.max_page_size
        limit = min(_number(params, "sysparm_limit", max_page), max_page) or max_page
        offset = _number(params, "sysparm_offset", 0)
        page = rows[offset : offset + limit]
        if not page and request.path_params.get("version") == "v1":
            raise no_record()
        fields, display = parse_fields(params.get("sysparm_fields")), parse_display(params.get("sysparm_display_value"))
        headers = {}
        if not _true(params.get("sysparm_no_count")):
            headers["X-Total-Count"] = str(len(rows))
        if not _true(params.get("sysparm_suppress_pagination_header")):
            headers["Link"] = _links(request.url, offset, limit, len(rows))
        return json_response({"result": [present(r, table.columns, fields, display) for r in page]}, headers=headers)

    async def get(self, request: Request) -> Response:
        table = self._table(request.path_params["table"])
        record = table.get(request.path_params["sys_id"])
        if record is None:
            raise no_record()
        return self._answer(request, table, record, 200)

    async def create(self, request: Request) -> Response:
        name = request.path_params["table"]
        if not TABLE_NAME.match(name):
            raise invalid_table(name)
        self._check_may_define(request, name)
        body = await self._body(request)
        wanted = str(body.get("sys_id") or "")
        existing = self.store.table(name)
        if wanted and existing is not None and existing.get(wanted) is not None:
            raise SnError(400, "Operation Failed", f"Error during insert of {name}: sys_id {wanted} exists")
        with self.store.transaction(now_text()) as writer:
            table = writer.table(name)
            record = new_record(
                writable_fields(body), principal_name(request), writer.now, wanted if is_sys_id(wanted) else None
            )
            record = writer.insert(table, record)
        location = str(request.base_url) + f"api/now/table/{name}/{record['sys_id']}"
        return self._answer(request, table, record, 201, {"Location": location})

    async def update(self, request: Request) -> Response:
        table = self._table(request.path_params["table"])
        sys_id = request.path_params["sys_id"]
        if table.get(sys_id) is None:
            raise no_record()
        self._check_may_define(request, table.name)
        body = await self._body(request)
        record = table.get(sys_id)
        if record is None:  # deleted while the body was read
            raise no_record()
        # Compared in the stored form: "2024-05-01T10:00:00Z" for a stored "2024-05-01 10:00:00"
        # is no change, and an unknown field is none either.
        changes = changed_fields(record, self.store.shape(table, writable_fields(body)))
        if changes:  # an update that changes nothing writes nothing, as on an instance
            with self.store.transaction(now_text()) as writer:
                record = touched(record, changes, principal_name(request), writer.now)
                record = writer.update(table, record)
        return self._answer(request, table, record, 200)

    async def delete(self, request: Request) -> Response:
        table = self._table(request.path_params["table"])
        sys_id = request.path_params["sys_id"]
        if table.get(sys_id) is None:
            raise no_record()
        self._check_may_define(request, table.name)
        with self.store.transaction(now_text()) as writer:
            writer.delete(table, sys_id)
        return Response(status_code=204)

    def _answer(
        self, request: Request, table: Table, record: dict[str, str], status: int, headers: dict[str, str] | None = None
    ) -> Response:
        if request.method != "GET" and _true(request.headers.get("x-no-response-body")):
            return Response(status_code=status, headers=headers)
        params = request.query_params
        fields, display = parse_fields(params.get("sysparm_fields")), parse_display(params.get("sysparm_display_value"))
        return json_response({"result": present(record, table.columns, fields, display)}, status, headers)


def _links(url: URL, offset: int, limit: int, total: int) -> str:
    """RFC 8288 page links: first, prev, next, last (SERVICENOW_API.md §1.3)."""

    def at(where: int) -> str:
        return str(url.include_query_params(sysparm_offset=where, sysparm_limit=limit))

    links = [(at(0), "first")]
    if offset > 0:
        links.append((at(max(0, offset - limit)), "prev"))
    if offset + limit < total:
        links.append((at(offset + limit), "next"))
    links.append((at(max(0, (total - 1) // limit * limit)), "last"))
    return ",".join(f'<{target}>;rel="{rel}"' for target, rel in links)
