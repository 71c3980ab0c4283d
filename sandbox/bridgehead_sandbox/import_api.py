"""The Import Set API, ``/api/now[/v1|/v2]/import/{staging_table}`` (SERVICENOW_API.md §3).

POST .../{staging}                  one row, transformed at once; 201 with per-map results
POST .../{staging}/insertMultiple   {"records": [...]}; per ``instance.insert_multiple``:
                                    "sync"  -> 201, the single-row shape, one entry per row
                                    "async" -> 201 {"import_set_id", "multi_import_set_id"}
                                               (the rows are transformed before it answers)
                                    "unsupported" -> 400 unknown URI, as an older instance
GET  .../{staging}/{sys_id}         a staging row's result, read back
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from bridgehead_sandbox.config import TABLE_NAME
from bridgehead_sandbox.errors import bad_body, bad_request, invalid_table, no_record, unknown_uri
from bridgehead_sandbox.imports import ImportSet
from bridgehead_sandbox.records import writable_fields
from bridgehead_sandbox.responses import json_response, read_json
from bridgehead_sandbox.table_api import principal_name

if TYPE_CHECKING:
    from bridgehead_sandbox.app import Sandbox


def _staging(request: Request) -> str:
    name = str(request.path_params["table"])
    if not TABLE_NAME.match(name):
        raise invalid_table(name)
    return name


def _sync_body(result: ImportSet) -> dict[str, Any]:
    return {"import_set": result.number, "staging_table": result.staging_table, "result": result.results}


class ImportApi:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def _json(self, request: Request) -> Any:
        limits = self.sandbox.config.limits
        return await read_json(request, limits.max_body_bytes, limits.oversize_status)

    async def insert(self, request: Request) -> Response:
        staging = _staging(request)
        body = await self._json(request)
        if not isinstance(body, dict):
            raise bad_body("The payload must be a JSON object of staging column names and values.")
        result = self.sandbox.importer.load(
            staging, [writable_fields(body)], principal_name(request), str(request.base_url), multi=False
        )
        return json_response(_sync_body(result), 201)

    async def insert_multiple(self, request: Request) -> Response:
        mode = self.sandbox.config.instance.insert_multiple
        if mode == "unsupported":
            raise unknown_uri()
        staging = _staging(request)
        body = await self._json(request)
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise bad_body('The payload must be {"records": [...]}, a list of JSON objects.')
        limit = self.sandbox.config.limits.max_insert_multiple
        if len(records) > limit:
            raise bad_request(
                "Too many records",
                f"{len(records)} records in one request; at most {limit} (limits.max_insert_multiple)",
            )
        rows = [writable_fields(r) for r in records]
        result = self.sandbox.importer.load(
            staging, rows, principal_name(request), str(request.base_url), multi=mode == "async"
        )
        if mode == "async":
            return json_response({"import_set_id": result.sys_id, "multi_import_set_id": result.multi_sys_id}, 201)
        return json_response(_sync_body(result), 201)

    async def get_row(self, request: Request) -> Response:
        staging = _staging(request)
        result = self.sandbox.importer.row_result(staging, request.path_params["sys_id"], str(request.base_url))
        if result is None:
            raise no_record()
        return json_response(_sync_body(result))
